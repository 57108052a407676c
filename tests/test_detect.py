"""``synthmed detect``: scores, maps and metrics that agree with :mod:`synthmed.metrics.anomaly` on what was written,
the threshold stored with the model is the one applied (a hand-given one overrides; a stale one is recalibrated),
empty-mask images are scored, AnoGAN runs, and bad input is refused in one line with nothing written."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import synthmed
from synthmed import detect as dt
from synthmed.cli import app
from synthmed.data.intensity import IntensityMapping
from synthmed.data.normalize import normalize_images
from synthmed.errors import DataError, SynthmedError
from synthmed.metrics import anomaly as am
from synthmed.recipes.anomaly import AnomalyScores

SIDE = 32
#: Tiny networks, one critic step per generator step: a run of 6 steps takes a second or two.
TINY = {"latent_dim": 16, "g_channels": 8, "d_channels": 8, "n_critic": 1, "gan_steps": 3}
TRAIN = {"steps": 6, "batch_size": 8, "sample_every": 1000, "checkpoint_every": 3, "log_every": 1,
         "device": "cpu", "progress": False, "val_fraction": 0.2}
FEW = ["--method", "anogan", "--anogan-steps", "2"]  # an AnoGAN search short enough for tests

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _brains(n: int, seed: int, side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` dark images with a bright disc (the "brain"); every third carries a brighter blob, its mask 255."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    images, masks = np.zeros((n, side, side), np.uint8), np.zeros((n, side, side), np.uint8)
    brain = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 <= (0.38 * side) ** 2
    for i in range(n):
        image = rng.normal(10, 4, (side, side)) + 120 * brain
        if i % 3 == 0:
            cy, cx = rng.integers(side // 3, 2 * side // 3, 2)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
            image[blob], masks[i] = 250, blob * 255
        images[i] = np.clip(image, 0, 255)
    return images, masks


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    images, masks = _brains(48, seed=0)
    path = tmp_path_factory.mktemp("data") / "brains.npz"
    np.savez(path, images=images, masks=masks, patient=np.repeat([f"P{i:02d}" for i in range(24)], 2))
    return path


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An anomaly run: 3 GAN steps then 3 encoder steps, checkpoints at 3 (GAN phase) and 6."""
    out = tmp_path_factory.mktemp("runs") / "anomaly"
    return synthmed.train(data, recipe="anomaly", out=out, **TRAIN, **TINY).run_dir


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the run per test, so thresholds one test stores are not another's."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _cli(*args: str) -> tuple[int, str]:
    outcome = CliRunner().invoke(app, ["detect", *args])
    return outcome.exit_code, outcome.output


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "scores.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _stored(run: Path, method: str = "fanogan") -> dict:
    return json.loads((run / "anomaly" / f"threshold-{method}.json").read_text())


def _strict(path: Path) -> Any:
    """A JSON file read by a strict parser: NaN, Infinity and -Infinity are not JSON."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{path.name} holds {constant}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_split_writes_scores_maps_and_metrics_that_match_the_metric_functions(run: Path, data: Path) -> None:
    out = run.parent / "out"
    code, output = _cli(run.as_posix(), "--split", "test", "--out", out.as_posix(), "-q")
    assert code == 0, output
    assert "no threshold is stored; calibrating" in output and "image AUROC" in output
    rows, source_masks = _rows(out), np.load(data)["masks"]
    assert len(rows) == 10 and [r["index"] for r in rows] == [str(i) for i in range(10)]  # 5 of 24 patients x 2
    assert all(r["name"].startswith("test_") and r["patient"].startswith("P") for r in rows)
    for r in rows:  # f-AnoGAN: score = residual + kappa * feature (kappa 1), labels from the source's masks
        assert float(r["score"]) == pytest.approx(float(r["residual"]) + float(r["feature"]), rel=1e-6)
        assert int(r["label"]) == int(source_masks[int(r["name"].split("_")[1])].any())
    labels = np.array([int(r["label"]) for r in rows])
    assert 0 < labels.sum() < len(rows)  # empty-mask (normal) images are scored and counted
    report = json.loads((out / "metrics.json").read_text())
    scores = np.array([float(r["score"]) for r in rows])
    assert report["image"] == {**am.image_metrics(scores, labels), "at_threshold": report["image"]["at_threshold"]}
    maps = np.load(out / "maps.npz")
    assert maps["maps"].shape == (10, SIDE, SIDE) and list(maps["names"]) == [r["name"] for r in rows]
    assert np.array_equal(maps["masks"].any(axis=(1, 2)), labels.astype(bool))
    pixel = am.pixel_metrics(maps["maps"], maps["masks"], foreground=maps["foreground"])
    assert {k: report["pixel"][k] for k in pixel} == pixel
    assert pixel["n_images"] == 10 and pixel["n_pixels"] == int(maps["foreground"].sum())
    stored = _stored(run)
    assert report["pixel"]["dice_at_threshold"] == pytest.approx(
        am.dice_at(maps["maps"], maps["masks"], stored["pixel"]["value"], foreground=maps["foreground"]))
    assert report["threshold"]["record"] == stored and report["checkpoint"]["step"] == 6
    assert report["counts"] == {"images": 10, "normal": int((labels == 0).sum()), "anomalous": int(labels.sum()),
                                "with_masks": 10}
    assert "empty" in report["empty_masks"] and report["image"]["auroc"] is not None
    assert len(list((out / "maps").glob("*.png"))) == 10 and len(list((out / "binary").glob("*.png"))) == 10
    assert sorted(p.name for p in (out / "sheets").iterdir()) == ["highest-scores.jpg", "lowest-scores.jpg",
                                                                  "spread.jpg"]


def test_the_stored_threshold_is_the_one_applied_and_a_given_one_overrides(run: Path, data: Path) -> None:
    first = synthmed.api.detect(run, None, run.parent / "a", split="val", progress=False, device="cpu")
    stored = _stored(run)
    assert first.threshold.source == "calibrated" and stored["split"] == "val" and stored["rule"] == "percentile"
    normal = [float(r["score"]) for r in first.rows if r["label"] == 0]
    assert stored["value"] == pytest.approx(am.percentile_threshold(normal, 95.0))  # val images reused, same scores
    assert stored["checkpoint"]["step"] == 6 and stored["counts"]["normal"] == len(normal)
    text = (run / "anomaly" / "threshold-fanogan.json").read_text()
    second = synthmed.api.detect(run, data, run.parent / "b", progress=False, device="cpu")  # an npz input
    assert second.threshold.source == "stored" and not second.notes
    rows = _rows(run.parent / "b")
    assert len(rows) == 48 and rows[3]["name"] == "0003" and rows[3]["patient"] == "P01"
    assert [int(r["decision"]) for r in rows] == [int(float(r["score"]) > stored["value"]) for r in rows]
    given = float(np.median([float(r["score"]) for r in rows]))
    code, output = _cli(run.as_posix(), data.as_posix(), "--out", (run.parent / "c").as_posix(), "--threshold",
                        repr(given), "-q")
    assert code == 0, output
    decided = [int(r["decision"]) for r in _rows(run.parent / "c")]
    assert decided == [int(float(r["score"]) > given) for r in rows] and 0 < sum(decided) < 48
    header = json.loads((run.parent / "c" / "detection.json").read_text())
    assert header["threshold"]["source"] == "given" and header["threshold"]["pixel_value"] == stored["pixel"]["value"]
    assert (run / "anomaly" / "threshold-fanogan.json").read_text() == text  # a given threshold is not stored


def test_a_stale_threshold_is_recalibrated_and_a_labelled_rule_can_be_asked(run: Path) -> None:
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "a").as_posix(), *FEW, "-q")
    assert code == 0 and "no threshold is stored" in output, output
    assert _stored(run, "anogan")["settings"]["anogan"]["steps"] == 2
    early = run / "checkpoints" / "step_00000003.json"  # the GAN phase: AnoGAN needs only G and D
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "b").as_posix(), *FEW,
                        "--checkpoint", early.as_posix(), "-q")
    assert code == 0 and "does not apply" in output and "step_00000006.json (step 6)" in output, output
    record = _stored(run, "anogan")
    assert record["checkpoint"]["file"] == "step_00000003.json" and record["checkpoint"]["step"] == 3
    rows = _rows(run.parent / "b")
    assert [int(r["decision"]) for r in rows] == [int(float(r["score"]) > record["value"]) for r in rows]
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "c").as_posix(), *FEW,
                        "--checkpoint", early.as_posix(), "--smooth", "0", "-q")
    assert code == 0 and "other settings (smooth)" in output, output
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "d").as_posix(), "--recalibrate",
                        "--rule", "youden", "-q")
    assert code == 0 and "--recalibrate" in output, output
    record = _stored(run)
    assert record["rule"] == "youden" and record["pixel"]["rule"] == "best-dice"
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "e").as_posix(), "-q")
    assert code == 0 and "calibrating" not in output, output  # the stored youden threshold applies as it is
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "f").as_posix(), "--rule",
                        "percentile", "--percentile", "90", "-q")
    assert code == 0 and "another rule or percentile" in output, output
    assert _stored(run)["rule"] == "percentile" and _stored(run)["percentile"] == 90.0


def test_a_val_split_a_rule_cannot_use_is_refused_before_scoring() -> None:
    images = torch.zeros(3, 1, 8, 8)
    normal_only = dt.Inputs(images, ["a", "b", "c"], [""] * 3, labels=np.zeros(3, np.int64), source="val")
    with pytest.raises(DataError, match="labelled anomalous images"):
        dt.check_calibration_set(normal_only, "f1")
    dt.check_calibration_set(normal_only, "percentile")
    anomalous_only = dt.Inputs(images, ["a", "b", "c"], [""] * 3, labels=np.ones(3, np.int64), source="val")
    with pytest.raises(DataError, match="no normal images"):
        dt.check_calibration_set(anomalous_only, "percentile")


def test_anogan_scores_are_their_documented_parts_with_progress(run: Path) -> None:
    model = synthmed.load(run, device="cpu")
    inputs = dt.read_split(model, model.recipe, "test")
    settings = dt.Settings("anogan", anogan_steps=2, anogan_lambda=0.25, batch_size=4)
    calls: list[tuple[int, int]] = []
    scored = dt.score_images(model.recipe, inputs.images, settings, lambda done, total: calls.append((done, total)))
    s = scored.scores
    assert torch.allclose(s.score, 0.75 * s.residual + 0.25 * s.feature, rtol=1e-5)
    assert calls[0] == (4, 10) and calls[-1] == (10, 10)  # after each batch of the search
    assert scored.maps.shape == (10, SIDE, SIDE) and not scored.maps[~scored.foreground].any()


def test_foreground_is_the_filled_largest_bright_component() -> None:
    image = torch.full((1, 1, 24, 24), -1.0)
    image[..., 4:20, 4:20] = 0.5
    image[..., 10:14, 10:14] = -1.0  # a dark lesion inside: a hole, filled
    image[..., 0:2, 22:24] = 0.5  # a small bright speck outside: not the largest component
    mask = dt.foreground_mask(image)[0]
    assert mask[4:20, 4:20].all() and mask.sum() == 16 * 16
    assert dt.foreground_mask(torch.zeros(1, 1, 8, 8)).all()  # flat: everything


def test_folders_with_masks_are_matched_by_name_and_resized_with_a_warning(run: Path) -> None:
    images, masks = _brains(4, seed=3, side=40)
    for folder, arrays in (("in", images), ("truth", masks)):
        (run.parent / folder).mkdir()
        for i, array in enumerate(arrays):
            Image.fromarray(array[:, 2:38]).save(run.parent / folder / f"case{i}.png")  # 36 x 40: not square
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = synthmed.api.detect(run, run.parent / "in", run.parent / "out", masks=run.parent / "truth",
                                     threshold=0.5, progress=False, device="cpu")
    resized = [str(w.message) for w in caught if "resized" in str(w.message)]
    assert len(resized) == 1, resized  # one summary, not a warning per file
    assert "4 of 4 images resized from 36x40 px to the model's 32x32 px" in resized[0]
    assert [r["name"] for r in result.rows] == ["case0", "case1", "case2", "case3"]
    assert [r["label"] for r in result.rows] == [1, 0, 0, 1] and result.metrics["pixel"]["n_images"] == 4
    assert result.threshold.source == "given" and result.threshold.pixel is None  # nothing stored, none calibrated
    assert not (run / "anomaly").exists() and not (run.parent / "out" / "binary").exists()


@pytest.mark.filterwarnings("ignore:training on split 'all'")
def test_a_run_without_a_val_split_needs_a_threshold_by_hand(data: Path, tmp_path: Path) -> None:
    run = synthmed.train(data, recipe="anomaly", out=tmp_path / "all", **{**TRAIN, "split": "all", "steps": 4},
                         **TINY).run_dir
    code, output = _cli(run.as_posix(), data.as_posix(), "--out", (tmp_path / "a").as_posix(), "-q")
    assert code == 2 and output.count("\n") == 1 and "no val split" in output and "--threshold" in output, output
    assert not (tmp_path / "a").exists() and not (run / "anomaly").exists()
    code, output = _cli(run.as_posix(), data.as_posix(), "--out", (tmp_path / "b").as_posix(), "--threshold", "0.5",
                        "-q")
    assert code == 0 and len(_rows(tmp_path / "b")) == 48, output


def test_bad_input_is_one_line_exit_2_and_nothing_written(run: Path, data: Path, tmp_path: Path) -> None:
    other = synthmed.train(data, recipe="unconditional", out=tmp_path / "gan", steps=1, batch_size=8,
                           g_channels=8, d_channels=8, latent_dim=8, sample_every=1000, device="cpu",
                           progress=False).run_dir
    Image.fromarray(np.zeros((SIDE, SIDE, 3), np.uint8)).save(tmp_path / "rgb.png")
    images, _ = _brains(2, seed=5)
    np.savez(tmp_path / "rgb.npz", images=np.stack([images] * 3, axis=-1))
    (tmp_path / "pngs").mkdir()
    Image.fromarray(images[0]).save(tmp_path / "pngs" / "a.png")
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.arange(SIDE * SIDE, dtype=np.uint8).reshape(SIDE, SIDE) % 3).save(
        tmp_path / "labels" / "a.png")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    early = (run / "checkpoints" / "step_00000003.json").as_posix()
    cases = {
        "o1": ([other.as_posix(), "--split", "test"], ["is not an anomaly model", "--recipe anomaly"]),
        "o2": ([run.as_posix(), (tmp_path / "rgb.png").as_posix()], ["rgb.png", "3 channels"]),
        "o3": ([run.as_posix(), (tmp_path / "rgb.npz").as_posix()], ["rgb.npz", "3 channel(s)", "trained on 1"]),
        "o4": ([run.as_posix(), (tmp_path / "missing").as_posix()], ["missing", "no such file"]),
        "o5": ([run.as_posix(), data.as_posix(), "--split", "test"], ["INPUT", "--split", "one of them"]),
        "o6": ([run.as_posix()], ["INPUT", "one of them"]),
        "o7": ([run.as_posix(), "--split", "test", "--method", "vae"], ["--method", "fanogan, anogan"]),
        "o8": ([run.as_posix(), "--split", "test", "--checkpoint", early], ["step 3", "GAN phase", "anogan"]),
        "o9": ([run.as_posix(), "--split", "train"], ["--split train", "test or val"]),
        "o10": ([run.as_posix(), "--split", "test", "--rule", "best"], ["--rule", "percentile"]),
        "o11": ([run.as_posix(), (tmp_path / "pngs").as_posix(), "--masks", (tmp_path / "labels").as_posix()],
                ["labels/a.png", "3 labels", "binary"]),
        "o12": ([run.as_posix(), "--split", "test", "--masks", (tmp_path / "labels").as_posix()], ["--masks"]),
        "o13": ([run.as_posix(), "--split", "test", "--threshold", "1", "--recalibrate"], ["choose one"]),
    }
    for name, (args, expected) in cases.items():
        code, output = _cli(*args, "--out", (tmp_path / name).as_posix(), "-q")
        assert code == 2 and output.count("\n") == 1, (name, output)
        assert all(text in output for text in expected), (name, output)
        assert not (tmp_path / name).exists(), name
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (tmp_path / "full").as_posix(), "-q")
    assert code == 2 and output.count("\n") == 1 and "not an empty folder" in output, output
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert not (run / "anomaly").exists()  # refused before any calibration
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]  # no staging folder left behind


# --- review fixes ---------------------------------------------------------------------------------------------------


def test_an_npz_is_read_with_the_runs_recorded_range_whatever_its_dtype(run: Path, data: Path,
                                                                        tmp_path: Path) -> None:
    model = synthmed.load(run, device="cpu")
    arrays = dict(np.load(data))
    wide = tmp_path / "wide.npz"
    np.savez(wide, **{**arrays, "images": arrays["images"].astype(np.uint16)})  # the same values, 16-bit
    narrow = dt.read_npz_input(model, model.recipe, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "12-bit data" guess: the run's 0..255 applies
        read = dt.read_npz_input(model, model.recipe, wide)
    assert torch.equal(read.images, narrow.images)
    expected = IntensityMapping().forward(arrays["images"][:, None])  # the run's recorded 0..255, as folders use
    assert torch.equal(read.images, torch.from_numpy(expected))
    per_image = {**model.recipe.data_info.intensity, "kind": "image_range"}
    model.recipe.data_info = dataclasses.replace(model.recipe.data_info, intensity=per_image)
    with pytest.raises(SynthmedError, match="wide.npz: .*image_range.*cannot") as error:
        dt.read_npz_input(model, model.recipe, wide)
    assert "\n" not in str(error.value)


def test_an_npz_is_normalised_after_resizing_as_the_runs_images_were(data: Path, tmp_path: Path) -> None:
    run = synthmed.train(data, recipe="anomaly", out=tmp_path / "norm", normalize="image", **{**TRAIN, "steps": 4},
                         **TINY).run_dir
    model = synthmed.load(run, device="cpu")
    images, _ = _brains(3, seed=7, side=40)
    path = tmp_path / "big.npz"
    np.savez(path, images=images)
    with pytest.warns(UserWarning, match="3 of 3 images resized"):
        read = dt.read_npz_input(model, model.recipe, path)
    fitted = dt.fit_to_model(torch.from_numpy(IntensityMapping().forward(images[:, None])), SIDE)
    assert torch.allclose(read.images, normalize_images(fitted, "image"), atol=1e-6)  # resized, then normalised


def test_normal_is_what_the_run_trained_on(tmp_path: Path) -> None:
    images, _ = _brains(48, seed=1)
    path = tmp_path / "labelled.npz"
    np.savez(path, images=images, labels=np.array(["a", "b"] * 24), patient=np.repeat(np.arange(24), 2))
    every = synthmed.train(path, recipe="anomaly", out=tmp_path / "every", **{**TRAIN, "steps": 4}, **TINY).run_dir
    code, output = _cli(every.as_posix(), path.as_posix(), "--out", (tmp_path / "a").as_posix(), "--threshold",
                        "0.5", "-q")
    assert code == 0, output
    header = _strict(tmp_path / "a" / "detection.json")  # normal="auto" without masks trained on every image
    assert header["truth"].startswith("none") and "every" in header["truth"] and header["counts"]["normal"] is None
    assert {r["label"] for r in _rows(tmp_path / "a")} == {""} and not (tmp_path / "a" / "metrics.json").exists()
    named = synthmed.train(path, recipe="anomaly", out=tmp_path / "named", normal="b", **{**TRAIN, "steps": 4},
                           **TINY).run_dir
    numbered = tmp_path / "numbered.npz"
    np.savez(numbered, images=images[:6], labels=np.array([0, 1] * 3))  # the run's class indices: a = 0, b = 1
    result = synthmed.api.detect(named, numbered, tmp_path / "b", threshold=0.5, progress=False, device="cpu")
    assert [r["label"] for r in result.rows] == [1, 0] * 3  # class b is normal, as in training
    only_b = tmp_path / "only_b.npz"
    np.savez(only_b, images=images[:2], labels=np.array(["b", "b"]))  # its own class 0 is the run's class b
    result = synthmed.api.detect(named, only_b, tmp_path / "c", threshold=0.5, progress=False, device="cpu")
    assert [r["label"] for r in result.rows] == [0, 0]
    unknown = tmp_path / "unknown.npz"
    np.savez(unknown, images=images[:2], labels=np.array(["b", "c"]))
    code, output = _cli(named.as_posix(), unknown.as_posix(), "--out", (tmp_path / "d").as_posix(), "--threshold",
                        "0.5", "-q")
    assert code == 2 and output.count("\n") == 1 and "'c'" in output and "a, b" in output, output


def test_infinite_thresholds_are_null_with_a_note_and_read_back(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = am.pixel_metrics
    monkeypatch.setattr(am, "labelled_threshold", lambda *args, **kwargs: -math.inf)  # "every image anomalous"
    monkeypatch.setattr(am, "pixel_metrics", lambda *args, **kwargs: {**real(*args, **kwargs),
                                                                       "best_dice_threshold": -math.inf})
    out = run.parent / "a"
    first = synthmed.api.detect(run, None, out, split="test", rule="f1", progress=False, device="cpu")
    stored = _strict(run / "anomaly" / "threshold-fanogan.json")
    assert stored["value"] is None and "every image anomalous" in stored["note"]
    assert stored["pixel"]["value"] is None and "every pixel anomalous" in stored["pixel"]["note"]
    header, report = _strict(out / "detection.json"), _strict(out / "metrics.json")
    assert header["threshold"]["value"] is None and "every image anomalous" in header["threshold"]["note"]
    assert report["threshold"] == header["threshold"]
    assert {r["decision"] for r in first.rows} == {1}
    monkeypatch.undo()
    again = synthmed.api.detect(run, None, run.parent / "b", split="test", progress=False, device="cpu")
    assert again.threshold.source == "stored" and again.threshold.value == -math.inf
    assert again.threshold.pixel == -math.inf and {r["decision"] for r in again.rows} == {1}
    assert np.load(run.parent / "b" / "maps.npz")["maps"].size and all(
        (run.parent / "b" / "binary" / f"{r['name']}.png").is_file() for r in again.rows)


def test_a_val_split_without_lesion_pixels_in_the_foreground_falls_back_to_the_percentile() -> None:
    rng = np.random.default_rng(0)
    foreground = np.zeros((4, 8, 8), bool)
    foreground[:, 2:6, 2:6] = True
    masks = np.zeros((4, 8, 8), bool)
    masks[0, 0, 0] = True  # the only lesion pixel lies outside the body
    maps = (rng.random((4, 8, 8)) * foreground).astype(np.float32)
    images = torch.zeros(4, 1, 8, 8)
    val = dt.Inputs(images, list("abcd"), [""] * 4, masks=masks, labels=np.array([1, 0, 0, 0]), source="val")
    scores = AnomalyScores(torch.tensor([4.0, 1.0, 2.0, 3.0]), torch.zeros(4), torch.zeros(4), images)
    found = dt.calibrate(val, dt.Scored(scores, maps, foreground), dt.Calibration("youden"))
    assert found["pixel"]["rule"] == "percentile" and "foreground" in found["pixel"]["note"]
    assert found["pixel"]["value"] == pytest.approx(am.percentile_threshold(maps[1:][foreground[1:]], 99.0))


def test_the_foreground_level_is_an_option_and_part_of_the_identity(run: Path) -> None:
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "a").as_posix(), "-q")
    assert code == 0 and _stored(run)["settings"]["foreground_level"] == 0.1, output
    assert not np.load(run.parent / "a" / "maps.npz")["foreground"].all()
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "b").as_posix(),
                        "--foreground-level", "0", "-q")
    assert code == 0 and "other settings (foreground_level)" in output, output
    assert np.load(run.parent / "b" / "maps.npz")["foreground"].all()  # 0: the whole image
    assert _stored(run)["settings"]["foreground_level"] == 0.0
    assert "whole image" in _strict(run.parent / "b" / "detection.json")["foreground"]
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "c").as_posix(),
                        "--foreground-level", "1", "-q")
    assert code == 2 and output.count("\n") == 1 and "--foreground-level" in output, output
    # The AnoGAN batch size is not part of the identity: scores do not depend on it.
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "d").as_posix(), *FEW,
                        "--batch-size", "3", "-q")
    assert code == 0 and "calibrating" in output, output
    code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "e").as_posix(), *FEW,
                        "--batch-size", "4", "-q")
    assert code == 0 and "calibrating" not in output, output
    first, second = _rows(run.parent / "d"), _rows(run.parent / "e")
    assert [float(r["score"]) for r in first] == pytest.approx([float(r["score"]) for r in second], rel=1e-5)


def test_a_read_only_run_folder_is_one_line_naming_it(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:  # root writes into read-only folders: make the write fail as it would for a user
        def refuse(path: Path, text: str) -> None:
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(dt, "atomic_write_text", refuse)
    else:
        run.chmod(0o555)
    try:
        code, output = _cli(run.as_posix(), "--split", "test", "--out", (run.parent / "a").as_posix(), "-q")
    finally:
        run.chmod(0o755)
    error = output.strip().splitlines()[-1]  # after the note that calibration began
    assert code == 2 and "Traceback" not in output and error.startswith("synthmed: error:"), output
    assert f"{run / 'anomaly'}: cannot store" in error and "--threshold" in error
    assert not (run.parent / "a").exists()


def test_best_from_the_gan_phase_says_it_was_chosen_by_fid(run: Path) -> None:
    from synthmed.training.periodic_eval import copy_as_best

    copy_as_best(run / "checkpoints" / "step_00000003.json")
    code, output = _cli(run.as_posix(), "--split", "test", "--checkpoint", "best", "--out",
                        (run.parent / "a").as_posix(), "-q")
    assert code == 2 and output.count("\n") == 1, output
    assert all(text in output for text in ("best", "FID", "GAN phase", "encoder", "latest")), output


def test_an_empty_folder_is_refused_in_detections_words(run: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, output = _cli(run.as_posix(), (tmp_path / "empty").as_posix(), "--out", (tmp_path / "a").as_posix(), "-q")
    assert code == 2 and output.count("\n") == 1 and "contains no images" in output, output
    assert "translate" not in output


def test_a_run_with_an_empty_val_split_needs_a_threshold_by_hand(data: Path, tmp_path: Path) -> None:
    run = synthmed.train(data, recipe="anomaly", out=tmp_path / "noval", **{**TRAIN, "val_fraction": 0.0, "steps": 4},
                         **TINY).run_dir
    code, output = _cli(run.as_posix(), data.as_posix(), "--out", (tmp_path / "a").as_posix(), "-q")
    assert code == 2 and output.count("\n") == 1, output
    assert "val split is empty" in output and "--threshold" in output and "split='all'" not in output, output
    assert not (tmp_path / "a").exists()
