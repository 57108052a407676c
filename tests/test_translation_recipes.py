"""pix2pix and CycleGAN recipes: a step on tiny data, the image pool, exact resume with the pools, the learning-rate
schedule, jitter that moves image and target together, and directions a run cannot translate."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import synthmed
from synthmed.errors import ConfigError
from synthmed.recipes import build_recipe
from synthmed.recipes.translation import ImagePool, linear_decay, random_jitter
from synthmed.training import checkpoint as ckpt

TRAIN = {"batch_size": 4, "log_every": 2, "sample_every": 3, "checkpoint_every": 1000, "ema_beta": 0.0,
         "device": "cpu", "progress": False}
TINY = {"base_channels": 4, "d_base_channels": 4}


@pytest.fixture(scope="module")
def paired_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """12 grey 32 px images and binary masks matched by name."""
    root = tmp_path_factory.mktemp("pairs")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        picture = rng.integers(0, 255, (32, 32), dtype=np.uint8)
        Image.fromarray(picture).save(images / f"{i:02d}_image.png")
        Image.fromarray(((picture > 128) * 255).astype(np.uint8)).save(masks / f"{i:02d}_mask.png")
    return images, masks


@pytest.fixture(scope="module")
def unpaired_arrays(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Domain A: 20 grey images; domain B: 13 RGB images (different channel counts, different sizes)."""
    root = tmp_path_factory.mktemp("domains")
    rng = np.random.default_rng(1)
    a, b = root / "a.npz", root / "b.npz"
    np.savez(a, images=rng.integers(0, 128, (20, 16, 16), dtype=np.uint8))
    np.savez(b, images=rng.integers(100, 255, (13, 16, 16, 3), dtype=np.uint8))
    return a, b


def _losses(run: Path) -> list[dict[str, str]]:
    with open(run / "losses.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _finite(rows: list[dict[str, str]]) -> bool:
    return all(math.isfinite(float(v)) for r in rows for k, v in r.items() if k not in ("phase", "step") and v)


@pytest.mark.parametrize("options", [
    {},
    {"discriminator": "multiscale", "num_scales": 2, "d_layers": 1, "loss": "lsgan", "crop": 16, "norm": "instance"},
    {"adversarial_weight": 0.0, "generator": "resnet6"},
])
def test_pix2pix_trains_with_finite_losses(tmp_path: Path, paired_folders, options) -> None:
    run = synthmed.train(paired_folders[0], target=str(paired_folders[1]), recipe="pix2pix", split="all",
                         out=tmp_path / "run", steps=4, **TRAIN, **TINY, **options).run_dir
    rows = _losses(run)
    assert len(rows) == 4 and _finite(rows)
    assert float(rows[-1]["l1"]) > 0
    if options.get("adversarial_weight") == 0.0:
        assert all(float(r["loss_d"]) == 0.0 for r in rows)
    model = synthmed.load(run)
    assert ("D" in model.recipe.networks) == (options.get("adversarial_weight") != 0.0)
    out = model.recipe.translate(torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, 1, 32, 32) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0  # a mask target
    with pytest.raises(ConfigError, match="translates AtoB only"):
        model.recipe.translate(torch.zeros(1, 1, 32, 32), direction="BtoA")
    assert (run / "samples" / "step_00000003.png").is_file()


def test_cyclegan_trains_and_resumes_exactly_with_its_pools(tmp_path: Path, unpaired_arrays) -> None:
    a, b = unpaired_arrays
    # lr_decay_start 1: the schedule follows --steps, which differs between the straight and the split run.
    options = {"target": str(b), "kind": "unpaired", "recipe": "cyclegan", "split": "all", "pool_size": 6,
               "d_layers": 2, "lr_decay_start": 1.0, **TINY}
    straight = synthmed.train(a, out=tmp_path / "straight", steps=6, **TRAIN, **options)
    rows = _losses(straight.run_dir)
    assert len(rows) == 6 and _finite(rows)
    assert all(float(r["identity"]) == 0.0 for r in rows)  # 1 vs 3 channels: no identity loss
    synthmed.train(a, out=tmp_path / "split", steps=3, **TRAIN, **options)
    synthmed.train(resume_run=tmp_path / "split", steps=6, progress=False)
    assert _losses(tmp_path / "split") == rows
    x = ckpt.load_checkpoint(ckpt.latest_checkpoint(straight.run_dir / "checkpoints"))[1]
    y = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "split" / "checkpoints"))[1]
    assert x.keys() == y.keys()
    for key in x:
        assert torch.equal(x[key], y[key]), key
    assert x["extra/recipe/pool_a_images"].shape == (6, 1, 16, 16)  # 6 steps x 4 fakes filled the 6 places
    assert int(x["extra/recipe/pool_b_count"][0]) == 6

    model = synthmed.load(straight.run_dir)
    assert model.recipe.translate(torch.zeros(1, 1, 16, 16), "AtoB").shape == (1, 3, 16, 16)
    assert model.recipe.translate(torch.zeros(1, 3, 16, 16), "BtoA").shape == (1, 1, 16, 16)


def test_cyclegan_identity_loss_with_equal_channels_and_generator_by_size() -> None:
    from synthmed.data.dataset import DataInfo

    info = DataInfo(source="x", channels=1, height=64, width=64, kind="unpaired", target_channels=1, sizes=(5, 5))
    recipe = build_recipe("cyclegan", {**TINY}, info)
    assert recipe.identity_weight == pytest.approx(5.0)  # 0.5 x cycle weight 10
    assert recipe.config.generator == "resnet6"  # below 256 px
    big = DataInfo(source="x", channels=1, height=256, width=256, kind="unpaired", target_channels=1, sizes=(5, 5))
    assert build_recipe("cyclegan", {**TINY}, big).config.generator == "resnet9"


def test_image_pool_fills_then_swaps_half_the_time() -> None:
    torch.manual_seed(0)
    pool = ImagePool(3)
    first = torch.arange(3.0).reshape(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returned as they are
    assert pool.count == 3
    later = torch.full((400, 1, 1, 1), 9.0)
    out = pool.query(later)
    from_pool = int((out != 9.0).sum())
    assert 1 <= from_pool <= 3  # each stored image can come out once before 9s replace it
    assert bool((pool.images == 9.0).all())  # by now every place holds a new fake
    swapped = ImagePool(3)
    swapped.query(first)
    halves = [float(x) for x in swapped.query(torch.full((2000, 1, 1, 1), 5.0)).flatten()]
    assert halves.count(5.0) > 900  # about half are the new image itself, half a stored 5 or an old image
    assert torch.equal(ImagePool(0).query(first), first)


def test_image_pool_state_round_trip() -> None:
    pool = ImagePool(4)
    pool.query(torch.randn(3, 2, 4, 4))
    state = pool.state("p")
    again = ImagePool(4)
    again.load_state(state, "p", torch.device("cpu"))
    assert again.count == 3 and torch.equal(again.images[:3], pool.images[:3])
    empty = ImagePool(4)
    empty.load_state(ImagePool(4).state("p"), "p", torch.device("cpu"))
    assert empty.count == 0 and empty.images is None


def test_linear_decay_schedule() -> None:
    assert linear_decay(0.0, 0.5) == 1.0
    assert linear_decay(0.5, 0.5) == 1.0
    assert linear_decay(0.75, 0.5) == pytest.approx(0.5)
    assert linear_decay(1.0, 0.5) == 0.0
    assert linear_decay(0.9, 1.0) == 1.0


def test_jitter_moves_image_and_target_together_and_keeps_masks_binary() -> None:
    torch.manual_seed(3)
    image = torch.linspace(-1, 1, 32).repeat(2, 1, 32, 1)  # a ramp left to right
    mask = (image > 0).float()
    out = random_jitter({"image": image, "target": mask}, crop=16, jitter=1.25, flip=True,
                        nearest=frozenset({"target"}))
    assert out["image"].shape == (2, 1, 16, 16) and out["target"].shape == (2, 1, 16, 16)
    assert set(out["target"].unique().tolist()) <= {0.0, 1.0}
    # where the ramp is clearly positive, the mask is 1; where clearly negative, 0 (same crop and flip)
    assert bool((out["target"][out["image"] > 0.1] == 1).all())
    assert bool((out["target"][out["image"] < -0.1] == 0).all())


def test_bad_options_are_one_line_errors() -> None:
    from synthmed.data.dataset import DataInfo

    info = DataInfo(source="x", channels=1, height=32, width=32, kind="paired", target_channels=1)
    for options, message in (({"loss": "wgan"}, "loss='wgan'"), ({"generator": "vit"}, "generator='vit'"),
                             ({"crop": 64}, "crop=64 is larger"), ({"jitter": 0.5}, "jitter"),
                             ({"discriminator": "huge"}, "discriminator='huge'"),
                             ({"d_layers": 4}, "needs training images .* of at least 48 px, got 32")):
        with pytest.raises(ConfigError, match=message):
            build_recipe("pix2pix", {**TINY, **options}, info)


def test_mask_bce_dice_hand_case_and_option_checks() -> None:
    from synthmed.data.dataset import DataInfo
    from synthmed.recipes.translation import mask_bce_dice

    mask = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    perfect = mask_bce_dice(mask.clone(), mask)
    assert float(perfect) == pytest.approx(0.0, abs=1e-4)
    half = torch.full((1, 1, 2, 2), 0.5)
    # BCE = ln 2; Dice = 1 - 2 * 0.5 / (2 + 1) = 2 / 3
    assert float(mask_bce_dice(half, mask)) == pytest.approx(math.log(2) + 2 / 3, abs=1e-4)
    images = DataInfo(source="x", channels=1, height=32, width=32, kind="paired", target_channels=1)
    with pytest.raises(ConfigError, match="bce_dice needs mask targets"):
        build_recipe("pix2pix", {**TINY, "reconstruction": "bce_dice"}, images)
    with pytest.raises(ConfigError, match="reconstruction='l2'"):
        build_recipe("pix2pix", {**TINY, "reconstruction": "l2"}, images)


def test_plain_unet_with_bce_dice_trains_on_masks(tmp_path: Path, paired_folders) -> None:
    run = synthmed.train(paired_folders[0], target=str(paired_folders[1]), recipe="pix2pix", split="all",
                         out=tmp_path / "run", steps=3, adversarial_weight=0.0, reconstruction="bce_dice",
                         **TRAIN, **TINY).run_dir
    rows = _losses(run)
    assert _finite(rows) and float(rows[0]["l1"]) > 0.5  # BCE ~ ln 2 plus a Dice term near 1 at the start
