"""Bad input found at load time (issue 9): oversized images, non-finite pixels; the run's memory format on load;
the torch version floor."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import synthmed
from synthmed.cli import app
from synthmed.data import load_dataset
from synthmed.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
TINY_ARGS = ["--steps", "2", "--batch-size", "16", "-o", "g_channels=8", "-o", "d_channels=8", "-o", "latent_dim=16",
             "--quiet", "--sample-every", "1000", "--checkpoint-every", "1000"]
TINY = {"steps": 2, "g_channels": 8, "d_channels": 8, "latent_dim": 16, "batch_size": 16, "progress": False,
        "sample_every": 1000, "checkpoint_every": 1000}


def train_cli_fails_cleanly(tmp_path: Path, data: Path, must_name: str) -> str:
    """``synthmed train --data DATA`` ends with exit 2, one stderr line naming ``must_name``, no run directory;
    returns that line."""
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(out), *TINY_ARGS])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("synthmed: error: ") and must_name in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists(), "a run directory was left behind"
    return lines[0]


# ---------------------------------------------------------------- images above PIL's pixel limit


@pytest.mark.parametrize("limit", [1000, 2000], ids=["above-2x-limit-error", "above-limit-warning-only"])
def test_image_above_the_pixel_limit_is_refused_with_its_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              limit: int) -> None:
    # A 30000 x 30000 PNG stands in as a 64 x 48 one (3072 pixels) under a lowered limit: above 2x the limit PIL
    # raises DecompressionBombError, between 1x and 2x it only warns and would decode the image into memory.
    folder = tmp_path / "slides"
    folder.mkdir()
    big = folder / "slide.png"
    Image.fromarray(np.full((48, 64), 128, np.uint8)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    line = train_cli_fails_cleanly(tmp_path, folder, str(big))
    assert "64x48" in line and f"{limit:,}" in line and "MAX_IMAGE_PIXELS" in line


def test_oversized_mask_is_refused_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "seg"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 100 + i, np.uint8)).save(folder / f"case{i}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"case{i}_mask.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "case1_mask.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(DataError) as excinfo:
        load_dataset(folder, split="all")
    message = str(excinfo.value)
    assert "\n" not in message and str(folder / "case1_mask.png") in message and "40x40" in message


# ---------------------------------------------------------------- non-finite pixels


def _float_images(n: int = 40, side: int = 16) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (n, side, side)).astype(np.float32)


def test_npz_with_a_nan_pixel_names_the_file_and_the_image(tmp_path: Path) -> None:
    images = _float_images()
    images[3, 5, 7] = np.nan
    path = tmp_path / "scans.npz"
    np.savez(path, images=images)
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message and "image 3 " in message and "NaN" in message


def test_npz_infinity_reports_the_first_bad_image(tmp_path: Path) -> None:
    images = _float_images(600)  # more than one chunk of the check
    images[400, 0, 0] = np.inf
    images[500, 1, 1] = np.nan
    path = tmp_path / "scans.npz"
    np.savez(path, images=images[:, None])  # (N, C, H, W)
    with pytest.raises(DataError, match=r"image 400 .*infinit"):
        load_dataset(path, split="all")


def test_medmnist_layout_nan_names_the_split(tmp_path: Path) -> None:
    arrays = {f"{s}_images": _float_images(4) for s in ("train", "val", "test")}
    arrays["val_images"][2, 0, 0] = np.nan
    path = tmp_path / "mnist_like.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"image 2 of split 'val'"):
        load_dataset(path, split="val")


def test_npz_nan_through_the_cli_exits_2_without_a_run_directory(tmp_path: Path) -> None:
    images = _float_images()
    images[3, 5, 7] = np.nan
    path = tmp_path / "scans.npz"
    np.savez(path, images=images)
    line = train_cli_fails_cleanly(tmp_path, path, str(path))
    assert "image 3 " in line


def test_float_tiff_folder_with_nan_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "tiffs"
    folder.mkdir()
    for i, image in enumerate(_float_images(4)):
        if i == 2:
            image[3, 3] = np.nan
        Image.fromarray(image).save(folder / f"slice{i}.tif")
    with pytest.raises(DataError) as excinfo:
        load_dataset(folder, split="all")
    message = str(excinfo.value)
    assert "\n" not in message and str(folder / "slice2.tif") in message and "NaN" in message


def test_nifti_nan_voxel_names_the_file_and_the_slice(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    volume = np.random.default_rng(0).uniform(100, 200, (8, 8, 6)).astype(np.float32)
    volume[4, 4, 3] = np.nan  # the percentile range of the whole volume would turn every slice NaN
    path = tmp_path / "case01.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    with pytest.raises(DataError) as excinfo:
        load_dataset(path, split="all")
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message and "slice 3 " in message


def test_dicom_non_finite_rescale_names_the_file(tmp_path: Path) -> None:
    # Float Pixel Data objects are skipped as images without pixel data, so DICOM floats come from the rescale:
    # an invalid RescaleSlope 'NaN' (pydicom reads it, with a warning) makes the stored values NaN.
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    def write(path: Path, slope: str) -> Path:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.SeriesInstanceUID, ds.InstanceNumber = "P1", "1.2.3", int(path.stem[-1])
        ds.Rows, ds.Columns, ds.NumberOfFrames = 4, 4, 2
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, "0"
        ds.PixelData = np.arange(32, dtype=np.uint16).tobytes()
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        return path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: invalid DS value
        write(tmp_path / "slice1.dcm", "1")
        bad = write(tmp_path / "slice2.dcm", "NaN")
        with pytest.raises(DataError) as excinfo:
            load_dataset(tmp_path, split="all")
    message = str(excinfo.value)
    # The series' shared range would turn slice1.dcm NaN too: the file that holds the NaN must be named.
    assert "\n" not in message and str(bad) in message and "frame 0 " in message


# ---------------------------------------------------------------- load(): the trainer's memory format


def _conv_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.dim() == 4]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return synthmed.train(out=tmp_path_factory.mktemp("load") / "run", **TINY).run_dir


def test_load_uses_the_trainers_channels_last_choice(tiny_run: Path) -> None:
    model = synthmed.load(tiny_run)
    for name in ("G", "G_ema"):
        weights = _conv_weights(model.recipe.networks[name])
        assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights), name
        assert not all(w.is_contiguous() for w in weights), name  # really NHWC, not a layout-ambiguous shape
    reference = synthmed.load(tiny_run)
    reference.recipe.networks.to(memory_format=torch.contiguous_format)
    assert all(w.is_contiguous() for w in _conv_weights(reference.recipe.networks["G_ema"]))
    torch.testing.assert_close(model.sample(40, seed=3), reference.sample(40, seed=3), atol=1e-5, rtol=1e-5)


def test_load_keeps_nchw_when_the_run_said_so(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = synthmed.train(out=tmp_path / "nchw", channels_last=False, **TINY).run_dir
    model = synthmed.load(run)
    assert all(w.is_contiguous() for w in _conv_weights(model.recipe.networks["G"]))


# ---------------------------------------------------------------- the torch floor in pyproject.toml

# API the package relies on -> (pattern that finds its use in src/, first torch release that has it).
TORCH_APIS = {
    "torch.is_autocast_enabled(device_type)": (r"torch\.is_autocast_enabled\(\s*['\"]", (2, 4)),
    "torch.optim.Adam(fused=True) on CPU": (r"Adam\([^)]*fused=True", (2, 4)),
    "torch._foreach_lerp_": (r"torch\._foreach_lerp_\(", (2, 0)),
    "torch.nn.utils.parametrizations.spectral_norm": (r"parametrizations import spectral_norm", (1, 10)),
    "torch.nn.utils.parametrize": (r"from torch\.nn\.utils import parametrize", (1, 9)),
    "torch.autocast(device_type=...)": (r"torch\.autocast\(device_type=", (1, 10)),
    "F.interpolate(mode='nearest-exact' / antialias=)": (r"nearest-exact|antialias=", (1, 11)),
    "torch.frombuffer": (r"torch\.frombuffer\(", (1, 10)),
}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.match(r"\d+(?:\.\d+)*", text).group().split("."))  # type: ignore[union-attr]


def test_torch_floor_covers_every_api_the_code_uses() -> None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in dependencies if re.match(r"torch\b", d)]
    floor = _version(re.search(r">=\s*([\d.]+)", spec).group(1))  # type: ignore[union-attr]
    source = "\n".join(p.read_text() for p in sorted((ROOT / "src" / "synthmed").rglob("*.py")))
    for api, (pattern, since) in TORCH_APIS.items():
        assert re.search(pattern, source), f"src/ no longer uses {api}: update TORCH_APIS"
        assert floor >= since, f"{spec!r} allows torch older than {'.'.join(map(str, since))}, which lacks {api}"
    assert _version(torch.__version__) >= floor


@pytest.mark.parametrize("value", ["0.5", "nan"])
def test_ema_warm_up_below_one_is_refused_in_one_line(tmp_path: Path, value: str) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(out), *TINY_ARGS, "--ema-warmup", value])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"synthmed: error: --ema-warmup must be at least 1 (got {float(value)})"], result.stderr
    assert not out.exists(), "a run directory was left behind"


@pytest.mark.parametrize(("options", "batch", "message"), [
    (["-o", "mode_seeking=1"], "1",
     "mode_seeking needs batches of at least 2 samples (got 1); raise --batch-size or set -o mode_seeking=0"),
    (["-o", "pack=4"], "3", "pack=4 needs batches of at least 4 samples (got 3); raise --batch-size or lower -o pack"),
])
def test_a_batch_too_small_for_the_recipes_options_is_refused_before_the_run_directory(
        tmp_path: Path, options: list[str], batch: str, message: str) -> None:
    """Mode seeking compares pairs of samples (the default in session 10, which is how it was found): a batch of one
    used to fail at the first step, after the run directory had been written."""
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(out), *TINY_ARGS, *options, "--batch-size", batch])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"synthmed: error: {message}"], result.stderr
    assert not out.exists(), "a run directory was left behind"


@pytest.mark.parametrize("recipe", ["unconditional", "anomaly"])
def test_mode_seeking_null_is_refused_in_one_line(tmp_path: Path, recipe: str) -> None:
    """Mode seeking has no preset left to resolve ``null`` to (session 11); the anomaly recipe still typed it
    ``float | None`` and crashed with a TypeError."""
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--recipe", recipe, "--out", str(out), *TINY_ARGS, "-o", "mode_seeking=null"])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"synthmed: error: recipe {recipe!r} option mode_seeking: a value is required"], result.stderr
    assert not out.exists(), "a run directory was left behind"
