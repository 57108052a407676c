"""The data option ``normalize``: per-patient / per-image percentile normalisation (Buda et al. 2019), recorded in
``DataInfo.intensity``, and applied to files by ``synthmed segment`` as the run's images were normalised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import synthmed
from synthmed.cli import app
from synthmed.data import load_dataset, load_training_set
from synthmed.data.intensity import ImageFile, IntensityMapping, mapping_from_info, normalize_files
from synthmed.data.normalize import normalize_images
from synthmed.errors import ConfigError
from synthmed.training.config import DataConfig, RunConfig

SIDE = 16


def _pattern(seed: int, top: float) -> np.ndarray:
    """(SIDE, SIDE) values spread over 0..top."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, top, (SIDE, SIDE))


def _npz(path: Path, images: np.ndarray, patients: list[str]) -> Path:
    masks = (images[..., 0] if images.ndim == 4 else images) > 40
    np.savez(path, images=images.astype(np.uint8), masks=masks.astype(np.uint8) * 255, patient=np.asarray(patients))
    return path


def _load(path: Path, mode: str, **options: object) -> object:
    return load_dataset(path, split="all", normalize=mode, **options)


def test_two_patients_on_different_scales_end_up_alike_per_channel(tmp_path: Path) -> None:
    base = np.rint(np.stack([np.stack([_pattern(i, 60), _pattern(10 + i, 20)], axis=-1) for i in range(3)]))
    images = np.concatenate([base, base * 3])  # 3 slices each; patient B: every channel 3x brighter
    path = _npz(tmp_path / "two.npz", images, ["A"] * 3 + ["B"] * 3)
    ds = _load(path, "patient")
    a, b = ds.images[:3], ds.images[3:]
    assert torch.allclose(a, b, atol=1e-5)
    for c in range(2):  # each channel by its own percentiles: it spans [-1, 1]
        assert ds.images[:, c].min() == -1.0 and ds.images[:, c].max() == 1.0
    plain = _load(path, "none")
    assert not torch.allclose(plain.images[:3], plain.images[3:], atol=0.1)
    assert torch.equal(ds.masks, plain.masks)  # masks untouched


def test_first_and_99th_percentile_clipping_on_a_hand_case(tmp_path: Path) -> None:
    values = np.arange(256, dtype=np.float64).reshape(SIDE, SIDE)  # 0..255
    path = _npz(tmp_path / "hand.npz", values[None], ["P"])
    low, high = np.percentile(values, [1, 99])  # 2.55, 252.45
    assert (low, high) == pytest.approx((2.55, 252.45))
    expected = np.clip(2 * (values - low) / (high - low) - 1, -1, 1)
    got = _load(path, "patient").images[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got[0, 0] == -1.0 and got[0, 1] == -1.0 and got[-1, -1] == 1.0  # 0, 1 and 255 clipped


def test_constant_patient_maps_to_minus_one_without_nan(tmp_path: Path) -> None:
    images = np.stack([np.full((SIDE, SIDE), 7.0), np.full((SIDE, SIDE), 7.0), _pattern(1, 200)])
    ds = _load(_npz(tmp_path / "flat.npz", np.rint(images), ["C", "C", "D"]), "patient")
    assert torch.isfinite(ds.images).all()
    assert torch.equal(ds.images[:2], torch.full_like(ds.images[:2], -1.0))
    assert ds.images[2].max() == 1.0
    black = normalize_images(torch.zeros(1, 1, 4, 4), "image")
    assert torch.equal(black, torch.full_like(black, -1.0))


def test_image_mode_normalises_each_slice(tmp_path: Path) -> None:
    bright = np.rint(_pattern(3, 200)) // 2 * 2
    images = np.stack([bright, bright / 2])  # one patient: a slice and its half as bright copy
    path = _npz(tmp_path / "slices.npz", images, ["P", "P"])
    per_image = _load(path, "image").images
    assert torch.allclose(per_image[0], per_image[1], atol=1e-5)
    per_patient = _load(path, "patient").images
    assert not torch.allclose(per_patient[0], per_patient[1], atol=0.1)  # the patient's range is the bright one's


def test_recorded_in_data_info_and_a_run_config_round_trips(tmp_path: Path) -> None:
    path = _npz(tmp_path / "rec.npz", np.rint(np.stack([_pattern(i, 90) for i in range(4)])), ["A", "A", "B", "B"])
    ds = _load(path, "patient")
    mapping = mapping_from_info(ds.info)
    assert mapping is not None and mapping.normalize == "patient" and mapping.kind == "fixed"
    assert mapping.normalize_percentiles == (1.0, 99.0) and mapping.data_range is None
    assert IntensityMapping.from_dict(mapping.to_dict()) == mapping
    assert "normalize" not in _load(path, "none").info.intensity or \
        _load(path, "none").info.intensity.get("normalize", "none") == "none"
    paired = load_training_set(path, pair="image:mask", split="all", normalize="image")
    assert paired.info.intensity["normalize"] == "image" and paired.info.target_intensity["kind"] == "mask"
    config = RunConfig(data=DataConfig(source=str(path), normalize="patient"))
    again = RunConfig.from_dict(config.to_dict())
    assert again.data.normalize == "patient" and again.data.loader_options()["normalize"] == "patient"
    with pytest.raises(ConfigError, match="normalize"):
        DataConfig(normalize="bogus")
    with pytest.raises(ConfigError, match="normalize"):
        load_dataset(path, normalize="volume")


def test_cli_refuses_a_bad_value_in_one_line(tmp_path: Path) -> None:
    path = _npz(tmp_path / "cli.npz", np.rint(np.stack([_pattern(i, 90) for i in range(4)])), ["A", "A", "B", "B"])
    outcome = CliRunner().invoke(app, ["train", "--data", str(path), "--normalize", "bogus", "--steps", "1",
                                       "--out", str(tmp_path / "run")])
    assert outcome.exit_code == 2
    lines = outcome.output.strip().splitlines()
    assert len(lines) == 1 and "normalize" in lines[0] and "bogus" in lines[0]
    assert not (tmp_path / "run").exists()


def test_files_in_one_sub_folder_are_one_patient() -> None:
    mapping = IntensityMapping(normalize="patient")
    bright = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    files = [ImageFile(Path(f"{n}.png"), x.clone(), "png", "uint8", 0.0, 255.0) for n, x in
             (("a", bright), ("b", bright * 0.5 - 0.5), ("c", bright * 0.5 - 0.5))]
    normalize_files(files, mapping, ["p1", "p1", "c"])
    assert files[0].images.max() == 1.0 and files[1].images.max() < 0.5  # b shares a's range
    assert files[2].images.min() == -1.0 and files[2].images.max() == 1.0  # c on its own
    q1, q99 = np.percentile((bright * 0.5 - 0.5).numpy(), [1, 99])  # c's range, back in stored values 0..255
    assert (files[2].low, files[2].high) == pytest.approx(((q1 + 1) * 127.5, (q99 + 1) * 127.5))
    assert np.asarray(files[2].geometry["ranges"]).shape == (1, 1, 2)


def _discs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark noisy images (even values) with a brighter disc, and the discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    images, masks = np.zeros((n, 32, 32), np.uint8), np.zeros((n, 32, 32), np.uint8)
    for i in range(n):
        cy, cx = rng.integers(10, 22, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
        images[i] = np.clip(rng.normal(40, 10, (32, 32)) + 80 * disc, 0, 250).astype(np.uint8) // 2 * 2
        masks[i] = disc * 255
    return images, masks


@pytest.fixture(scope="module")
def patient_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("norm")
    images, masks = _discs(16, seed=0)
    np.savez(root / "discs.npz", images=images, masks=masks, patient=np.repeat([f"P{i}" for i in range(8)], 2))
    return synthmed.train(root / "discs.npz", pair="image:mask", recipe="unet", normalize="patient",
                          out=root / "run", steps=2, batch_size=4, base_channels=4, device="cpu", progress=False,
                          sample_every=1000, checkpoint_every=1000, ema_beta=0.0, log_every=1).run_dir


def test_segment_normalises_each_file_and_the_split(tmp_path: Path, patient_run: Path) -> None:
    images, _ = _discs(2, seed=9)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(images[0]).save(inputs / "a.png")
    Image.fromarray(images[0] // 2).save(inputs / "a_half.png")  # stored values x 0.5 (exact: even values)
    Image.fromarray(images[1]).save(inputs / "b.png")
    from synthmed.data.intensity import read_image_file

    mapping = IntensityMapping(normalize="patient")
    read = [read_image_file(inputs / name, mapping, channels=1) for name in ("a.png", "a_half.png")]
    normalize_files(read, mapping)
    assert torch.allclose(read[0].images, read[1].images, atol=1e-5)
    result = synthmed.api.segment(patient_run, inputs, tmp_path / "out", progress=False, device="cpu")
    written = {p.name: np.asarray(Image.open(p)) for p in result.outputs}
    assert set(written) == {"a.png", "a_half.png", "b.png"}
    np.testing.assert_array_equal(written["a.png"], written["a_half.png"])
    split = CliRunner().invoke(app, ["segment", str(patient_run), "--split", "test", "--out", str(tmp_path / "split"),
                                     "-q"])
    assert split.exit_code == 0, split.output
    assert (tmp_path / "split" / "metrics.json").is_file()
