"""Intensity round trips for image translation: every source records how its stored values became [-1, 1]
(``DataInfo.intensity``), and a new file is read that way and written back in its units, bit depth and geometry."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthmed.data import DataInfo, load_dataset
from synthmed.data.intensity import (
    KINDS,
    IntensityMapping,
    mapping_from_info,
    read_image_file,
    write_image_file,
)
from synthmed.data.paired import load_paired, load_unpaired
from synthmed.errors import ConfigError, DataError
from test_data import write_dicom

RNG = np.random.default_rng(7)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _round_trip(path: Path, mapping: IntensityMapping, out: Path, **read: object) -> Path:
    """Read ``path`` with ``mapping``, map the model values back to units and write them like the input."""
    file = read_image_file(path, mapping, **read)
    return write_image_file(out, mapping.inverse(file.images.numpy(), file.low, file.high), file)


# ------------------------------------------------------------------------------------------ the mapping


@pytest.mark.parametrize("kind", KINDS)
def test_forward_inverse_round_trip_for_each_kind(kind: str) -> None:
    mapping = IntensityMapping(kind, low=-1000.0, high=3000.0, dtype="int16", unit="HU")
    if kind == "mask":
        values, limits = np.array([0.0, 1.0, 1.0, 0.0]), {}
    elif kind == "fixed":
        values, limits = np.linspace(-1000, 3000, 41), {}
    else:  # per-image kinds need the image's own range
        values, limits = np.linspace(-50, 70, 41), {"low": -50.0, "high": 70.0}
    x = mapping.forward(values, **limits)
    assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    back = mapping.inverse(x, **limits)
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, values, atol=1e-3 * (np.ptp(values) or 1))
    if kind in ("image_range", "volume_percentiles", "file_window"):
        assert mapping.data_range is None
        with pytest.raises(ConfigError, match="per image"):
            mapping.forward(values)
    assert IntensityMapping.from_dict(json.loads(json.dumps(mapping.to_dict()))) == mapping


def test_fixed_clips_outside_the_range_and_mirrored_range() -> None:
    mapping = IntensityMapping("fixed", -160.0, 239.0, dtype="uint16", unit="HU")
    assert mapping.data_range == 399.0
    values = np.array([-1024.0, -160.0, 40.0, 239.0, 3000.0])
    np.testing.assert_allclose(mapping.inverse(mapping.forward(values)), np.clip(values, -160, 239), atol=1e-4)
    # low > high: the same map mirrored (MONOCHROME1); its inverse undoes it.
    mirrored = mapping.forward(values, 239.0, -160.0)
    np.testing.assert_allclose(mirrored, -mapping.forward(values), atol=1e-6)
    np.testing.assert_allclose(mapping.inverse(mirrored, 239.0, -160.0), np.clip(values, -160, 239), atol=1e-4)


def test_mapping_dict_and_unknown_kind() -> None:
    mapping = IntensityMapping("volume_percentiles", percentiles=(1, 99), dtype="float32")
    data = mapping.to_dict()
    assert data == {"kind": "volume_percentiles", "low": 0.0, "high": 255.0, "percentiles": [1.0, 99.0],
                    "dtype": "float32", "unit": ""}
    assert IntensityMapping.from_dict({"kind": "fixed", "high": 4095, "dtype": "uint16"}) == IntensityMapping(
        "fixed", 0.0, 4095.0, dtype="uint16")
    with pytest.raises(ConfigError, match="unknown intensity mapping kind"):
        IntensityMapping.from_dict({"kind": "gamma"})


def test_datainfo_intensity_round_trip_and_old_configs() -> None:
    image = IntensityMapping("fixed", 0, 4095, dtype="uint16").to_dict()
    info = DataInfo(source="a/", channels=1, height=8, width=8, kind="paired", target_channels=1,
                    target_is_mask=True, intensity=image, target_intensity=IntensityMapping("mask").to_dict())
    data = json.loads(json.dumps(info.to_dict()))  # as a run config stores it
    assert data["intensity"]["high"] == 4095.0 and data["target_intensity"]["kind"] == "mask"
    read = DataInfo.from_dict(data)
    assert read == info and hash(read) == hash(info)  # the dicts take no part in the hash
    assert mapping_from_info(read) == IntensityMapping("fixed", 0, 4095, dtype="uint16")
    assert mapping_from_info(read, target=True).kind == "mask"
    old = {"source": "x.npz", "channels": 1, "height": 28, "width": 28, "num_classes": 2,
           "class_names": ["a", "b"], "split": "train", "channel_names": [], "attribution": ""}
    old_info = DataInfo.from_dict(old)
    assert old_info.intensity == {} and old_info.target_intensity == {} and mapping_from_info(old_info) is None


# ----------------------------------------------------------------------------------------- image files


def test_16bit_tiff_folder_records_its_range_and_round_trips(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(RNG.integers(0, 4001, (12, 12)).astype(np.uint16)).save(folder / f"s{i}.tif")
    Image.fromarray(np.full((12, 12), 4000, np.uint16)).save(folder / "peak.tif")
    with pytest.warns(UserWarning, match="12-bit"):
        ds = load_dataset(folder, split="all")
    assert ds.info.intensity == IntensityMapping("fixed", 0.0, 4000.0, dtype="uint16").to_dict()

    mapping = mapping_from_info(ds.info)
    new = RNG.integers(0, 4001, (10, 14)).astype(np.uint16)
    Image.fromarray(new).save(tmp_path / "new.tif")
    file = read_image_file(tmp_path / "new.tif", mapping, channels=1)
    assert file.format == "tiff" and file.dtype == "uint16" and (file.low, file.high) == (0.0, 4000.0)
    assert file.images.shape == (1, 1, 10, 14) and file.images.dtype == torch.float32
    np.testing.assert_array_equal(file.values[0, 0], new)
    out = _round_trip(tmp_path / "new.tif", mapping, tmp_path / "out" / "new")
    assert out == tmp_path / "out" / "new.tif"
    with Image.open(out) as img:
        assert img.mode.startswith("I;16")
        back = np.asarray(img)
    assert back.dtype == np.uint16 and np.abs(back.astype(int) - new.astype(int)).max() <= 1
    assert [p.name for p in out.parent.iterdir()] == ["new.tif"]  # no temporary file left behind


def test_16bit_png_and_8bit_rgb_png_round_trip(tmp_path: Path) -> None:
    grey = RNG.integers(0, 65536, (9, 11)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    mapping = IntensityMapping("fixed", 0.0, 65535.0, dtype="uint16")
    out = _round_trip(tmp_path / "grey.png", mapping, tmp_path / "out" / "grey.png")  # suffix replaced
    assert out.name == "grey.png"
    with Image.open(out) as img:
        back = np.asarray(img).astype(int)
    assert np.abs(back - grey.astype(int)).max() <= 1

    rgb = RNG.integers(0, 256, (9, 11, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = _round_trip(tmp_path / "rgb.png", IntensityMapping(), tmp_path / "out" / "rgb", channels=3)
    with Image.open(out) as img:
        assert img.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(img), rgb)


def test_jpeg_writes_png_and_float_tiff_keeps_float(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, (8, 8)).astype(np.uint8)).save(tmp_path / "a.jpg")
    file = read_image_file(tmp_path / "a.jpg", IntensityMapping(), channels=1)
    out = write_image_file(tmp_path / "a", IntensityMapping().inverse(file.images.numpy()), file)
    with Image.open(out) as img:
        assert out.suffix == ".png" and img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), file.values[0, 0])  # the decoded JPEG, exactly

    values = RNG.normal(0, 50, (8, 8)).astype(np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    mapping = IntensityMapping("image_range", dtype="float32")
    file = read_image_file(tmp_path / "f.tif", mapping)
    assert (file.low, file.high) == (float(values.min()), float(values.max()))
    out = _round_trip(tmp_path / "f.tif", mapping, tmp_path / "f_out")
    with Image.open(out) as img:
        assert img.mode == "F"
        np.testing.assert_allclose(np.asarray(img), values, atol=1e-4)


def test_channel_mismatch_names_the_file_and_both_counts(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, (6, 6, 3)).astype(np.uint8)).save(tmp_path / "colour.png")
    Image.fromarray(RNG.integers(0, 256, (6, 6)).astype(np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(DataError) as exc:
        read_image_file(tmp_path / "colour.png", IntensityMapping(), channels=1)
    assert _one_line(exc) == (f"{tmp_path / 'colour.png'}: has 3 channels (RGB) but the run was trained on "
                              "1-channel images")
    with pytest.raises(DataError) as exc:
        read_image_file(tmp_path / "grey.png", IntensityMapping(), channels=3)
    assert _one_line(exc) == (f"{tmp_path / 'grey.png'}: has 1 channel (grey) but the run was trained on "
                              "3-channel images")


def test_mask_mapping_reads_binary_and_writes_0_255(tmp_path: Path) -> None:
    mask = (RNG.random((7, 9)) > 0.5).astype(np.uint8) * 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    mapping = IntensityMapping("mask")
    file = read_image_file(tmp_path / "m.png", mapping, channels=1)
    np.testing.assert_array_equal(file.images[0, 0].numpy(), np.where(mask > 0, 1.0, -1.0))
    out = write_image_file(tmp_path / "m_out", mapping.inverse(file.images.numpy()), file, is_mask_probability=True)
    with Image.open(out) as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), mask)


# -------------------------------------------------------------------------------------------------- DICOM


def _write_dicom(path: Path, stored: np.ndarray, **attributes: object) -> Path:
    """A one-frame 16-bit grey CT DICOM file (tests/test_data.py's writer with Modality CT)."""
    return write_dicom(path, stored, **{"Modality": "CT", **attributes})


def test_dicom_window_in_hu_round_trips_through_png_and_sidecar(tmp_path: Path) -> None:
    from synthmed.data.dicom import load_dicom

    folder = tmp_path / "ct"
    folder.mkdir()
    hu = RNG.integers(-1024, 1500, (3, 8, 8))
    for i, plane in enumerate(hu):
        _write_dicom(folder / f"{i}.dcm", plane + 1024, RescaleSlope=1, RescaleIntercept=-1024, InstanceNumber=i)
    ds = load_dicom(folder, window=(40, 400), split="all")
    # The DICOM LINEAR window actually applied: [c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2] = [-160, 239].
    assert ds.info.intensity == IntensityMapping("fixed", -160.0, 239.0, dtype="uint16", unit="HU").to_dict()
    mapping = mapping_from_info(ds.info)

    file = read_image_file(folder / "0.dcm", mapping, channels=1)
    assert file.format == "dicom" and file.unit == "HU" and file.dtype == "uint16"
    assert file.geometry["slope"] == 1.0 and file.geometry["intercept"] == -1024.0
    np.testing.assert_array_equal(file.values[0, 0], hu[0])  # values in HU
    torch.testing.assert_close(file.images[0], ds.images[0])  # read exactly as the loader read it

    out = _round_trip(folder / "0.dcm", mapping, tmp_path / "out" / "ct0")
    assert out.name == "ct0.png"
    sidecar = json.loads((tmp_path / "out" / "ct0.json").read_text())
    assert {k: sidecar[k] for k in ("unit", "slope", "intercept", "offset")} == {
        "unit": "HU", "slope": 1.0, "intercept": -1024.0, "offset": 0}
    with Image.open(out) as img:
        assert img.mode.startswith("I;16")
        stored = np.asarray(img).astype(np.float64)
    decoded = (stored - sidecar["offset"]) * sidecar["slope"] + sidecar["intercept"]
    # Inside the window the HU come back (within 1 HU); outside they are clipped at the window's edges.
    assert np.abs(decoded - np.clip(hu[0], -160, 239)).max() <= 1


def test_dicom_monochrome1_and_stated_range(tmp_path: Path) -> None:
    from synthmed.data.dicom import load_dicom

    hu = RNG.integers(-200, 300, (6, 6))
    path = _write_dicom(tmp_path / "m1.dcm", hu + 1024, RescaleSlope=1, RescaleIntercept=-1024,
                        PhotometricInterpretation="MONOCHROME1", WindowCenter=40, WindowWidth=400)
    ds = load_dataset(path, split="all")
    assert ds.info.intensity["kind"] == "file_window" and ds.info.intensity["unit"] == "HU"
    file = read_image_file(path, mapping_from_info(ds.info))
    assert (file.low, file.high) == (239.0, -160.0)  # mirrored: MONOCHROME1 is inverted as the loader does
    torch.testing.assert_close(file.images[0], ds.images[0])
    units = mapping_from_info(ds.info).inverse(file.images.numpy(), file.low, file.high)
    assert np.abs(units[0, 0] - np.clip(hu, -160, 239)).max() < 1e-3

    stated = load_dataset(path, split="all", intensity_range=(-1000, 1000))
    assert stated.info.intensity == IntensityMapping("fixed", -1000.0, 1000.0, dtype="uint16", unit="HU").to_dict()
    with pytest.raises(ConfigError) as exc:
        load_dicom(path, window=(40, 400), intensity_range=(-1000, 1000))
    assert "give one" in _one_line(exc)


def test_signed_dicom_is_stored_with_an_offset(tmp_path: Path) -> None:
    hu = RNG.integers(-1024, 1000, (5, 5))
    path = _write_dicom(tmp_path / "s.dcm", hu, PixelRepresentation=1)  # int16 stored values, intercept 0
    mapping = IntensityMapping("image_range", dtype="int16", unit="HU")
    file = read_image_file(path, mapping)
    assert file.dtype == "int16" and (file.low, file.high) == (float(hu.min()), float(hu.max()))
    out = _round_trip(path, mapping, tmp_path / "s_out")
    sidecar = json.loads((tmp_path / "s_out.json").read_text())
    assert sidecar["offset"] == 32768
    with Image.open(out) as img:
        decoded = (np.asarray(img).astype(np.float64) - 32768) * sidecar["slope"] + sidecar["intercept"]
    assert np.abs(decoded - hu).max() <= 1


def test_write_refuses_an_output_of_another_size(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, (6, 8)).astype(np.uint8)).save(tmp_path / "a.png")
    file = read_image_file(tmp_path / "a.png", IntensityMapping())
    with pytest.raises(DataError) as exc:
        write_image_file(tmp_path / "b", np.zeros((1, 1, 4, 4)), file)
    assert "bring it back to the file's slices and size" in _one_line(exc)
    assert not list(tmp_path.glob("b*"))


# -------------------------------------------------------------------------------------------------- NIfTI


def test_nifti_slices_every_plane_and_rebuilds_the_canonical_volume(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    volume = RNG.normal(100, 30, (6, 7, 5)).astype(np.float32)
    volume[:, :, 0] = 0  # an empty slice: skipped by the loader, kept for the rebuild
    affine = np.array([[0, 2.0, 0, 10], [-1.5, 0, 0, -20], [0, 0, 3.0, 5], [0, 0, 0, 1]])  # axes swapped, flipped
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    ds = load_dataset(path, split="all")
    assert ds.info.intensity == IntensityMapping("volume_percentiles", percentiles=(0.5, 99.5),
                                                 dtype="float32").to_dict()
    mapping = mapping_from_info(ds.info)
    canonical = nib.as_closest_canonical(nib.load(path))
    data = canonical.get_fdata(dtype=np.float32)
    low, high = np.percentile(data, (0.5, 99.5))
    for axis in (-1, 0, 1):
        file = read_image_file(path, mapping, axis=axis, channels=1)
        assert file.images.shape[0] == data.shape[axis]  # every slice, empty ones too
        assert file.geometry["shape"] == list(data.shape)
        assert (file.low, file.high) == pytest.approx((low, high))
        out = _round_trip(path, mapping, tmp_path / f"out_{axis}")
        back = nib.load(out)
        assert out.name == f"out_{axis}.nii.gz"
        np.testing.assert_allclose(back.affine, canonical.affine)
        np.testing.assert_allclose(back.get_fdata(), np.clip(data, low, high), atol=1e-3)
    # The loader's non-empty slices are the file's slices of the same index (centre-cropped to a square).
    file = read_image_file(path, mapping)
    index = [meta["slice"] for meta in ds.meta]
    side = ds.images.shape[-1]
    left = (file.images.shape[-1] - side) // 2
    torch.testing.assert_close(file.images[index, :, :side, left:left + side], ds.images)


def test_nifti_stated_range_is_fixed(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(RNG.integers(-1000, 2000, (5, 5, 3)).astype(np.int16), np.eye(4)), path)
    ds = load_dataset(path, split="all", intensity_range=(-1000, 1000))
    assert ds.info.intensity == IntensityMapping("fixed", -1000.0, 1000.0, dtype="int16").to_dict()
    file = read_image_file(path, mapping_from_info(ds.info))
    out = write_image_file(tmp_path / "o", mapping_from_info(ds.info).inverse(file.images.numpy(), file.low,
                                                                              file.high), file)
    assert nib.load(out).get_data_dtype() == np.int16  # an unscaled integer source keeps its dtype


# --------------------------------------------------------------------------------- other sources, options


def test_npz_medmnist_and_8bit_folders_record_their_mapping(tmp_path: Path) -> None:
    assert load_dataset(split="val").info.intensity == IntensityMapping(dtype="uint8").to_dict()
    images = RNG.integers(-1024, 2000, (6, 8, 8)).astype(np.int16)
    np.savez(tmp_path / "ct.npz", images=images)
    info = load_dataset(tmp_path / "ct.npz", split="all").info
    assert info.intensity == IntensityMapping("fixed", float(images.min()), float(images.max()),
                                              dtype="int16").to_dict()
    stated = load_dataset(tmp_path / "ct.npz", split="all", intensity_range=(-1000, 1000)).info
    assert (stated.intensity["low"], stated.intensity["high"]) == (-1000.0, 1000.0)
    with pytest.raises(ConfigError) as exc:
        load_dataset(intensity_range=(0, 100))
    assert "MedMNIST" in _one_line(exc)
    folder = tmp_path / "eight"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(RNG.integers(0, 256, (8, 8)).astype(np.uint8)).save(folder / f"{i}.png")
    assert load_dataset(folder, split="all").info.intensity == IntensityMapping(dtype="uint8").to_dict()
    with pytest.raises(ConfigError) as exc:
        load_dataset(folder, split="all", intensity_range=(0, 100))
    assert "8-bit" in _one_line(exc)


def test_stated_range_for_a_16bit_folder(tmp_path: Path) -> None:
    for i in range(3):
        Image.fromarray(RNG.integers(0, 3000, (8, 8)).astype(np.uint16)).save(tmp_path / f"{i}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stated range: no guessing of the bit depth, no warning
        ds = load_dataset(tmp_path, split="all", intensity_range=(0, 4095))
    assert ds.info.intensity == IntensityMapping("fixed", 0.0, 4095.0, dtype="uint16").to_dict()
    with Image.open(tmp_path / "0.png") as img:
        first = np.asarray(img).astype(np.float32)
    torch.testing.assert_close(ds.images[0, 0], torch.from_numpy(first / 4095 * 2 - 1))


def test_paired_folders_record_image_and_mask_mappings(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(4):
        Image.fromarray(RNG.integers(0, 256, (8, 8)).astype(np.uint8)).save(images / f"{i}.png")
        Image.fromarray((RNG.random((8, 8)) > 0.5).astype(np.uint8) * 255).save(masks / f"{i}.png")
    ds = load_paired(images, target=masks, split="all")
    assert ds.info.target_is_mask
    assert ds.info.intensity == IntensityMapping("fixed", 0.0, 255.0, dtype="uint8").to_dict()
    assert mapping_from_info(ds.info, target=True).kind == "mask"
    with pytest.raises(ConfigError):  # 8-bit images and masks: a stated range has nothing to apply to
        load_paired(images, target=masks, split="all", intensity_range=(0, 100))

    # One source: pair="A:B" shares the source's mapping; "mask:image" makes the input side a mask.
    np.savez(tmp_path / "two.npz", images=RNG.integers(0, 256, (6, 8, 8, 2)).astype(np.uint8),
             masks=(RNG.random((6, 8, 8)) > 0.5).astype(np.uint8))
    channels = load_paired(tmp_path / "two.npz", pair="0:1", split="all").info
    assert channels.intensity == channels.target_intensity == IntensityMapping(dtype="uint8").to_dict()
    reverse = load_paired(tmp_path / "two.npz", pair="mask:image", split="all").info
    assert reverse.intensity["kind"] == "mask" and reverse.target_intensity["kind"] == "fixed"
    with pytest.warns(UserWarning, match="no patient ids"):
        unpaired = load_unpaired(tmp_path / "two.npz", pair="image:mask", split="all").info
    assert unpaired.intensity["kind"] == "fixed" and unpaired.target_intensity["kind"] == "mask"
