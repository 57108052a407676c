"""``synthmed translate``: outputs in the input's units and bit depth, tiling beyond the training size, comparison
metrics, the run's held-out split, and bad input refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import synthmed
from synthmed.cli import app
from synthmed.data.intensity import IntensityMapping
from synthmed.translate import side_mappings, translate_images

TRAIN = {"batch_size": 4, "log_every": 5, "sample_every": 1000, "checkpoint_every": 1000, "ema_beta": 0.0,
         "device": "cpu", "progress": False, "steps": 2}
TINY = {"base_channels": 4, "d_base_channels": 4, "d_layers": 2}


def _tiff16(path: Path, values: np.ndarray) -> None:
    Image.fromarray(values.astype(np.uint16)).save(path)


@pytest.fixture(scope="module")
def sixteen_bit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A pix2pix run on 16-bit TIFF pairs (12-bit values: the folder's range is 0..4095), and its data root."""
    root = tmp_path_factory.mktemp("tiff16")
    (root / "a").mkdir()
    (root / "b").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        a = rng.integers(0, 4000, (32, 32))
        _tiff16(root / "a" / f"case{i}.tif", a)
        _tiff16(root / "b" / f"case{i}.tif", 4000 - a)
    run = synthmed.train(root / "a", target=str(root / "b"), recipe="pix2pix", split="all", out=root / "run",
                         **TRAIN, **TINY).run_dir
    return run, root


def test_sixteen_bit_tiff_in_sixteen_bit_tiff_out_with_the_stored_mapping(tmp_path: Path, sixteen_bit_run) -> None:
    run, _ = sixteen_bit_run
    model = synthmed.load(run)
    in_map, out_map = side_mappings(model.recipe, "AtoB")
    assert (in_map.kind, in_map.dtype) == ("fixed", "uint16") and out_map.data_range is not None
    new = tmp_path / "new"
    new.mkdir()
    values = np.random.default_rng(5).integers(0, 4000, (32, 32))
    _tiff16(new / "scan_07.tif", values)
    result = synthmed.api.translate(run, new, tmp_path / "out", progress=False, device="cpu")
    written = Image.open(result.outputs[0])
    assert result.outputs[0].name == "scan_07.tif" and written.mode.startswith("I;16")
    x = torch.from_numpy(in_map.forward(values.astype(np.float64))[None, None])
    expected = out_map.inverse(model.recipe.translate(x).numpy())[0, 0]
    assert np.abs(np.asarray(written, dtype=np.float64) - np.clip(np.round(expected), 0, 65535)).max() <= 1


def test_images_larger_than_the_training_size_are_tiled(sixteen_bit_run) -> None:
    run, _ = sixteen_bit_run
    recipe = synthmed.load(run).recipe
    big = torch.rand(1, 1, 80, 72) * 2 - 1
    out = translate_images(recipe, big, tile=32, overlap=8)
    assert out.shape == (1, 1, 80, 72) and torch.isfinite(out).all()
    small = torch.rand(1, 1, 32, 32) * 2 - 1
    assert torch.equal(translate_images(recipe, small), recipe.translate(small).cpu())  # one tile: exactly G


def test_compare_writes_pictures_and_metrics_in_units(tmp_path: Path, sixteen_bit_run) -> None:
    run, root = sixteen_bit_run
    result = synthmed.api.translate(run, root / "a", tmp_path / "out", compare=root / "b", progress=False,
                                    device="cpu")
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["metrics"]["images"] == 8 and {"mae", "psnr", "ssim"} <= set(report["metrics"])
    assert 0 < report["metrics"]["mae"]["mean"] < 4096  # grey levels of the 12-bit data
    assert (tmp_path / "out" / "comparison.png").is_file() and len(list((tmp_path / "out" / "compare").iterdir())) == 8
    assert len(result.per_image) == 8


def _cli(*args: str) -> tuple[int, str]:
    outcome = CliRunner().invoke(app, ["translate", *args])
    return outcome.exit_code, outcome.output


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path, sixteen_bit_run) -> None:
    run, root = sixteen_bit_run
    # a stem present on one side only
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    _tiff16(lonely / "case0.tif", np.zeros((32, 32)))
    _tiff16(lonely / "extra9.tif", np.zeros((32, 32)))
    code, output = _cli(run.as_posix(), lonely.as_posix(), "--out", (tmp_path / "o1").as_posix(), "--compare",
                        (root / "b").as_posix(), "-q")
    assert code == 2 and "lack a target file" in output and output.count("\n") == 1
    # a target of another size
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    _tiff16(sizes / "case0.tif", np.zeros((32, 32)))
    other = tmp_path / "other"
    other.mkdir()
    _tiff16(other / "case0.tif", np.zeros((40, 32)))
    code, output = _cli(run.as_posix(), sizes.as_posix(), "--out", (tmp_path / "o2").as_posix(), "--compare",
                        other.as_posix(), "-q")
    assert code == 2 and "case0.tif" in output and "match in size" in output
    # RGB into a one-channel run
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(rgb)
    code, output = _cli(run.as_posix(), rgb.as_posix(), "--out", (tmp_path / "o3").as_posix(), "-q")
    assert code == 2 and "rgb.png" in output and "1" in output
    # BtoA on a pix2pix run
    code, output = _cli(run.as_posix(), sizes.as_posix(), "--out", (tmp_path / "o4").as_posix(), "--direction",
                        "BtoA", "-q")
    assert code == 2 and "translates AtoB only" in output
    for name in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / name).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]  # no staging folder left behind


def test_split_mode_scores_the_held_out_pairs_of_an_npz_pair_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (30, 16, 16, 2), dtype=np.uint8)
    npz = tmp_path / "pairs.npz"
    np.savez(npz, images=images, patients=np.repeat(np.arange(10), 3).astype(str))
    run = synthmed.train(npz, pair="0:1", patient_key="patients", recipe="pix2pix", out=tmp_path / "run",
                         **TRAIN, **{**TINY, "d_layers": 1}).run_dir
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (tmp_path / "scores").as_posix(), "-q")
    assert code == 0, output
    report = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    assert report["split"] == "test" and report["metrics"]["images"] >= 3 and "uint8" in report["units"]
    assert (tmp_path / "scores" / "outputs.npz").is_file() and (tmp_path / "scores" / "comparison.png").is_file()


def test_cyclegan_translates_both_ways_and_masks_come_out_as_probabilities(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(2)
    np.savez(root / "a.npz", images=rng.integers(0, 255, (12, 16, 16), dtype=np.uint8))
    np.savez(root / "b.npz", images=rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8))
    run = synthmed.train(root / "a.npz", target=str(root / "b.npz"), kind="unpaired", recipe="cyclegan",
                         split="all", out=tmp_path / "run", **TRAIN, **TINY).run_dir
    grey = tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(grey)
    result = synthmed.api.translate(run, grey, tmp_path / "ab", progress=False, device="cpu")
    assert Image.open(result.outputs[0]).mode == "RGB"
    colour = tmp_path / "colour.png"
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(colour)
    back = synthmed.api.translate(run, colour, tmp_path / "ba", direction="BtoA", progress=False, device="cpu")
    assert Image.open(back.outputs[0]).mode == "L"


def test_runs_without_recorded_mappings_read_eight_bit_data() -> None:
    from synthmed.data.dataset import DataInfo
    from synthmed.recipes import build_recipe

    info = DataInfo(source="x", channels=1, height=32, width=32, kind="paired", target_channels=1,
                    target_is_mask=True)
    recipe = build_recipe("pix2pix", dict(TINY), info)
    assert side_mappings(recipe, "AtoB") == (IntensityMapping(kind="fixed", low=0.0, high=255.0),
                                             IntensityMapping(kind="mask"))


def test_training_scale_resizes_in_and_back_out(sixteen_bit_run, tmp_path: Path) -> None:
    from synthmed.translate import _at_scale

    seen = []

    def record(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return x

    ramp = torch.linspace(-1, 1, 60).repeat(1, 1, 40, 1)  # (1, 1, 40, 60), smooth
    out = _at_scale(ramp, 20, record)
    assert seen == [(20, 30)] and out.shape == ramp.shape  # shorter side to 20, then back to 40 x 60
    assert float((out - ramp).abs().max()) < 0.05
    assert _at_scale(ramp, None, record) is ramp
    run, root = sixteen_bit_run
    code, output = _cli(run.as_posix(), (root / "a").as_posix(), "--out", (tmp_path / "o").as_posix(),
                        "--training-scale", "-q")
    assert code == 2 and "no --size" in output and not (tmp_path / "o").exists()


def test_mr_to_ct_cyclegan_keeps_each_domains_range_and_writes_hu_as_float(tmp_path: Path) -> None:
    """Domain A: 16-bit TIFF 'MR' (0..1000); domain B: CT DICOM in HU with its own fixed range. Each side records
    its own mapping; CT out of an MR picture is written as float32 TIFF in HU (a uint16 PNG cannot hold -1000)."""
    from test_intensity import _write_dicom

    mr, ct = tmp_path / "mr", tmp_path / "ct"
    mr.mkdir()
    ct.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        _tiff16(mr / f"mr{i}.tif", rng.integers(0, 1000, (16, 16)))
        _write_dicom(ct / f"ct{i}.dcm", rng.integers(0, 2048, (16, 16)), RescaleSlope=1, RescaleIntercept=-1024,
                     PatientID=f"P{i}")
    run = synthmed.train(mr, target=str(ct), kind="unpaired", recipe="cyclegan", split="all", out=tmp_path / "run",
                         intensity_range=(0, 1000), target_intensity_range=(-1000, 1000), **TRAIN,
                         **{**TINY, "d_layers": 1}).run_dir
    recipe = synthmed.load(run).recipe
    a, b = side_mappings(recipe, "AtoB")
    assert (a.low, a.high, a.unit) == (0.0, 1000.0, "") and (b.low, b.high, b.unit) == (-1000.0, 1000.0, "HU")
    out = synthmed.api.translate(run, mr / "mr0.tif", tmp_path / "ct-out", progress=False, device="cpu")
    written = Image.open(out.outputs[0])
    assert out.outputs[0].suffix == ".tif" and written.mode == "F"
    assert float(np.asarray(written).min()) >= -1000.0 and float(np.asarray(written).max()) <= 1000.0
