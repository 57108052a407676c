"""``synthmed segment``: masks named and sized as their inputs (tiled, odd sizes, NIfTI volumes), metrics that agree
with :mod:`synthmed.metrics.segmentation` on the written masks, per-patient scores of the run's split, multi-class
label maps, and bad input refused in one line with nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import synthmed
from synthmed.cli import app
from synthmed.metrics.segmentation import binary_scores

TRAIN = {"batch_size": 4, "log_every": 5, "sample_every": 1000, "checkpoint_every": 1000, "ema_beta": 0.0,
         "device": "cpu", "progress": False, "steps": 5, "base_channels": 8}
SIDE = 32


def _discs(n: int, seed: int, side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy grey images with a bright disc each (uint8) and their label maps: 1 = disc, 2 = its core."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    images, labels = np.zeros((n, side, side), np.uint8), np.zeros((n, side, side), np.uint8)
    for i in range(n):
        cy, cx, r = rng.integers(side // 3, 2 * side // 3, 2).tolist() + [int(rng.integers(4, 9))]
        distance = (yy - cy) ** 2 + (xx - cx) ** 2
        images[i] = np.clip(rng.normal(60, 20, (side, side)) + 140 * (distance <= r * r), 0, 255)
        labels[i] = (distance <= r * r).astype(np.uint8) + (distance <= (r // 2) ** 2)
    return images, labels


def _npz(path: Path, labels: bool) -> Path:
    images, maps = _discs(24, seed=0)
    masks = maps if labels else (maps > 0).astype(np.uint8) * 255
    np.savez(path, images=images, masks=masks, patient=np.repeat([f"P{i}" for i in range(8)], 3))
    return path


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A unet on 24 disc images of 8 patients (3 each), with a best checkpoint (--eval-every)."""
    root = tmp_path_factory.mktemp("seg")
    return synthmed.train(_npz(root / "discs.npz", labels=False), pair="image:mask", recipe="unet",
                          out=root / "run", eval_every=5, **TRAIN).run_dir


def _pictures(folder: Path, images: np.ndarray, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in zip(names, images, strict=True):
        Image.fromarray(image).save(folder / f"{name}.png")


def _cli(*args: str) -> tuple[int, str]:
    outcome = CliRunner().invoke(app, ["segment", *args])
    return outcome.exit_code, outcome.output


def test_one_mask_per_input_same_stem_and_size_tiled_and_odd_sizes(tmp_path: Path, binary_run: Path) -> None:
    images, _ = _discs(2, seed=5)
    big, _ = _discs(1, seed=6, side=80)  # larger than the 32 px training size: tiled
    odd, _ = _discs(1, seed=7, side=40)
    inputs = tmp_path / "in"
    _pictures(inputs, images, ["a", "b"])
    _pictures(inputs, big[:, :, :72], ["big"])
    _pictures(inputs, odd[:, :37, :29], ["odd"])  # not a multiple of 2**depth = 16
    result = synthmed.api.segment(binary_run, inputs, tmp_path / "out", progress=False, device="cpu")
    assert sorted(p.name for p in result.outputs) == ["a.png", "b.png", "big.png", "odd.png"]
    for path in result.outputs:
        written, source = np.asarray(Image.open(path)), np.asarray(Image.open(inputs / path.name))
        assert written.shape == source.shape and written.dtype == np.uint8
        assert set(np.unique(written).tolist()) <= {0, 255}
    assert not result.metrics and "best (step 5" in result.checkpoint  # no truth: masks only
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "big.png", "odd.png"]


def test_compare_writes_metrics_that_match_the_written_masks(tmp_path: Path, binary_run: Path) -> None:
    images, maps = _discs(6, seed=11)
    names = [f"case{i}" for i in range(6)]
    _pictures(tmp_path / "in", images, names)
    _pictures(tmp_path / "truth", (maps > 0).astype(np.uint8) * 255, names)
    out = tmp_path / "out"
    code, output = _cli(binary_run.as_posix(), (tmp_path / "in").as_posix(), "--out", out.as_posix(), "--compare",
                        (tmp_path / "truth").as_posix(), "--spacing", "0.5,0.5", "-q")
    assert code == 0, output
    assert "per patient" in output and "pooled" in output and "checkpoint: best (step 5" in output
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == names and {r["class"] for r in rows} == {"1"}
    for row in rows:
        pred = np.asarray(Image.open(out / f"{row['image']}.png")) > 0
        truth = np.asarray(Image.open(tmp_path / "truth" / f"{row['image']}.png")) > 0
        expected = binary_scores(pred, truth, spacing=(0.5, 0.5))
        assert float(row["dice"]) == pytest.approx(expected["dice"])
        assert int(row["truth_pixels"]) == expected["truth_pixels"]
    report = json.loads((out / "metrics.json").read_text())
    assert report["counts"] == {"images": 6, "patients": 6, "classes": 2} and "best" in report["checkpoint"]
    dice = report["dice"]["1"]
    assert dice["per_image"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
    assert "Empty masks" in report["empty_conventions"] and len(dice["per_patient_interval"]) == 2
    assert len(list((out / "overlays").iterdir())) == 6 and Image.open(out / "overlays.jpg").format == "JPEG"


def test_split_scores_the_held_out_pairs_per_patient(tmp_path: Path, binary_run: Path) -> None:
    out = tmp_path / "split"
    code, output = _cli(binary_run.as_posix(), "--split", "test", "--out", out.as_posix(), "-q")
    assert code == 0, output
    report = json.loads((out / "metrics.json").read_text())
    patients = report["classes"]["1"]["per_patient"]["patients"]
    assert report["split"] == "test" and report["counts"]["images"] == 3 * report["counts"]["patients"]
    assert set(patients) <= {f"P{i}" for i in range(8)} and all(p["n_images"] == 3 for p in patients.values())
    masks = sorted(out.glob("*.png"))
    assert len(masks) == report["counts"]["images"] and (out / "overlays.jpg").is_file()


def test_nifti_in_nifti_out_with_the_input_affine(tmp_path: Path, binary_run: Path) -> None:
    nib = pytest.importorskip("nibabel")
    from synthmed.data.intensity import IntensityMapping, read_image_file
    from synthmed.segment import header_spacing

    images, maps = _discs(4, seed=21)
    volume = np.moveaxis(images, 0, -1)[:, :30].astype(np.int16)  # (X=32, Y=30, Z=4): non-square slices
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "vol.nii.gz")
    (tmp_path / "truth").mkdir()
    nib.save(nib.Nifti1Image(np.moveaxis(maps > 0, 0, -1)[:, :30].astype(np.uint8), affine),
             tmp_path / "truth" / "vol.nii.gz")
    result = synthmed.api.segment(binary_run, tmp_path / "vol.nii.gz", tmp_path / "out", compare=tmp_path / "truth",
                                  progress=False, device="cpu")
    assert [p.name for p in result.outputs] == ["vol.nii.gz"]
    written = nib.load(result.outputs[0])
    assert np.allclose(written.affine, affine) and written.shape == volume.shape
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1}
    assert result.metrics["counts"]["images"] == 1  # one volume, one 3-D case
    file = read_image_file(tmp_path / "vol.nii.gz", IntensityMapping())
    assert tuple(file.images.shape[-2:]) == (30, 32)  # rows run along Y
    assert header_spacing(file, 3) == pytest.approx((2.5, 0.9, 0.8))


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path, binary_run: Path) -> None:
    images, maps = _discs(1, seed=31)
    _pictures(tmp_path / "in", images, ["case0"])
    _pictures(tmp_path / "labels", maps, ["case0"])  # 0 / 1 / 2: a label map
    _pictures(tmp_path / "small", (maps[:, :24] > 0).astype(np.uint8) * 255, ["case0"])
    Image.fromarray(np.zeros((SIDE, SIDE, 3), np.uint8)).save(tmp_path / "rgb.png")
    source = (tmp_path / "in").as_posix()
    cases = {
        "o1": ([source, "--compare", (tmp_path / "labels").as_posix()], ["case0.png", "3 classes (0, 1, 2)",
                                                                          "segments 2 classes (binary)"]),
        "o2": ([source, "--compare", (tmp_path / "small").as_posix()], ["small/case0.png", "32x24", "32x32"]),
        "o3": ([(tmp_path / "rgb.png").as_posix()], ["rgb.png", "3 channels"]),
        "o4": ([source, "--training-scale"], ["no --size"]),
        "o5": ([source, "--fov", source], ["--compare"]),
        "o6": ([source, "--spacing", "0.5"], ["--spacing"]),
        # Regressions: --split train scored training images as held-out; tiling options crashed with a traceback.
        "o7": (["--split", "train"], ["--split train", "test or val"]),
        "o8": ([source, "--tile", "16", "--overlap", "16"], ["--overlap"]),
        "o9": ([source, "--batch-size", "0"], ["--batch-size"]),
    }
    for name, (args, expected) in cases.items():
        code, output = _cli(binary_run.as_posix(), *args, "--out", (tmp_path / name).as_posix(), "-q")
        assert code == 2 and output.count("\n") == 1, (name, output)
        assert all(text in output for text in expected), (name, output)
        assert not (tmp_path / name).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]  # no staging folder left behind


def test_three_class_run_writes_label_values_and_scores_each_class(tmp_path: Path) -> None:
    run = synthmed.train(_npz(tmp_path / "labels.npz", labels=True), pair="image:mask", mask_values="labels",
                         recipe="unet", out=tmp_path / "run", **TRAIN).run_dir
    model = synthmed.load(run)
    assert model.recipe.num_classes == 3
    images, maps = _discs(3, seed=41)
    names = ["x0", "x1", "x2"]
    _pictures(tmp_path / "in", images, names)
    _pictures(tmp_path / "truth", maps, names)
    result = synthmed.api.segment(run, tmp_path / "in", tmp_path / "out", compare=tmp_path / "truth",
                                  progress=False, device="cpu")
    for path in result.outputs:
        assert set(np.unique(np.asarray(Image.open(path))).tolist()) <= {0, 1, 2}
    with open(tmp_path / "out" / "metrics.csv", newline="") as fh:
        assert sorted({r["class"] for r in csv.DictReader(fh)}) == ["1", "2"]
    assert set(result.metrics["dice"]) == {"1", "2"} and "latest" in result.checkpoint
    x = torch.from_numpy(images[:1, None].astype(np.float32) / 127.5 - 1.0)
    labels = model.recipe.labels_from_probabilities(model.recipe.segment(x)).numpy()[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "x0.png")), labels)  # one tile: the network's own
    _pictures(tmp_path / "bad", np.minimum(maps * 2, 3), names)  # label 3 in a 3-class run
    code, output = _cli(run.as_posix(), (tmp_path / "in").as_posix(), "--out", (tmp_path / "o").as_posix(),
                        "--compare", (tmp_path / "bad").as_posix(), "-q")
    assert code == 2 and "holds label 3" in output and "3 classes" in output and not (tmp_path / "o").exists()


def test_natural_order_stacks_slices_in_slice_order() -> None:
    """Regression: a patient's slices were stacked alphabetically (_1, _10, _2) for the per-patient 3-D HD95."""
    from synthmed.segment import _natural_key

    names = ["TCGA_A_1", "TCGA_A_10", "TCGA_A_2", "TCGA_A_9"]
    assert sorted(names, key=_natural_key) == ["TCGA_A_1", "TCGA_A_2", "TCGA_A_9", "TCGA_A_10"]
