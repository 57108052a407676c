#!/bin/bash
# DRIVE evaluation: every model scored on the 20 testing/ images against 1st_manual, inside the FOV masks.
set -e
cd /work/study/translate
D=/work/shared/data/drive
export OMP_NUM_THREADS=1
run() { name=$1; shift; rm -rf "$name"; synthmed translate "$@" --out "$name" --training-scale --device cpu -q > "$name.log" 2>&1; tail -8 "$name.log"; }
case "$1" in
  mask2retina) run eval_mask2retina drive_mask2retina256 $D/testing/1st_manual --compare $D/testing/images ;;
  pix2pix_seg) run eval_pix2pix_seg drive_retina2vessel $D/testing/images --compare $D/testing/1st_manual --fov $D/testing/mask ;;
  seg_real) run eval_seg_real seg_real $D/testing/images --compare $D/testing/1st_manual --fov $D/testing/mask ;;
  seg_syn) run eval_seg_syn seg_syn $D/testing/images --compare $D/testing/1st_manual --fov $D/testing/mask ;;
  second_observer) ;;
esac
