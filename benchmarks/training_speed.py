"""Training throughput of synthmed's step against a plain PyTorch loop, with FLOPs, MFU and a profile.

    python benchmarks/training_speed.py                           # all configs, about 5-6 minutes on 2 cores
    python benchmarks/training_speed.py --configs dcgan64 --repeats 5
    python benchmarks/training_speed.py --experiments none        # only the synthmed-vs-plain comparison
    python benchmarks/training_speed.py --experiments compile     # add the (slow to compile) torch.compile variant
    python benchmarks/training_speed.py --experiments conditional # class-conditional recipes vs the unconditional step
    python benchmarks/training_speed.py --configs dcgan28 --experiments minibatch_std --profile none \
        --out benchmarks/results/training_speed_cpu_minibatch_std.json  # what -o minibatch_std=4 costs a 28-px step
    python benchmarks/training_speed.py --configs pix2pix128,pix2pix256b1,pix2pix256b8,cyclegan128 \
        --experiments none --seconds 120 --max-minutes 30 \
        --out benchmarks/results/training_speed_cpu_translation.json  # about 10-13 minutes on 2 cores
    python benchmarks/training_speed.py --configs unet128,segan128,pix2pixseg128 --experiments none --profile none \
        --seconds 120 --max-minutes 40 --out benchmarks/results/training_speed_cpu_segmentation.json

Everything is measured in ONE process and every speed is reported as a ratio against a reference timed in the
same run: timings on the shared 2-core machines vary +-30% between runs.

1. Dense GEMM peak: best of a few 2048x2048 fp32 matmuls (GFLOP/s), at the start and at the end; the higher is
   the MFU denominator.
2. Per config (DCGAN 28 px = the default recipe, DCGAN 64 px with 64 channels, WGAN-GP 64 px with 32 channels;
   batch 64, one grey channel, random images in [-1, 1] held in memory: pixel values do not change fp32 speed):
   * ``synthmed``: the real recipe (``build_recipe("unconditional", ...)``, EMA 0.999), moved as the trainer moves
     it (channels_last when the recipe prefers it), its optimisers, a ``StepContext``, the set's batch stream
     (``ImageDataset.batches``), ``update_ema`` after every step and the trainer's loss buffering (one host read
     every 25 steps and at the end of each timed block; no other sync).
   * ``plain``: the same networks (synthmed.nn classes, same sizes) trained the way the PyTorch DCGAN tutorial
     writes it: DataLoader over a TensorDataset (shuffle, drop_last, no workers), NCHW, BCEWithLogitsLoss,
     errD_real.backward() + errD_fake.backward(), one G forward reused for the G step with D's parameters still
     requiring grad, torch.optim.Adam with its default implementation, ``.item()`` of the losses every step, no
     EMA. WGAN-GP: Gulrajani et al.'s Algorithm 1 with an ``autograd.grad`` penalty, written the same way.
   * ``monai``: ``monai.engines.GanTrainer`` (MONAI's own loop) with MONAI's Generator/Discriminator at the same
     widths (3x3 kernels: MONAI rejects 4x4), only if MONAI and pytorch-ignite import; compare its MFU.
   * experiments (``--experiments``): variants of the synthmed step that support the diagnosis (NCHW instead of
     channels_last, bf16 autocast, one thread, the native 7-14-28 layout, PyTorch's kernels instead of the
     GEMM-lowered layers, GEMMs instead of Winograd, torch.compile), the class-conditional recipes (conditional,
     acgan, cwgan-gp with 10 random classes) against the unconditional step of the same config, and the default
     recipe with ``-o minibatch_std=4``.
   Translation configs (``pix2pix128``, ``pix2pix256b1``, ``pix2pix256b8``, ``cyclegan128``; not in the default
   --configs, each has its own batch size; ngf = ndf = 64, the papers' widths; grey 1 -> 1 channel pairs):
   * ``synthmed``: the pix2pix / CycleGAN recipe's ``train_step`` through a ``StepContext`` as the trainer runs it
     (channels_last when the recipe prefers it, synthmed.ops CPU kernels, the recipe's jitter and mirroring on the
     batch, the paired set's / unpaired set's batch stream, losses read every 25 steps).
   * ``plain``: the same networks (the synthmed.nn.translation builders with the recipe's resolved options, the same
     initial weights: ``same_initial_weights`` in the JSON) trained as junyanz/pytorch-CycleGAN-and-pix2pix trains
     them: a DataLoader (no workers) whose Dataset resizes, crops and mirrors each sample, NCHW, PyTorch's kernels,
     ``optimize_parameters`` of ``pix2pix_model.py`` / ``cycle_gan_model.py`` line by line (forward,
     set_requires_grad, backward_D with 0.5 * (fake + real), backward_G: GAN + 100 L1, or GAN + 10 cycle + 5
     identity), ``networks.GANLoss``, ``util/image_pool.py``'s pool of 50 (python ``random``), default Adam, losses
     read every 100 images (``print_freq``).
   * experiments: ``nchw`` and ``gemm_conv`` also run on these configs.
   Segmentation configs (``unet128``, ``segan128``, ``pix2pixseg128``; not in the default --configs; batch --batch;
   128 px, 3-channel random images in [-1, 1] (LGG-like) -> random binary masks; U-Net segmentor depth 5 with
   base_channels 32, SegAN critic d_base_channels 32, pix2pix-seg PatchGAN ndf 64; the recipes' defaults otherwise):
   * ``synthmed``: the unet / segan / pix2pix-seg recipe's ``train_step`` through a ``StepContext`` as above
     (channels_last, synthmed.ops CPU kernels, random mirroring on the batch, losses read every 25 steps).
   * ``plain``: the same networks (``build_segmentor``, ``SegANCritic``, the PatchGAN; the same initial weights)
     trained as reference scripts write it, NCHW, fp32, PyTorch's kernels, a DataLoader mirroring per sample,
     default Adam: U-Net: forward, BCE + soft Dice, zero_grad / backward / step, ``.item()`` every step; SegAN (the
     authors' train.py, one S forward): C on image*sigmoid(S(x)).detach() and image*truth, -multi-scale L1, Adam
     step, C clamped to +-0.05, then S on multi-scale L1 (C's grads on, truth features recomputed) + Dice, Adam
     step; pix2pix-seg: junyanz's pix2pix ``optimize_parameters`` with GAN + 100 (BCE + Dice).
   Runners of a config are timed in interleaved blocks (A B C A B C ...) after warm-up; the figure is the median.
3. Model FLOPs of one training step (``torch.utils.flop_counter.FlopCounterMode`` over one real step on PyTorch's
   convolution kernels: every forward, backward and double backward; convolutions and matrix products; a layer
   that synthmed computes by Winograd counts as the convolution it is), cross-checked by a hand count of the DCGAN
   64 generator's forward pass; MFU = FLOPs/step * steps/s / GEMM peak.
4. ``torch.profiler`` of the synthmed DCGAN 64 step (and of the plain one, for comparison): top ops by self CPU
   time with their share, grouped into convolution / batch norm / optimiser / ... and the unattributed rest.

Writes benchmarks/results/training_speed_<device>.json (``training_speed_cpu.json`` on CPU) and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import random
import statistics
import sys
import time
import types
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from _common import ROOT, PeakMemory, gemm_peak, load_average, machine, source_state, sync
from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.nn.dcgan import DCGANDiscriminator, DCGANGenerator
from synthmed.ops.cpu_conv import native_convolutions, without_winograd
from synthmed.recipes import build_recipe, get_recipe
from synthmed.recipes.step import StepContext, frozen
from synthmed.training.ema import ema_beta, update_ema

RESULTS = ROOT / "benchmarks" / "results"
BATCH = 64
EMA_BETA = 0.999
LOG_EVERY = 25  # the trainer's default: buffered losses are read from the device every 25 steps

CONFIGS: dict[str, dict[str, Any]] = {
    "dcgan28": {
        "label": "DCGAN 28 px (default recipe, g/d 32 ch)",
        # DiffAugment off: the plain reference step has none (the default recipe adds translation since issue 16)
        "size": 28, "options": {"diffaugment": ""}, "plain": "dcgan", "channels": 32,
    },
    "dcgan64": {
        "label": "DCGAN 64 px (g/d 64 ch, the tutorial's network)",
        # LeCam off: the plain reference has none (bce adds it from 64 px since issue 16's sixth session)
        "size": 64, "options": {"g_channels": 64, "d_channels": 64, "lecam": 0.0}, "plain": "dcgan", "channels": 64,
    },
    "wgangp64": {
        "label": "WGAN-GP 64 px (g/d 32 ch, n_critic 5, layer-norm critic)",
        "size": 64, "options": {"loss": "wgan-gp", "g_channels": 32, "d_channels": 32}, "plain": "wgan-gp",
        "channels": 32,
    },
    # Image-to-image translation (synthmed/recipes/translation.py) at the papers' widths (ngf = ndf = 64) and their
    # defaults otherwise: grey 1 -> 1 channel images, random in [-1, 1]; "batch" replaces --batch for these.
    "pix2pix128": {
        "label": "pix2pix 128 px (U-Net depth 7 = unet128, 70x70 PatchGAN, batch norm, dropout 0.5, ngf/ndf 64, "
                 "1 -> 1 ch), batch 8",
        "kind": "translation", "recipe": "pix2pix", "size": 128, "batch": 8, "channels": (1, 1),
        "options": {"generator": "unet", "base_channels": 64, "d_base_channels": 64},
    },
    "pix2pix256b1": {
        "label": "pix2pix 256 px (U-Net depth 8 = unet256, 70x70 PatchGAN, batch norm, dropout 0.5, ngf/ndf 64, "
                 "1 -> 1 ch), batch 1 (the paper's)",
        "kind": "translation", "recipe": "pix2pix", "size": 256, "batch": 1, "channels": (1, 1),
        "options": {"generator": "unet", "base_channels": 64, "d_base_channels": 64},
    },
    "pix2pix256b8": {
        "label": "pix2pix 256 px (U-Net depth 8 = unet256, 70x70 PatchGAN, batch norm, dropout 0.5, ngf/ndf 64, "
                 "1 -> 1 ch), batch 8",
        "kind": "translation", "recipe": "pix2pix", "size": 256, "batch": 8, "channels": (1, 1),
        "options": {"generator": "unet", "base_channels": 64, "d_base_channels": 64},
    },
    "cyclegan128": {
        "label": "CycleGAN 128 px (2 x resnet6, 2 x 70x70 PatchGAN, instance norm, LSGAN, cycle 10, identity 5, "
                 "pools of 50, ngf/ndf 64, 1 <-> 1 ch), batch 1 (the paper's)",
        "kind": "translation", "recipe": "cyclegan", "size": 128, "batch": 1, "channels": (1, 1),
        "options": {"generator": "resnet6", "base_channels": 64, "d_base_channels": 64},
    },
    # Segmentation (synthmed/recipes/segmentation.py): 3-channel images (LGG-like FLAIR/pre/post) -> binary masks,
    # the U-Net segmentor at depth 5 (the default at 128 px: a 4x4 bottleneck) with base_channels 32 (the recipes'
    # default); batch: --batch (no "batch" key). The recipes' defaults otherwise (flip on, no crop or jitter).
    "unet128": {
        "label": "U-Net segmentation 128 px (depth 5, 32 ch, batch norm), BCE + soft Dice, 3 -> 1 ch binary mask",
        "kind": "segmentation", "recipe": "unet", "size": 128, "channels": (3, 1),
        "options": {"base_channels": 32},
    },
    "segan128": {
        "label": "SegAN 128 px (U-Net depth 5, 32 ch; critic depth 5, 32 ch, clip 0.05), multi-scale L1 + Dice, "
                 "3 -> 1 ch binary mask",
        "kind": "segmentation", "recipe": "segan", "size": 128, "channels": (3, 1),
        "options": {"base_channels": 32, "d_base_channels": 32},
    },
    "pix2pixseg128": {
        "label": "pix2pix-seg 128 px (U-Net depth 5, 32 ch; 70x70 PatchGAN ndf 64), GAN + 100 (BCE + Dice), "
                 "3 -> 1 ch binary mask",
        "kind": "segmentation", "recipe": "pix2pix-seg", "size": 128, "channels": (3, 1),
        "options": {"base_channels": 32, "d_base_channels": 64},
    },
}
TRANSLATION_CONFIGS = [name for name, cfg in CONFIGS.items() if cfg.get("kind") == "translation"]
SEGMENTATION_CONFIGS = [name for name, cfg in CONFIGS.items() if cfg.get("kind") == "segmentation"]
SEGMENTATION_FOREGROUND = 0.1  # share of mask pixels set to 1 in the random masks (LGG tumours are small)
TRANSLATION_IMAGES = 4  # random training pairs held per config: 4 batches (an epoch of the sampler / DataLoader)
# The conditional experiment's runners per DCGAN config: (runner name, description, recipe, recipe options).
CONDITIONAL_RUNNERS = [
    ("conditional_cbn_bce", "recipe conditional: cBN generator, projection D, loss bce (as the config)", "conditional",
     {"loss": "bce"}),
    ("conditional_concat_bce", "recipe conditional: label embedding concatenated to z, projection D, loss bce",
     "conditional", {"loss": "bce", "conditioning": "concat"}),
    ("acgan", "recipe acgan: concatenated embedding, D with an auxiliary classifier (BCE + CE)", "acgan", {}),
    ("conditional_default", "recipe conditional with its defaults: cBN, hinge, spectral norm on D", "conditional", {}),
]
CONDITIONAL_CLASSES = 10
# Experiments: (config, name, description, synthmed-runner overrides)
EXPERIMENTS: dict[str, list[tuple[str, str, str, dict[str, Any]]]] = {
    "nchw": [
        ("dcgan28", "synthmed_nchw", "synthmed step with channels_last=False (NCHW)", {"channels_last": False}),
        ("dcgan64", "synthmed_nchw", "synthmed step with channels_last=False (NCHW)", {"channels_last": False}),
        ("wgangp64", "synthmed_nchw", "synthmed step with channels_last=False (NCHW)", {"channels_last": False}),
        *[(c, "synthmed_nchw", "synthmed step with channels_last=False (NCHW)", {"channels_last": False})
          for c in (*TRANSLATION_CONFIGS, *SEGMENTATION_CONFIGS)],
    ],
    "bf16": [("dcgan64", "synthmed_bf16", "synthmed step with precision='bf16' (autocast)", {"precision": "bf16"})],
    "threads1": [("dcgan28", "synthmed_1thread", "synthmed step with torch.set_num_threads(1)", {"threads": 1})],
    # The other 28 px layout than the recipe's default: pad_to=28 (7-14-28) <-> pad_to=32 (4-8-16-32). Not the
    # same network: the 28 px layout has one up/down-sampling stage fewer (see its flops_per_step).
    "layout": [("dcgan28", "", "", {"layout_toggle": True})],
    "fusedadam": [("dcgan64", "synthmed_fusedadam", "synthmed step with Adam(fused=True) instead of foreach",
                   {"fused_adam": True})],
    # One G forward per step (reused by the G step) vs two: whichever the recipe does not do is the experiment.
    "reuse": [(c, "", "", {"reuse_toggle": True}) for c in ("dcgan28", "dcgan64")],
    # synthmed.ops.cpu_conv lowers the image-side, latent and 4x4-input layers to GEMM; this runs oneDNN everywhere.
    "gemm_conv": [(c, "synthmed_native_conv", "synthmed step with PyTorch's own convolution kernels everywhere "
                   "(synthmed.ops.cpu_conv.native_convolutions)", {"native_conv": True})
                  for c in ("dcgan28", "dcgan64", "wgangp64", *TRANSLATION_CONFIGS, *SEGMENTATION_CONFIGS)],
    # Winograd F(2x2)/F(4x4) on the 4x4 stride-2 layers of small maps (synthmed.ops.winograd); this runs them without.
    "winograd": [(c, "synthmed_no_winograd", "synthmed step without Winograd: the stride-2 layers of <= 16x16 maps on "
                  "the GEMM route or oneDNN as before (synthmed.ops.cpu_conv.without_winograd)", {"no_winograd": True})
                 for c in ("dcgan64", "wgangp64")],
    # ProGAN's minibatch standard deviation before D's last conv (an option of the default recipe, off): its cost.
    "minibatch_std": [("dcgan28", "synthmed_minibatch_std4", "synthmed step with -o minibatch_std=4 (groups of 4)",
                       {"options": {"minibatch_std": 4}})],
    "compile": [(c, "synthmed_compile", "synthmed step with torch.compile'd G and D forwards", {"compile": True})
                for c in ("dcgan28", "dcgan64")],
    # Class-conditional recipes (synthmed/recipes/conditional.py) against the unconditional step of the same config
    # (paired_ratio_vs_synthmed): what the label costs (embeddings, conditional batch norm, projection or classifier
    # head). The *_bce runners keep the config's loss, BatchNorm D and no spectral norm, so only the conditioning
    # differs; "conditional_default" is the recipe's default (hinge + spectral norm, cBN). Labels: 10 classes.
    "conditional": [
        *[(c, rname, desc, {"recipe_name": recipe, "options": options})
          for c in ("dcgan28", "dcgan64")
          for rname, desc, recipe, options in CONDITIONAL_RUNNERS],
        ("wgangp64", "cwgan_gp", "recipe cwgan-gp: z times a label embedding, layer-norm critic with a projection "
         "term, n_critic 5", {"recipe_name": "cwgan-gp", "options": {}}),
    ],
}
DEFAULT_EXPERIMENTS = "nchw,bf16,threads1,layout,reuse,gemm_conv,winograd"


# --- 1. GEMM peak --------------------------------------------------------------------------------------------
# --- 2. runners ------------------------------------------------------------------------------------------------
@dataclass
class Runner:
    """One way of training a config: ``step()`` does one training step, ``finish()`` flushes/syncs."""

    name: str
    description: str
    step: Callable[[], None]
    finish: Callable[[], None]
    device: torch.device
    threads: int | None = None
    networks: dict[str, nn.Module] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``; ``_common.machine`` records the architecture only)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        return None


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=gen) * 2 - 1


def make_synthmed(cfg: dict[str, Any], device: torch.device, images: torch.Tensor, name: str = "synthmed",
                  description: str = "synthmed recipe + StepContext + batch stream + EMA, as the trainer runs it",
                  channels_last: bool | None = None, precision: str = "fp32", options: dict[str, Any] | None = None,
                  threads: int | None = None, fused_adam: bool = False, compile: bool = False,
                  patch: str | None = None, native_conv: bool = False, no_winograd: bool = False,
                  recipe_name: str = "unconditional") -> Runner:
    size = cfg["size"]
    conditional = recipe_name != "unconditional"
    # Conditional recipes get random labels; the unconditional step gathers no label tensor, as before.
    info = DataInfo(source="random", channels=1, height=size, width=size, split="train",
                    num_classes=CONDITIONAL_CLASSES if conditional else 0)
    labels = torch.randint(0, CONDITIONAL_CLASSES, (images.shape[0],),
                           generator=torch.Generator().manual_seed(1)) if conditional else None
    torch.manual_seed(0)
    fields = {f.name for f in dataclasses.fields(get_recipe(recipe_name).Config)}
    base = {k: v for k, v in cfg["options"].items() if k in fields}  # e.g. no loss= for cwgan-gp
    recipe = build_recipe(recipe_name, {**base, **(options or {})}, info, ema_beta=EMA_BETA)
    cl = recipe.prefers_channels_last if channels_last is None else channels_last
    recipe.to(device, channels_last=cl)
    data = recipe.prepare_data(ImageDataset(images=images.clone(), info=info, labels=labels))
    if cl:
        data = data.map_tensors(lambda _, x: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
    data = data.to(device)
    optimizers = recipe.configure_optimizers()
    if fused_adam:
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["foreach"], group["fused"] = False, True
            opt.defaults["foreach"], opt.defaults["fused"] = False, True
    patches = set((patch or "").split("+")) - {""}
    if "reuse_fake" in patches:
        recipe.train_step = types.MethodType(_reuse_fake_step, recipe)  # type: ignore[method-assign]
    if "two_g_forwards" in patches:
        recipe.train_step = types.MethodType(_two_g_forwards_step, recipe)  # type: ignore[method-assign]
    if compile:
        for key in ("G", "D"):
            recipe.networks[key].forward = torch.compile(recipe.networks[key].forward)  # type: ignore[method-assign]
    stream = data.batches(BATCH, seed=0)
    ctx = StepContext(device=device, optimizers=optimizers, precision=precision, draw_batch=stream.next)
    ema_pairs = [(recipe.networks[s], recipe.networks[e]) for s, e in recipe.ema_pairs()]
    state = {"step": 0}
    pending: list[dict[str, torch.Tensor]] = []

    def flush() -> None:
        if pending:
            flat = torch.cat([torch.stack([v.float().reshape(()) for v in vals.values()]) for vals in pending])
            flat.tolist()
            pending.clear()

    def step() -> None:
        with native_convolutions() if native_conv else without_winograd() if no_winograd else nullcontext():
            train_one()

    def train_one() -> None:
        s = state["step"]
        ctx.step = s
        losses = recipe.train_step(stream.next(), ctx)
        for source, shadow in ema_pairs:
            update_ema(shadow, source, ema_beta(s, EMA_BETA))
        state["step"] = s + 1
        pending.append(losses)
        if state["step"] % LOG_EVERY == 0:
            flush()

    def finish() -> None:
        flush()
        sync(device)

    return Runner(name, description, step, finish, device, threads,
                  networks={"G": recipe.networks["G"], "D": recipe.networks["D"]},
                  extra={"channels_last": cl, "precision": precision, "recipe": recipe,
                         "own_flops": name == "synthmed" or bool(options) or conditional
                         or bool(patches & {"reuse_fake", "two_g_forwards"}),
                         "train_size": getattr(recipe, "train_size", size)})


def _reuse_fake_step(self: Any, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
    """The recipe's BCE step (n_critic 1, no augmentation/penalties) with one G forward instead of two."""
    G, D = self.networks["G"], self.networks["D"]
    real = batch["image"]
    z = torch.randn(real.shape[0], self.latent_dim, device=real.device)
    fake = G(z)  # kept with its graph: the G step below backpropagates through it
    real_logits = D(real)
    fake_logits = D(fake.detach())
    loss_d = self._d_loss(real_logits.float(), fake_logits.float())
    ctx.optimize("D", loss_d)
    with frozen(D):
        loss_g = self._g_loss(D(fake).float())
        ctx.optimize("G", loss_g)
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "d_real": real_logits.detach().mean(),
            "d_fake": fake_logits.detach().mean()}


def _two_g_forwards_step(self: Any, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
    """The recipe's BCE step (n_critic 1, no augmentation/penalties) as committed before the reuse change: a no-grad
    G forward for the D step and a fresh G forward (new latents) for the G step."""
    G, D = self.networks["G"], self.networks["D"]
    real = batch["image"]
    z = torch.randn(real.shape[0], self.latent_dim, device=real.device)
    with torch.no_grad():
        fake = G(z)
    real_logits = D(real)
    fake_logits = D(fake)
    loss_d = self._d_loss(real_logits.float(), fake_logits.float())
    ctx.optimize("D", loss_d)
    with frozen(D):
        z = torch.randn(real.shape[0], self.latent_dim, device=real.device)
        loss_g = self._g_loss(D(G(z)).float())
        ctx.optimize("G", loss_g)
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "d_real": real_logits.detach().mean(),
            "d_fake": fake_logits.detach().mean()}


def g_forwards_per_step(runner: Runner) -> int:
    """How many times one training step calls G (a forward hook; the step also serves as a warm-up step)."""
    G = runner.networks["G"]
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    handle = G.register_forward_hook(hook)
    try:
        runner.step()
        runner.finish()
    finally:
        handle.remove()
    return calls[0]


def _infinite(loader: torch.utils.data.DataLoader) -> Callable[[], torch.Tensor]:
    it = iter(loader)

    def next_batch() -> torch.Tensor:
        nonlocal it
        try:
            return next(it)[0]
        except StopIteration:
            it = iter(loader)
            return next(it)[0]

    return next_batch


def make_plain(cfg: dict[str, Any], device: torch.device, images: torch.Tensor, train_size: int) -> Runner:
    """The same networks trained as the PyTorch DCGAN tutorial (or a plain WGAN-GP Algorithm 1) writes it.

    ``train_size``: the recipe's network size (28 px data padded to it when larger), so the architecture is the same.
    """
    size = cfg["size"]
    if train_size != size:
        pad = train_size - size
        images = F.pad(images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=-1.0)
    nz, ch = 100, cfg["channels"]
    wgan = cfg["plain"] == "wgan-gp"
    torch.manual_seed(0)
    netG = DCGANGenerator(latent_dim=nz, out_channels=1, image_size=train_size, base_channels=ch).to(device)
    netD = DCGANDiscriminator(in_channels=1, image_size=train_size, base_channels=ch,
                              norm="layer" if wgan else "batch").to(device)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=BATCH, shuffle=True,
                                         drop_last=True, num_workers=0)
    next_batch = _infinite(loader)

    if not wgan:
        criterion = nn.BCEWithLogitsLoss()
        optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))

        def step() -> None:
            real = next_batch().to(device)
            b = real.size(0)
            # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
            netD.zero_grad()
            label = torch.full((b,), 1.0, dtype=torch.float, device=device)
            output = netD(real).view(-1)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()  # noqa: N806,F841 (the tutorial's names)
            noise = torch.randn(b, nz, device=device)
            fake = netG(noise)
            label.fill_(0.0)
            output = netD(fake.detach()).view(-1)
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()  # noqa: N806,F841
            errD = errD_real + errD_fake
            optD.step()
            # (2) Update G: maximize log(D(G(z)))
            netG.zero_grad()
            label.fill_(1.0)
            output = netD(fake).view(-1)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()  # noqa: N806,F841
            optG.step()
            errD.item(), errG.item()

        desc = ("PyTorch DCGAN tutorial loop: DataLoader, NCHW, BCEWithLogitsLoss, two D backwards, G forward "
                "reused, D grads on in the G step, default Adam, .item() every step, no EMA")
    else:
        n_critic, lam = 5, 10.0
        optD = torch.optim.Adam(netD.parameters(), lr=1e-4, betas=(0.0, 0.9))
        optG = torch.optim.Adam(netG.parameters(), lr=1e-4, betas=(0.0, 0.9))

        def step() -> None:
            for _ in range(n_critic):
                real = next_batch().to(device)
                b = real.size(0)
                z = torch.randn(b, nz, device=device)
                with torch.no_grad():
                    fake = netG(z)
                eps = torch.rand(b, 1, 1, 1, device=device)
                x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
                d_real = netD(real).mean()
                d_fake = netD(fake).mean()
                (grad,) = torch.autograd.grad(netD(x_hat).sum(), x_hat, create_graph=True)
                gp = ((grad.view(b, -1).norm(2, dim=1) - 1) ** 2).mean()
                lossD = d_fake - d_real + lam * gp  # noqa: N806
                optD.zero_grad()
                lossD.backward()
                optD.step()
                lossD.item()
            z = torch.randn(BATCH, nz, device=device)
            lossG = -netD(netG(z)).mean()  # noqa: N806
            optG.zero_grad()
            lossG.backward()
            optG.step()
            lossG.item()

        desc = ("plain WGAN-GP Algorithm 1: DataLoader, NCHW, 5 critic iterations with autograd.grad penalty, "
                "D grads on in the G step, default Adam, .item() every iteration, no EMA")

    def native_step() -> None:
        with native_convolutions():  # plain PyTorch: oneDNN for every layer, as nn.Conv2d would
            step()

    return Runner("plain", desc, native_step, lambda: sync(device), device, networks={"G": netG, "D": netD})


def make_monai(cfg: dict[str, Any], device: torch.device, images: torch.Tensor, train_size: int) -> Runner | None:
    """MONAI's own GAN loop (``monai.engines.GanTrainer``, an ignite Engine) with MONAI's Generator/Discriminator.

    The closest MONAI pair to the DCGAN: the same widths (512-256-128-64 up, 64-128-256-512 down), batch norm,
    ReLU/LeakyReLU(0.2), no residual units, logits out (``last_act=None``), but 3x3 kernels (MONAI rejects even
    kernel sizes), a Linear latent layer and a Linear head. Not the same network: compare its MFU, not its
    steps/s. GanTrainer's loop as shipped: one G forward for the D step and a second one with fresh latents for
    the G step (``g_update_latents=True``), ``.item()`` of both losses every iteration. None without MONAI/ignite.
    """
    if cfg["plain"] != "dcgan":
        return None
    try:
        from ignite.engine import Engine
        from monai.engines import GanTrainer
        from monai.networks.nets import Discriminator, Generator
    except Exception:  # noqa: BLE001 (skip when MONAI or pytorch-ignite is missing or broken)
        return None
    size = max(32, 16 * ((train_size + 15) // 16))  # MONAI's stride-2 stacks need a multiple of 16
    if size != cfg["size"]:
        pad = size - cfg["size"]
        images = F.pad(images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=-1.0)
    ch, nz = cfg["channels"], 100
    torch.manual_seed(0)
    netG = Generator(latent_shape=(nz,), start_shape=(ch * 8, size // 16, size // 16),
                     channels=[ch * 4, ch * 2, ch, 1], strides=[2, 2, 2, 2], kernel_size=3, num_res_units=0,
                     act="RELU", norm="BATCH").to(device)
    netD = Discriminator(in_shape=(1, size, size), channels=(ch, ch * 2, ch * 4, ch * 8), strides=(2, 2, 2, 2),
                         kernel_size=3, num_res_units=0, act=("LEAKYRELU", {"negative_slope": 0.2}),
                         norm="BATCH", dropout=None, last_act=None).to(device)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=BATCH, shuffle=True,
                                         drop_last=True)
    criterion = nn.BCEWithLogitsLoss()

    def reals(batch: list[torch.Tensor], device: torch.device | None = None, non_blocking: bool = False,
              **_: Any) -> torch.Tensor:
        return batch[0].to(device, non_blocking=non_blocking)

    def d_loss(fakes: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
        real_logits, fake_logits = netD(reals), netD(fakes.detach())
        return (criterion(real_logits, torch.ones_like(real_logits))
                + criterion(fake_logits, torch.zeros_like(fake_logits))) / 2

    def g_loss(fakes: torch.Tensor) -> torch.Tensor:
        logits = netD(fakes)
        return criterion(logits, torch.ones_like(logits))

    trainer = GanTrainer(
        device=device, max_epochs=1, train_data_loader=loader, epoch_length=1,
        g_network=netG, g_optimizer=torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        g_loss_function=g_loss,
        d_network=netD, d_optimizer=torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        d_loss_function=d_loss, latent_shape=nz,
        d_prepare_batch=reals,
    )

    def run_steps(n: int) -> None:
        trainer.state.max_epochs = None  # ignite starts a fresh run (n iterations) instead of resuming a done one
        Engine.run(trainer, loader, max_epochs=1, epoch_length=n)

    return Runner("monai", "monai.engines.GanTrainer (ignite) with MONAI Generator/Discriminator, 3x3 kernels, "
                  "batch norm, logits; GanTrainer's own loop (two G forwards per step, .item() every step)",
                  lambda: run_steps(1), lambda: sync(device), device, networks={"G": netG, "D": netD},
                  extra={"run_steps": run_steps, "not_same_network": True})


# --- 2b. translation runners (pix2pix, CycleGAN) ----------------------------------------------------------------
def _translation_info(cfg: dict[str, Any]) -> DataInfo:
    c_in, c_out = cfg["channels"]
    if cfg.get("kind") == "segmentation":  # image -> binary mask pairs
        return DataInfo(source="random", channels=c_in, height=cfg["size"], width=cfg["size"], split="train",
                        kind="paired", target_channels=c_out, target_names=("mask",), target_is_mask=True,
                        mask_classes=2)
    return DataInfo(source="random", channels=c_in, height=cfg["size"], width=cfg["size"], split="train",
                    kind="paired" if cfg["recipe"] == "pix2pix" else "unpaired", target_channels=c_out)


def config_batch(cfg: dict[str, Any]) -> int:
    """A config's batch size: its own (translation configs) or --batch."""
    return int(cfg.get("batch", BATCH))


def translation_data(cfg: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random domain A and domain B images in [-1, 1], ``TRANSLATION_IMAGES`` x batch of each, held in memory;
    segmentation configs: B is a {0, 1} mask (``SEGMENTATION_FOREGROUND`` of its pixels foreground)."""
    n, size = TRANSLATION_IMAGES * config_batch(cfg), cfg["size"]
    c_in, c_out = cfg["channels"]
    a = torch.rand(n, c_in, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    b = torch.rand(n, c_out, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    if cfg.get("kind") == "segmentation":
        b = (b > 1 - 2 * SEGMENTATION_FOREGROUND).float()
    return a, b


def make_translation_synthmed(cfg: dict[str, Any], device: torch.device, name: str = "synthmed",
                              description: str = "synthmed recipe + StepContext + batch stream, as the trainer runs "
                                                 "it (channels_last, synthmed.ops CPU kernels, jitter and mirroring "
                                                 "on the batch, losses read every 25 steps)",
                              channels_last: bool | None = None, precision: str = "fp32", threads: int | None = None,
                              native_conv: bool = False, no_winograd: bool = False) -> Runner:
    """The pix2pix / CycleGAN (or segmentation) recipe's ``train_step`` as ``synthmed train`` runs it (see
    :func:`make_synthmed`)."""
    from synthmed.data.sets import TensorSet, UnpairedSet

    info = _translation_info(cfg)
    a, b = translation_data(cfg)
    torch.manual_seed(0)
    recipe = build_recipe(cfg["recipe"], dict(cfg["options"]), info, ema_beta=EMA_BETA)
    cl = recipe.prefers_channels_last if channels_last is None else channels_last
    recipe.to(device, channels_last=cl)
    if info.kind == "paired":
        data: Any = TensorSet({"image": a, "target": b}, info, kind="paired")
    else:
        data = UnpairedSet(TensorSet({"image": a}, info, kind="unpaired"),
                           TensorSet({"target": b}, info, kind="unpaired"), info)
    data = recipe.prepare_data(data)
    if cl:
        data = data.map_tensors(lambda _, x: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
    data = data.to(device)
    optimizers = recipe.configure_optimizers()
    stream = data.batches(config_batch(cfg), seed=0)
    ctx = StepContext(device=device, optimizers=optimizers, precision=precision, draw_batch=stream.next)
    ema_pairs = [(recipe.networks[s], recipe.networks[e]) for s, e in recipe.ema_pairs()]  # none: no EMA sources
    state = {"step": 0}
    pending: list[dict[str, torch.Tensor]] = []

    def flush() -> None:
        if pending:
            torch.cat([torch.stack([v.float().reshape(()) for v in vals.values()]) for vals in pending]).tolist()
            pending.clear()

    def train_one() -> None:
        s = state["step"]
        ctx.step = s
        losses = recipe.train_step(stream.next(), ctx)
        for source, shadow in ema_pairs:
            update_ema(shadow, source, ema_beta(s, EMA_BETA))
        state["step"] = s + 1
        pending.append(losses)
        if state["step"] % LOG_EVERY == 0:
            flush()

    def step() -> None:
        with native_convolutions() if native_conv else without_winograd() if no_winograd else nullcontext():
            train_one()

    def finish() -> None:
        flush()
        sync(device)

    return Runner(name, description, step, finish, device, threads, networks=dict(recipe.networks.items()),
                  extra={"channels_last": cl, "precision": precision, "recipe": recipe, "own_flops": name == "synthmed",
                         "train_size": cfg["size"], "options": dataclasses.asdict(recipe.config)})


class _ReferenceGANLoss(nn.Module):
    """``networks.GANLoss`` of the reference: label buffers expanded to the prediction, BCE-with-logits or MSE."""

    def __init__(self, gan_mode: str, target_real_label: float = 1.0, target_fake_label: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("real_label", torch.tensor(target_real_label))
        self.register_buffer("fake_label", torch.tensor(target_fake_label))
        self.loss = nn.MSELoss() if gan_mode == "lsgan" else nn.BCEWithLogitsLoss()

    def __call__(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:  # type: ignore[override]
        target = self.real_label if target_is_real else self.fake_label
        return self.loss(prediction, target.expand_as(prediction))


class _ReferenceImagePool:
    """``util/image_pool.py`` of the reference: a list of past fakes, python ``random`` for the 50/50 swap."""

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size
        self.num_imgs = 0
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool_size == 0:
            return images
        return_images = []
        for image in images:
            image = torch.unsqueeze(image.data, 0)
            if self.num_imgs < self.pool_size:
                self.num_imgs = self.num_imgs + 1
                self.images.append(image)
                return_images.append(image)
            elif random.uniform(0, 1) > 0.5:
                random_id = random.randint(0, self.pool_size - 1)
                tmp = self.images[random_id].clone()
                self.images[random_id] = image
                return_images.append(tmp)
            else:
                return_images.append(image)
        return torch.cat(return_images, 0)


def _set_requires_grad(nets: list[nn.Module], requires_grad: bool) -> None:
    """``BaseModel.set_requires_grad`` of the reference."""
    for net in nets:
        for param in net.parameters():
            param.requires_grad = requires_grad


class _ReferenceTranslationData(torch.utils.data.Dataset):
    """The reference's aligned / unaligned dataset on tensors held in memory: per sample, resize to the load size
    (``round(size * jitter)``, 143 / 286 px), a random crop back to ``size`` and a random left-right flip
    (python ``random``, as its ``get_params``); aligned: the same geometry for A and B; unaligned: B drawn at a
    random index (``serial_batches`` off) and transformed on its own. Bilinear, as the recipe (the reference resizes
    decoded PIL images bicubically)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, load: int, aligned: bool) -> None:
        self.a, self.b, self.load, self.aligned = a, b, load, aligned

    def __len__(self) -> int:
        return len(self.a)

    def _params(self, size: int) -> tuple[int, int, bool]:
        x = random.randint(0, max(0, self.load - size))
        y = random.randint(0, max(0, self.load - size))
        return x, y, random.random() > 0.5

    def _transform(self, image: torch.Tensor, params: tuple[int, int, bool]) -> torch.Tensor:
        size = image.shape[-1]
        x, y, flip = params
        image = F.interpolate(image[None], size=(self.load, self.load), mode="bilinear", align_corners=False)[0]
        image = image[:, y:y + size, x:x + size]
        return image.flip(-1) if flip else image

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        a = self.a[index]
        if self.aligned:
            params = self._params(a.shape[-1])
            return {"A": self._transform(a, params), "B": self._transform(self.b[index], params)}
        b = self.b[random.randint(0, len(self.b) - 1)]
        return {"A": self._transform(a, self._params(a.shape[-1])), "B": self._transform(b, self._params(b.shape[-1]))}


def make_translation_plain(cfg: dict[str, Any], device: torch.device, options: dict[str, Any]) -> Runner:
    """The same networks (synthmed.nn.translation builders, the recipe's resolved options, the same initial weights)
    trained as junyanz/pytorch-CycleGAN-and-pix2pix trains them: its DataLoader of per-sample jitter, NCHW, PyTorch's
    convolution kernels, ``optimize_parameters`` of ``pix2pix_model.py`` / ``cycle_gan_model.py`` line by line,
    ``networks.GANLoss``, ``torch.optim.Adam`` with its default implementation, losses read every ``print_freq``
    (100) images."""
    from synthmed.nn.translation import build_patch_discriminator, build_translation_generator

    o, size, batch = options, cfg["size"], cfg["batch"]
    c_in, c_out = cfg["channels"]

    def generator(i: int, j: int) -> nn.Module:
        return build_translation_generator(o["generator"], i, j, image_size=size, base_channels=o["base_channels"],
                                           norm=o["norm"], dropout=o["dropout"]).to(device)

    def discriminator(i: int) -> nn.Module:
        net = build_patch_discriminator(o["discriminator"], i, base_channels=o["d_base_channels"],
                                        n_layers=o["d_layers"], norm=o["d_norm"], num_scales=o["num_scales"])
        return net.to(device)

    a, b = translation_data(cfg)
    load = max(size, round(size * o["jitter"]))
    loader = torch.utils.data.DataLoader(_ReferenceTranslationData(a, b, load, aligned=cfg["recipe"] == "pix2pix"),
                                         batch_size=batch, shuffle=True, num_workers=0)
    batches = iter(loader)

    def next_batch() -> dict[str, torch.Tensor]:
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = iter(loader)
            return next(batches)

    criterion_gan = _ReferenceGANLoss(o["loss"]).to(device)
    criterion_l1 = torch.nn.L1Loss()
    betas = (o["betas"][0], o["betas"][1])
    counter = {"total_iters": 0}
    current: dict[str, torch.Tensor] = {}

    def read_losses() -> None:
        # train.py: ``if total_iters % opt.print_freq == 0: losses = model.get_current_losses()`` (float() each)
        counter["total_iters"] += batch
        if counter["total_iters"] % 100 == 0:
            [float(v) for v in current.values()]

    torch.manual_seed(0)  # the recipe's construction order: the same initial weights
    if cfg["recipe"] == "pix2pix":
        netG = generator(c_in, c_out)
        netD = discriminator(c_in + c_out)
        optimizer_G = torch.optim.Adam(netG.parameters(), lr=o["lr"], betas=betas)
        optimizer_D = torch.optim.Adam(netD.parameters(), lr=o["lr"], betas=betas)
        lambda_l1 = o["l1_weight"]
        networks = {"G": netG, "D": netD}

        def step() -> None:
            data = next_batch()
            real_A, real_B = data["A"].to(device), data["B"].to(device)  # noqa: N806 (the reference's names)
            fake_B = netG(real_A)  # noqa: N806
            _set_requires_grad([netD], True)
            optimizer_D.zero_grad()
            fake_AB = torch.cat((real_A, fake_B), 1)  # noqa: N806 (pool_size 0: query returns its input)
            pred_fake = netD(fake_AB.detach())
            loss_D_fake = criterion_gan(pred_fake, False)  # noqa: N806
            real_AB = torch.cat((real_A, real_B), 1)  # noqa: N806
            pred_real = netD(real_AB)
            loss_D_real = criterion_gan(pred_real, True)  # noqa: N806
            loss_D = (loss_D_fake + loss_D_real) * 0.5  # noqa: N806
            loss_D.backward()
            optimizer_D.step()
            _set_requires_grad([netD], False)
            optimizer_G.zero_grad()
            fake_AB = torch.cat((real_A, fake_B), 1)  # noqa: N806
            pred_fake = netD(fake_AB)
            loss_G_GAN = criterion_gan(pred_fake, True)  # noqa: N806
            loss_G_L1 = criterion_l1(fake_B, real_B) * lambda_l1  # noqa: N806
            loss_G = loss_G_GAN + loss_G_L1  # noqa: N806
            loss_G.backward()
            optimizer_G.step()
            current.update(G_GAN=loss_G_GAN, G_L1=loss_G_L1, D_real=loss_D_real, D_fake=loss_D_fake)
            read_losses()

        desc = ("junyanz pix2pix_model.optimize_parameters: DataLoader with per-sample resize-crop-flip, NCHW, "
                "PyTorch kernels, D grads toggled by set_requires_grad, D loss 0.5*(fake+real), GAN + 100*L1, "
                "default Adam, losses read every 100 images")
    else:
        # Reference names: netG_A = G_AB, netG_B = G_BA, netD_A judges domain B (synthmed's D_B), netD_B domain A.
        netG_A = generator(c_in, c_out)  # noqa: N806
        netG_B = generator(c_out, c_in)  # noqa: N806
        netD_B = discriminator(c_in)  # noqa: N806 (built in the recipe's order: D_A (domain A) first)
        netD_A = discriminator(c_out)  # noqa: N806
        optimizer_G = torch.optim.Adam(itertools.chain(netG_A.parameters(), netG_B.parameters()), lr=o["lr"],
                                       betas=betas)
        optimizer_D = torch.optim.Adam(itertools.chain(netD_A.parameters(), netD_B.parameters()), lr=o["lr"],
                                       betas=betas)
        fake_A_pool, fake_B_pool = _ReferenceImagePool(o["pool_size"]), _ReferenceImagePool(o["pool_size"])  # noqa: N806
        lambda_A = lambda_B = o["cycle_weight"]  # noqa: N806
        lambda_idt = o["identity_weight"] if c_in == c_out else 0.0
        networks = {"G_AB": netG_A, "G_BA": netG_B, "D_A": netD_B, "D_B": netD_A}

        def backward_D_basic(netD: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:  # noqa: N802,N803
            pred_real = netD(real)
            loss_D_real = criterion_gan(pred_real, True)  # noqa: N806
            pred_fake = netD(fake.detach())
            loss_D_fake = criterion_gan(pred_fake, False)  # noqa: N806
            loss_D = (loss_D_real + loss_D_fake) * 0.5  # noqa: N806
            loss_D.backward()
            return loss_D

        def step() -> None:
            data = next_batch()
            real_A, real_B = data["A"].to(device), data["B"].to(device)  # noqa: N806
            # forward()
            fake_B = netG_A(real_A)  # noqa: N806
            rec_A = netG_B(fake_B)  # noqa: N806
            fake_A = netG_B(real_B)  # noqa: N806
            rec_B = netG_A(fake_A)  # noqa: N806
            # G_A and G_B
            _set_requires_grad([netD_A, netD_B], False)
            optimizer_G.zero_grad()
            if lambda_idt > 0:
                idt_A = netG_A(real_B)  # noqa: N806
                loss_idt_A = criterion_l1(idt_A, real_B) * lambda_B * lambda_idt  # noqa: N806
                idt_B = netG_B(real_A)  # noqa: N806
                loss_idt_B = criterion_l1(idt_B, real_A) * lambda_A * lambda_idt  # noqa: N806
            else:
                loss_idt_A = loss_idt_B = torch.zeros((), device=device)  # noqa: N806
            loss_G_A = criterion_gan(netD_A(fake_B), True)  # noqa: N806
            loss_G_B = criterion_gan(netD_B(fake_A), True)  # noqa: N806
            loss_cycle_A = criterion_l1(rec_A, real_A) * lambda_A  # noqa: N806
            loss_cycle_B = criterion_l1(rec_B, real_B) * lambda_B  # noqa: N806
            loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B  # noqa: N806
            loss_G.backward()
            optimizer_G.step()
            # D_A and D_B
            _set_requires_grad([netD_A, netD_B], True)
            optimizer_D.zero_grad()
            loss_D_A = backward_D_basic(netD_A, real_B, fake_B_pool.query(fake_B))  # noqa: N806
            loss_D_B = backward_D_basic(netD_B, real_A, fake_A_pool.query(fake_A))  # noqa: N806
            optimizer_D.step()
            current.update(D_A=loss_D_A, G_A=loss_G_A, cycle_A=loss_cycle_A, idt_A=loss_idt_A, D_B=loss_D_B,
                           G_B=loss_G_B, cycle_B=loss_cycle_B, idt_B=loss_idt_B)
            read_losses()

        desc = ("junyanz cycle_gan_model.optimize_parameters: DataLoader with per-sample resize-crop-flip (B "
                "unaligned), NCHW, PyTorch kernels, 4 G forwards + 2 identity forwards, G step with D frozen by "
                "set_requires_grad, then backward_D_basic per domain on ImagePool(50) fakes (python random), "
                "default Adam, losses read every 100 images")

    def native_step() -> None:
        with native_convolutions():  # plain PyTorch: oneDNN for every layer, as nn.Conv2d would
            step()

    return Runner("plain", desc, native_step, lambda: sync(device), device, networks=networks)


class _ReferenceSegmentationData(_ReferenceTranslationData):
    """A reference segmentation Dataset on tensors held in memory: per sample, a random left-right flip of the
    image and its mask together (python ``random``), as the recipes' default ``flip`` (no crop, no jitter)."""

    def _transform(self, image: torch.Tensor, params: tuple[int, int, bool]) -> torch.Tensor:
        return image.flip(-1) if params[2] else image


def _reference_dice_loss(prob: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft Dice loss of a reference training script: 1 - (2 sum(p t) + eps) / (sum p + sum t + eps) over the batch."""
    intersection = (prob * target).sum()
    return 1 - (2.0 * intersection + eps) / (prob.sum() + target.sum() + eps)


def make_segmentation_plain(cfg: dict[str, Any], device: torch.device, options: dict[str, Any]) -> Runner:
    """The same networks (``build_segmentor``, ``SegANCritic`` / the PatchGAN with the recipe's resolved options,
    the same initial weights) trained as reference scripts write it: a DataLoader (no workers) whose Dataset mirrors
    each sample, NCHW, PyTorch's convolution kernels, default Adam, fp32.

    * ``unet``: forward, ``BCEWithLogitsLoss`` + soft Dice of the sigmoid, zero_grad / backward / step,
      ``loss.item()`` every step (as milesial/Pytorch-UNet's train.py).
    * ``segan``: YuanXue1993/SegAN's train.py with one S forward: C's step on ``image * sigmoid(S(x)).detach()``
      and ``image * truth`` (image in [0, 1]), loss -multi-scale L1, Adam step, every C parameter clamped to
      +-0.05; then S's step on multi-scale L1 (C forwards with C's gradients on, the truth's features recomputed
      with grad, as the reference does) + Dice; ``.item()`` of both losses every step.
    * ``pix2pix-seg``: junyanz pix2pix ``optimize_parameters`` with the mask side ``2 p - 1``: D on (image, mask)
      pairs, 0.5 * (fake + real), ``set_requires_grad``, then GAN + 100 * (BCE + Dice); losses read every 100
      images (``print_freq``).
    """
    from synthmed.nn.segmentation import SegANCritic, build_segmentor, segmentation_depth
    from synthmed.nn.translation import build_patch_discriminator

    o, size, batch, recipe = options, cfg["size"], config_batch(cfg), cfg["recipe"]
    c_in, _ = cfg["channels"]
    depth = o["depth"] or segmentation_depth(size)
    a, b = translation_data(cfg)
    loader = torch.utils.data.DataLoader(_ReferenceSegmentationData(a, b, size, aligned=True), batch_size=batch,
                                         shuffle=True, num_workers=0)
    epochs = itertools.chain.from_iterable(iter(loader) for _ in itertools.count())  # a new epoch when one ends

    def next_batch() -> dict[str, torch.Tensor]:
        return next(epochs)

    torch.manual_seed(0)  # the recipe's construction order: the same initial weights
    netS = build_segmentor(c_in, 1, depth=depth, base_channels=o["base_channels"], norm=o["norm"]).to(device)  # noqa: N806
    optimizer_S = torch.optim.Adam(netS.parameters(), lr=o["lr"], betas=(o["betas"][0], o["betas"][1]))  # noqa: N806
    networks: dict[str, nn.Module] = {"S": netS}
    bce = nn.BCEWithLogitsLoss()

    if recipe == "unet":
        def step() -> None:
            data = next_batch()
            image, mask = data["A"].to(device), data["B"].to(device)
            logits = netS(image)
            loss = bce(logits, mask) + _reference_dice_loss(torch.sigmoid(logits), mask)
            optimizer_S.zero_grad()
            loss.backward()
            optimizer_S.step()
            loss.item()

        desc = ("reference U-Net loop (milesial/Pytorch-UNet style): DataLoader with per-sample flip, NCHW, PyTorch "
                "kernels, BCEWithLogitsLoss + soft Dice, zero_grad/backward/step, default Adam, .item() every step")
    elif recipe == "segan":
        netC = SegANCritic(c_in, depth=depth, base_channels=o["d_base_channels"], norm=o["critic_norm"]).to(device)  # noqa: N806
        optimizer_C = torch.optim.Adam(netC.parameters(), lr=o["d_lr"], betas=(o["d_betas"][0], o["d_betas"][1]))  # noqa: N806
        networks["C"] = netC
        clip = o["clip"]

        def multiscale_l1(fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
            return sum(torch.mean(torch.abs(x - y)) for x, y in zip(fa, fb, strict=True)) / len(fa)  # type: ignore[return-value]

        def step() -> None:
            data = next_batch()
            image, target = data["A"].to(device), data["B"].to(device)
            image01 = (image + 1) / 2
            output = torch.sigmoid(netS(image))
            # train the critic
            netC.zero_grad()
            result = netC(image01 * output.detach())
            target_D = netC(image01 * target)  # noqa: N806 (the reference's names)
            loss_D = -multiscale_l1(result, target_D)  # noqa: N806
            loss_D.backward()
            optimizer_C.step()
            for p in netC.parameters():  # clip parameters in D
                p.data.clamp_(-clip, clip)
            # train the segmentor
            netS.zero_grad()
            result = netC(image01 * output)
            target_G = netC(image01 * target)  # noqa: N806
            loss_G_joint = multiscale_l1(result, target_G) + _reference_dice_loss(output, target)  # noqa: N806
            loss_G_joint.backward()
            optimizer_S.step()
            loss_D.item(), loss_G_joint.item()

        desc = ("reference SegAN loop (YuanXue1993/SegAN train.py, one S forward): DataLoader with per-sample flip, "
                "NCHW, PyTorch kernels, C step on -multi-scale L1 of image*pred.detach() vs image*truth, C clamped "
                "to +-0.05, S step on multi-scale L1 (C grads on, truth features recomputed with grad) + Dice, "
                "default Adam, .item() every step")
    else:
        netD = build_patch_discriminator("patch", c_in + 1, base_channels=o["d_base_channels"],  # noqa: N806
                                         n_layers=o["d_layers"], norm=o["d_norm"]).to(device)
        optimizer_D = torch.optim.Adam(netD.parameters(), lr=o["d_lr"], betas=(o["d_betas"][0], o["d_betas"][1]))  # noqa: N806
        networks["D"] = netD
        criterion_gan = _ReferenceGANLoss("vanilla").to(device)
        seg_weight = o["seg_weight"]
        counter = {"total_iters": 0}

        def step() -> None:
            data = next_batch()
            real_A, mask = data["A"].to(device), data["B"].to(device)  # noqa: N806
            logits = netS(real_A)
            prob = torch.sigmoid(logits)
            fake_B, real_B = prob * 2 - 1, mask * 2 - 1  # noqa: N806
            _set_requires_grad([netD], True)
            optimizer_D.zero_grad()
            loss_D_fake = criterion_gan(netD(torch.cat((real_A, fake_B), 1).detach()), False)  # noqa: N806
            loss_D_real = criterion_gan(netD(torch.cat((real_A, real_B), 1)), True)  # noqa: N806
            loss_D = (loss_D_fake + loss_D_real) * 0.5  # noqa: N806
            loss_D.backward()
            optimizer_D.step()
            _set_requires_grad([netD], False)
            optimizer_S.zero_grad()
            loss_G_GAN = criterion_gan(netD(torch.cat((real_A, fake_B), 1)), True)  # noqa: N806
            loss_seg = bce(logits, mask) + _reference_dice_loss(prob, mask)
            loss_G = loss_G_GAN + seg_weight * loss_seg  # noqa: N806
            loss_G.backward()
            optimizer_S.step()
            counter["total_iters"] += batch
            if counter["total_iters"] % 100 == 0:
                [float(v) for v in (loss_G_GAN, loss_seg, loss_D_real, loss_D_fake)]

        desc = ("junyanz pix2pix_model.optimize_parameters on (image, 2 p - 1) pairs: DataLoader with per-sample "
                "flip, NCHW, PyTorch kernels, set_requires_grad, D loss 0.5*(fake+real), GAN + 100*(BCE + Dice), "
                "default Adam, losses read every 100 images")

    def native_step() -> None:
        with native_convolutions():  # plain PyTorch: oneDNN for every layer, as nn.Conv2d would
            step()

    return Runner("plain", desc, native_step, lambda: sync(device), device, networks=networks)


def same_initial_weights(a: Runner, b: Runner) -> bool:
    """True when two runners' networks have the same names, shapes and values (checked before any step)."""
    if set(a.networks) != set(b.networks):
        return False
    for key, net in a.networks.items():
        pa, pb = list(net.state_dict().values()), list(b.networks[key].state_dict().values())
        if len(pa) != len(pb) or any(x.shape != y.shape or not torch.equal(x, y) for x, y in zip(pa, pb, strict=True)):
            return False
    return True


# --- timing --------------------------------------------------------------------------------------------------
GEMM_PROBES: list[float] = []


def gemm_probe(device: torch.device) -> float:
    """A 0.1 s look at the machine's current GEMM speed, taken before each timed block (contention indicator)."""
    value = gemm_peak(device, n=2048, repeats=2)
    GEMM_PROBES.append(value)
    return value


def run_block(runner: Runner, steps: int, default_threads: int, max_seconds: float | None = None
              ) -> tuple[int, float]:
    """Time ``steps`` steps and the final flush/sync: (steps done, seconds).

    ``max_seconds`` ends the block early (after the step that crosses it): when another process takes the cores
    mid-run, 2-thread OpenMP regions can slow down 5-10x and a block sized from the warm-up would run for minutes.
    """
    torch.set_num_threads(runner.threads or default_threads)
    try:
        t0 = time.perf_counter()
        done = 0
        if "run_steps" in runner.extra:  # a framework's own loop runs the block (no early end)
            runner.extra["run_steps"](steps)
            done = steps
        for _ in range(steps - done):
            runner.step()
            done += 1
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                break
        runner.finish()
        return done, time.perf_counter() - t0
    finally:
        torch.set_num_threads(default_threads)


def measure(runners: list[Runner], budget_s: float, repeats: int, fixed_steps: int | None, warmup: int,
            default_threads: int) -> dict[str, dict[str, Any]]:
    """Warm up each runner, size its block to ~budget/(runners*repeats) seconds, time interleaved blocks."""
    step_time: dict[str, float] = {}
    for r in runners:
        for _ in range(max(0, warmup - 1)):
            run_block(r, 1, default_threads)
    # A second untimed round once every runner has run: the process's heap reaches its high-water mark only then
    # (before this round the first timed block of the runner with the largest working set was its slowest).
    for r in runners:
        step_time[r.name] = run_block(r, 1, default_threads)[1]
    target = budget_s / max(1, len(runners) * repeats)
    steps = {r.name: fixed_steps or max(1, round(target / step_time[r.name])) for r in runners}
    cap = None if fixed_steps else 3 * target
    rates: dict[str, list[float]] = {r.name: [] for r in runners}
    probes: dict[str, list[float]] = {r.name: [] for r in runners}
    for rep in range(repeats):
        order = runners if rep % 2 == 0 else runners[::-1]  # A B C, C B A, ...: cancels linear drift
        for r in order:
            probes[r.name].append(gemm_probe(runners[0].device))
            done, seconds = run_block(r, steps[r.name], default_threads, cap)
            rates[r.name].append(done / seconds)
    memory = {}
    for r in runners:  # after the timing: one untimed step each, from a trimmed heap
        with PeakMemory(r.device) as mem:
            run_block(r, 1, default_threads)
        memory[r.name] = mem.to_dict()
    ref, own = rates.get("plain"), rates.get("synthmed")
    return {
        r.name: {"steps_per_block": steps[r.name], "warmup_step_seconds": round(step_time[r.name], 4),
                 "paired_ratio_vs_plain": None if ref is None else
                 statistics.median(a / b for a, b in zip(rates[r.name], ref, strict=True)),
                 # experiments against the synthmed step itself, block by block (same repeat)
                 "paired_ratio_vs_synthmed": None if own is None else
                 statistics.median(a / b for a, b in zip(rates[r.name], own, strict=True)),
                 "steps_per_s_blocks": [round(x, 4) for x in rates[r.name]],
                 "gemm_gflop_s_before_blocks": [round(x, 1) for x in probes[r.name]],
                 "steps_per_s": statistics.median(rates[r.name]),
                 "peak_memory": memory[r.name]}
        for r in runners
    }


# --- 3. FLOPs --------------------------------------------------------------------------------------------------
class _GlobalOnly:
    """Stands in for FlopCounterMode's ModuleTracker, whose backward hooks make ``autograd.grad`` on a leaf
    (the WGAN-GP penalty) fail ("A leaf node was passed to _will_engine_execute_node ..."); we only need the
    global total, not per-module counts."""

    parents = ("Global",)

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def flop_counter() -> Any:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    return counter


def count_step_flops(runner: Runner) -> dict[str, Any]:
    """Model FLOPs of one step: counted on PyTorch's convolution kernels, so a layer computed by Winograd (9/16 of
    the multiply-adds) counts what the convolution is, as MFU is usually defined; GEMM-lowered layers count the
    same either way."""
    counter = flop_counter()
    with counter, native_convolutions():
        runner.step()
        runner.finish()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return {"total": int(counter.get_total_flops()), "by_op": by_op}


def hand_count_generator_forward(G: DCGANGenerator, n: int) -> dict[str, Any]:
    """2 * Cin * Cout * k * k * (spatial size the kernel slides over) * N per conv layer.

    For a Conv2d the kernel is applied at every output position (Hout * Wout); a ConvTranspose2d scatters the
    kernel from every *input* position, so its count uses Hin * Win (using Hout * Wout for a stride-2 transposed
    conv would count 4x too many multiply-adds). This is also what FlopCounterMode does.
    """
    layers, x = [], torch.zeros(n, G.latent_dim, *([1] * G.spatial_dims))
    total = 0
    with torch.no_grad():
        for m in G.net:
            y = m(x)
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                cout, cin = m.out_channels, m.in_channels
                k = m.kernel_size[0] * m.kernel_size[1]
                positions = (x.shape[2] * x.shape[3]) if isinstance(m, nn.ConvTranspose2d) else y.shape[2] * y.shape[3]
                flops = 2 * cin * cout * k * positions * n
                total += flops
                layers.append({"layer": f"{type(m).__name__}({cin}->{cout}, k{m.kernel_size[0]})",
                               "in": list(x.shape[1:]), "out": list(y.shape[1:]), "gflops": round(flops / 1e9, 4)})
            x = y
    return {"layers": layers, "total": total}


# --- 4. profile ------------------------------------------------------------------------------------------------
CATEGORIES = [
    ("convolution forward", ("mkldnn_convolution", "slow_conv", "conv_transpose", "_convolution", "convolution",
                             "conv2d", "thnn_conv")),
    ("convolution backward", ("convolution_backward", "conv_depthwise", "mkldnn_convolution_backward")),
    ("GEMM (GEMM-lowered convolutions, linear layers)", ("aten::mm", "addmm", "bmm", "matmul")),
    ("batch/group norm", ("batch_norm", "group_norm", "native_layer_norm")),
    ("optimiser (Adam)", ("_foreach", "_fused_adam", "addcdiv", "addcmul", "lerp", "sqrt", "mul_", "add_", "div_")),
    ("activations", ("relu", "leaky", "tanh", "threshold", "softplus", "sigmoid", "binary_cross")),
    ("copies / layout / allocation", ("copy_", "contiguous", "clone", "empty", "zero", "fill_", "to_copy", "_to",
                                      "as_strided", "index_select", "cat", "stack", "pad")),
]


def categorise(name: str) -> str:
    low = name.lower()
    if "backward" in low and "conv" in low:
        return "convolution backward"
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other ops"


def profile_runner(runner: Runner, steps: int, default_threads: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if runner.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    torch.set_num_threads(runner.threads or default_threads)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            runner.step()
        runner.finish()
        wall = time.perf_counter() - t0
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_self = sum(e.self_cpu_time_total for e in events)  # microseconds
    wall_us = wall * 1e6
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    top = [{"op": e.key, "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 2),
            "share_of_wall": round(e.self_cpu_time_total / wall_us, 4), "calls_per_step": e.count / steps}
           for e in events[:15]]
    groups: dict[str, float] = {}
    for e in events:
        cat = categorise(e.key)
        groups[cat] = groups.get(cat, 0.0) + e.self_cpu_time_total
    groups["outside ops (Python, autograd engine, profiler)"] = max(0.0, wall_us - total_self)
    return {
        "steps": steps, "wall_ms_per_step": round(wall * 1e3 / steps, 1),
        "note": "profiled wall time includes profiler overhead; shares are of the profiled wall time",
        "top_ops_by_self_cpu": top,
        "groups": {k: {"ms_per_step": round(v / 1e3 / steps, 2), "share_of_wall": round(v / wall_us, 4)}
                   for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
    }


# --- micro-benchmarks for the diagnosis -------------------------------------------------------------------------
def adam_and_ema_micro(networks: dict[str, nn.Module], device: torch.device, steps: int = 20) -> dict[str, Any]:
    """Time one optimiser step (G and D parameters, random grads) per Adam implementation, and one update_ema."""
    params = [p for net in networks.values() for p in net.parameters()]
    copies = [p.detach().clone().requires_grad_(True) for p in params]
    for p in copies:
        p.grad = torch.randn_like(p)
    out: dict[str, Any] = {"parameters": sum(p.numel() for p in copies)}
    variants = {"for-loop (default on CPU)": {"foreach": False}, "foreach": {"foreach": True},
                "fused (synthmed on CPU and CUDA)": {"fused": True}}
    opts = {}
    for name, kw in variants.items():
        try:
            opts[name] = torch.optim.Adam(copies, lr=1e-4, **kw)
            opts[name].step()
        except (RuntimeError, ValueError) as exc:
            out[name] = f"unavailable: {exc}"
    times: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(3):
        for name, opt in opts.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            sync(device)
            times[name].append((time.perf_counter() - t0) / steps * 1e3)
    for name in opts:
        out[name] = {"ms_per_step": round(statistics.median(times[name]), 2)}
    G = networks["G"]
    import copy

    shadow = copy.deepcopy(G).requires_grad_(False)
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(steps):
            update_ema(shadow, G, ema_beta(1000 + i, EMA_BETA))
        sync(device)
        ts.append((time.perf_counter() - t0) / steps * 1e3)
    out["update_ema(G) ms"] = round(statistics.median(ts), 2)
    return out


# --- main ----------------------------------------------------------------------------------------------------
def main() -> None:
    global BATCH
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="dcgan28,dcgan64,wgangp64",
                        help=f"comma list of {', '.join(CONFIGS)} (the translation and segmentation configs are not "
                             "in the default)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timed block (default: sized so each config takes --seconds)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed blocks per runner (median)")
    parser.add_argument("--seconds", type=float, default=30.0, help="timed seconds per config (all runners)")
    parser.add_argument("--experiments", default=DEFAULT_EXPERIMENTS,
                        help=f"comma list of {', '.join(EXPERIMENTS)}, or 'none'")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64,
                        help="batch size of every runner of the DCGAN / WGAN-GP and segmentation configs (GPU "
                             "target: 256); the translation configs keep their own")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--profile", default="dcgan28,dcgan64,wgangp64",
                        help="configs whose synthmed step is profiled (DCGAN 64 and the translation configs also "
                             "profile the plain loop); 'none' to skip")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-minutes", type=float, default=6.0,
                        help="overall limit: budgets shrink to fit, configs that no longer fit are skipped")
    args = parser.parse_args()
    BATCH = args.batch

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    default_threads = torch.get_num_threads()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    exps = [] if args.experiments in ("", "none") else [e.strip() for e in args.experiments.split(",")]
    bad = [e for e in exps if e not in EXPERIMENTS]
    if bad:
        raise SystemExit(f"unknown experiment(s) {bad}; choose from {', '.join(EXPERIMENTS)}")
    profiled = [] if args.profile in ("", "none") else [c.strip() for c in args.profile.split(",")]
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "benchmark": "training/speed",
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "machine": {**machine(device), "cpu_model": cpu_model()}, "source": source_state(),
        "load_average_start": load_average(),
        "data": "random images uniform in [-1, 1] (N=2048, 1 channel), held in memory; speed does not depend on "
                "pixel values in fp32",
        "batch_size": BATCH,
        "images_per_s_definition": "steps/s * batch size (64 generated images per generator iteration; WGAN-GP "
                                   "additionally generates 5 x 64 for its critic iterations), as the trainer's "
                                   "metrics.json counts it",
    }

    print(f"torch {torch.__version__}, {default_threads} threads, {device}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}", flush=True)
    peak_start = gemm_peak(device)
    print(f"GEMM peak (2048^2 fp32): {peak_start:.1f} GFLOP/s", flush=True)

    out = args.out or RESULTS / f"training_speed_{device.type}.json"
    deadline = started + 60 * args.max_minutes
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    doc["skipped"] = skipped
    for i, name in enumerate(configs):
        cfg = CONFIGS[name]
        t_cfg = time.perf_counter()
        # Share what is left of --max-minutes among the configs still to run (most of it for timing).
        allowance = (deadline - t_cfg) / (len(configs) - i)
        if allowance < 15:
            skipped[name] = "--max-minutes reached"
            print(f"\n== {name}: skipped, --max-minutes reached", flush=True)
            continue
        segmentation = cfg.get("kind") == "segmentation"
        translation = cfg.get("kind") == "translation" or segmentation  # paired-data recipes, no EMA
        batch = config_batch(cfg)
        same_weights = None
        if translation:
            images = torch.empty(0)
            main = make_translation_synthmed(cfg, device)
            train_size, g_forwards, label = cfg["size"], None, cfg["label"]
            if segmentation:  # (--batch: not in the label)
                label += f", batch {batch}"
            make_reference = make_segmentation_plain if segmentation else make_translation_plain
            runners = [main, make_reference(cfg, device, main.extra["options"])]
            same_weights = same_initial_weights(runners[0], runners[1])  # before any step
        else:
            images = random_images(2048, cfg["size"])
            main = make_synthmed(cfg, device, images)
            train_size = main.extra["train_size"]
            g_forwards = g_forwards_per_step(main)
            label = f"{cfg['label']}, networks at {train_size} px, {g_forwards} G forward(s) per step"
            runners = [main, make_plain(cfg, device, images, train_size)]
            monai_runner = make_monai(cfg, device, images, train_size)
            if monai_runner is not None:
                runners.append(monai_runner)
        exp_desc = {}
        for exp in exps:
            for c, rname, desc, kw in EXPERIMENTS[exp]:
                if c != name:
                    continue
                if kw.get("layout_toggle"):
                    alt = 28 if train_size == 32 else 32
                    rname = "synthmed_native28" if alt == 28 else "synthmed_pad32"
                    desc = (f"synthmed with pad_to={alt} instead of the default {train_size} px layout; a different "
                            f"network ({'one stage fewer' if alt == 28 else 'one stage more'}, see flops_per_step)")
                    kw = {"options": {"pad_to": alt}}
                elif kw.get("reuse_toggle"):
                    if g_forwards == 2:
                        rname, kw = "synthmed_reuse_fake", {"patch": "reuse_fake"}
                        desc = ("synthmed step that reuses the D step's G(z) (with grad) in the G step instead of a "
                                "second G forward; D frozen in the G step as now")
                    else:
                        rname, kw = "synthmed_two_g_forwards", {"patch": "two_g_forwards"}
                        desc = ("synthmed step as committed before the reuse change: no-grad G forward for the D "
                                "step, a second G forward (fresh latents) for the G step")
                if translation:
                    runners.append(make_translation_synthmed(cfg, device, name=rname, description=desc, **kw))
                else:
                    runners.append(make_synthmed(cfg, device, images, name=rname, description=desc, **kw))
                exp_desc[rname] = desc
        # Each experiment adds a quarter of --seconds, so the main comparison keeps most of its share.
        budget = min(args.seconds + args.seconds / 4 * len(exp_desc), 0.6 * allowance)
        print(f"\n== {name}: {label}; runners: {', '.join(r.name for r in runners)}", flush=True)
        phase_t = {"build": time.perf_counter() - t_cfg}
        t_phase = time.perf_counter()
        timing = measure(runners, budget, args.repeats, args.steps, warmup=3 if name == "dcgan28" else 2,
                         default_threads=default_threads)
        entry: dict[str, Any] = {"label": label, "options": cfg["options"], "train_size": train_size,
                                 "g_forwards_per_step": g_forwards, "runners": {}}
        if translation:
            entry.update(
                recipe=cfg["recipe"], batch_size=batch, channels=list(cfg["channels"]),
                recipe_config=main.extra["options"], same_initial_weights=same_weights,
                data=f"{TRANSLATION_IMAGES * batch} random {cfg['size']} px image pairs per side, uniform in [-1, 1], "
                     "held in memory; both runners jitter them (upscale by the recipe's jitter, random crop back, "
                     "random mirror): synthmed on the batch, the plain loop per sample in its Dataset",
            )
            if segmentation:
                entry["data"] = (f"{TRANSLATION_IMAGES * batch} random {cfg['size']} px {cfg['channels'][0]}-channel "
                                 f"images uniform in [-1, 1] and random binary masks ({SEGMENTATION_FOREGROUND:.0%} "
                                 "foreground), held in memory; both runners mirror them at random: synthmed on the "
                                 "batch, the plain loop per sample in its Dataset")
        for r in runners:
            t = timing[r.name]
            entry["runners"][r.name] = {
                "description": r.description, **t,
                "images_per_s": t["steps_per_s"] * batch,
                **{k: v for k, v in r.extra.items() if k in ("channels_last", "precision", "train_size")},
            }
        phase_t["timing"] = time.perf_counter() - t_phase
        t_phase = time.perf_counter()
        # FLOPs of one real step, per runner kind that differs in work (synthmed vs plain vs monai).
        for r in runners:
            if r.name in ("plain", "monai") or r.extra.get("own_flops"):
                entry["runners"][r.name]["flops_per_step"] = count_step_flops(r)
        base = entry["runners"]["synthmed"]["steps_per_s"]
        for rv in entry["runners"].values():
            rv["ratio_vs_plain"] = rv["steps_per_s"] / entry["runners"]["plain"]["steps_per_s"]
            rv["ratio_vs_synthmed"] = rv["steps_per_s"] / base
        phase_t["flops"] = time.perf_counter() - t_phase
        t_phase = time.perf_counter()
        if not translation:  # (translation recipes keep no EMA copy)
            entry["adam_and_ema_ms"] = adam_and_ema_micro(runners[0].networks, device)
        phase_t["adam_ema_micro"] = time.perf_counter() - t_phase
        t_phase = time.perf_counter()
        if name in profiled and time.perf_counter() - t_cfg < allowance:
            to_profile = runners[:2] if name == "dcgan64" or translation else runners[:1]
            warm = timing["synthmed"]["warmup_step_seconds"]
            steps = 2 if warm > 2 else 3 if warm > 0.3 else 20
            entry["profile"] = {r.name: profile_runner(r, steps, default_threads) for r in to_profile}
        if name == "dcgan64":
            G = runners[1].networks["G"]
            hand = hand_count_generator_forward(G.cpu(), BATCH)  # type: ignore[arg-type]
            G.to(device)
            counter = flop_counter()
            with counter, torch.no_grad():
                G(torch.randn(BATCH, 100, device=device))
            hand["flop_counter_total"] = int(counter.get_total_flops())
            hand["agree"] = hand["total"] == hand["flop_counter_total"]
            entry["hand_count_G_forward"] = hand
        phase_t["profile_and_hand_count"] = time.perf_counter() - t_phase
        entry["seconds"] = round(time.perf_counter() - t_cfg, 1)
        entry["seconds_by_phase"] = {k: round(v, 1) for k, v in phase_t.items()}
        results[name] = entry
        for rname, rv in entry["runners"].items():
            print(f"  {rname:22s} {rv['steps_per_s']:7.3f} steps/s  x{rv['ratio_vs_plain']:.2f} vs plain "
                  f"(paired x{rv['paired_ratio_vs_plain']:.2f})  blocks {rv['steps_per_s_blocks']}", flush=True)
        if same_weights is False:
            print("  WARNING: synthmed and plain networks differ before training (not the same networks)", flush=True)
        del runners
        write_results(doc, results, peak_start, None, started, out, final=False)

    write_results(doc, results, peak_start, gemm_peak(device), started, out, final=True)


def write_results(doc: dict[str, Any], results: dict[str, Any], peak_start: float, peak_end: float | None,
                  started: float, out: Path, final: bool) -> None:
    """MFU figures and the JSON; called after every config (``partial``) so a stopped run still leaves results."""
    peak = max(peak_start, peak_end or 0.0)
    for entry in results.values():
        for rv in entry["runners"].values():
            # Variants that do the synthmed step's work another way (kernels, threads, layout) share its FLOPs.
            work = rv.get("flops_per_step") or entry["runners"]["synthmed"].get("flops_per_step")
            if work:
                flops = work["total"]
                rv["achieved_gflop_s"] = flops * rv["steps_per_s"] / 1e9
                rv["mfu"] = rv["achieved_gflop_s"] / peak
                # Load-corrected: each block's rate against the GEMM speed measured just before it.
                rv["mfu_vs_gemm_probe_before_block"] = statistics.median(
                    flops * x / 1e9 / g for x, g in zip(rv["steps_per_s_blocks"], rv["gemm_gflop_s_before_blocks"],
                                                        strict=True))
    if GEMM_PROBES:
        low = 0.7 * max(GEMM_PROBES)
        for entry in results.values():
            for rv in entry["runners"].values():
                rv["blocks_after_low_gemm_probe"] = sum(g < low for g in rv["gemm_gflop_s_before_blocks"])
    doc["gemm_peak_gflop_s"] = {
        "start": round(peak_start, 1), "end": None if peak_end is None else round(peak_end, 1),
        "used": round(peak, 1),
        "how": "best of 6 fp32 2048x2048 matmuls at the start and at the end; 'used' (the higher) is the MFU "
               "denominator",
        "probes_median": round(statistics.median(GEMM_PROBES), 1) if GEMM_PROBES else None,
        "probes_min": round(min(GEMM_PROBES), 1) if GEMM_PROBES else None,
        "probes_max": round(max(GEMM_PROBES), 1) if GEMM_PROBES else None,
        "probes_note": "best of 2 matmuls before every timed block; a low probe means another process was using "
                       "the cores then (compare mfu_vs_gemm_probe_before_block)",
    }
    doc["configs"] = results
    doc["partial"] = not final
    doc["monai"] = "measured" if any("monai" in e["runners"] for e in results.values()) else "not installed: skipped"
    doc["load_average_end"] = load_average()
    doc["total_seconds"] = round(time.perf_counter() - started, 1)
    doc["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_rounded(doc), indent=1) + "\n", encoding="utf-8")
    if final:
        print_table(doc)
        print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} in {doc['total_seconds']} s")


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 4) if abs(obj) < 1000 else round(obj, 1)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def print_table(doc: dict[str, Any]) -> None:
    g = doc["gemm_peak_gflop_s"]
    print(f"\nGEMM peak: {g['used']} GFLOP/s (start {g['start']}, end {g['end']}; 2048^2 fp32 probes before "
          f"timed blocks: median {g['probes_median']}, min {g['probes_min']})")
    head = f"{'config':13s} {'runner':22s} {'steps/s':>8s} {'img/s':>7s} {'vs plain':>8s} {'paired':>7s} " \
           f"{'GFLOP/step':>10s} {'GFLOP/s':>8s} {'MFU':>6s} {'MFU*':>6s} {'+MB':>6s}"
    print(head)
    print("-" * len(head))
    for cname, entry in doc["configs"].items():
        for rname, rv in entry["runners"].items():
            flops = rv.get("flops_per_step", {}).get("total")
            mem = rv.get("peak_memory", {}).get("above_start_mb")
            print(f"{cname:13s} {rname:22s} {rv['steps_per_s']:8.3f} {rv['images_per_s']:7.1f} "
                  f"{rv['ratio_vs_plain']:8.2f} {rv['paired_ratio_vs_plain']:7.2f} "
                  f"{(flops / 1e9 if flops else float('nan')):10.1f} "
                  f"{rv.get('achieved_gflop_s', float('nan')):8.1f} {rv.get('mfu', float('nan')):6.1%} "
                  f"{rv.get('mfu_vs_gemm_probe_before_block', float('nan')):6.1%} "
                  f"{(mem if mem is not None else float('nan')):6.0f}")
    print("vs plain: ratio of medians; paired: median of block-by-block ratios; MFU: vs the GEMM peak; "
          "MFU*: each block vs a GEMM probe taken just before it (load-corrected); +MB: peak memory of one step above "
          "what was resident before it (measured after the timing)")
    for cname, entry in doc["configs"].items():
        for rname, prof in entry.get("profile", {}).items():
            print(f"\nprofile, {rname} {cname} ({prof['wall_ms_per_step']} ms/step profiled): top ops by self CPU")
            for e in prof["top_ops_by_self_cpu"][: 10 if (cname, rname) == ("dcgan64", "synthmed") else 5]:
                print(f"  {e['op']:45s} {e['self_cpu_ms_per_step']:8.1f} ms  {e['share_of_wall']:6.1%}")
            print("  groups: " + ", ".join(f"{k} {v['share_of_wall']:.1%}" for k, v in prof["groups"].items()))


if __name__ == "__main__":
    main()
