#!/bin/bash
# After the mask->retina run finishes: synthetic retinas from the 20 TRAINING vessel masks, then the same U-Net
# segmenter as seg_real trained on them (synthetic retina -> the real mask it was made from).
cd /work/study/translate
D=/work/shared/data/drive
while pgrep -f "resume /work/study/translate/drive_mask2retina256" >/dev/null; do sleep 10; done
rm -rf syn_retinas
OMP_NUM_THREADS=1 synthmed translate drive_mask2retina256 $D/training/1st_manual --out syn_retinas --training-scale --device cpu -q > syn_retinas.log 2>&1
synthmed train --data syn_retinas --target $D/training/1st_manual --fov $D/training/mask --split all --size 512 --recipe pix2pix --adversarial-weight 0 --crop 128 --base-channels 32 --batch-size 4 --steps 600 --max-minutes 40 --threads 1 --out /work/study/translate/seg_syn --sample-every 200 --checkpoint-every 200 -q > ssyn.log 2>&1
