"""Tests of synthmed.data: every source, the transforms, the splits and the MedMNIST download."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import re
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthmed.data import (
    ImageDataset,
    load_dataset,
    load_dicom,
    pad_to,
    patient_split,
    stratified_split,
    to_uint8,
)
from synthmed.data import medmnist as mm
from synthmed.data.nifti import patient_ids
from synthmed.data.transforms import mask_threshold, parse_channels, resize
from synthmed.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared data {path} absent")
    return path


def assert_one_line(excinfo: pytest.ExceptionInfo, path: Path | str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


def check_dataset(ds: ImageDataset) -> None:
    """The ImageDataset contract every source must meet."""
    assert ds.images.dtype == torch.float32 and ds.images.ndim == 4
    assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
    assert ds.info.channels == ds.images.shape[1]
    assert (ds.info.height, ds.info.width) == tuple(ds.images.shape[-2:])
    if ds.labels is not None:
        assert ds.labels.dtype == torch.int64 and ds.labels.shape == (len(ds),)
        assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < ds.info.num_classes
    if ds.masks is not None:
        assert ds.masks.dtype == torch.float32 and ds.masks.shape == (len(ds), 1, *ds.images.shape[-2:])
        assert set(ds.masks.unique().tolist()) <= {0.0, 1.0}
    if ds.patients is not None:
        assert isinstance(ds.patients, np.ndarray) and ds.patients.dtype.kind == "U"
    assert not ds.meta or (len(ds.meta) == len(ds) and isinstance(ds.meta[0], dict))


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    (img.convert(mode) if mode else img).save(path)
    return path


# ---------------------------------------------------------------- embedded and real data


def test_embedded_breastmnist_splits_and_attribution() -> None:
    counts = {split: load_dataset(split=split) for split in ("train", "val", "test")}
    assert {s: len(d) for s, d in counts.items()} == {"train": 546, "val": 78, "test": 156}
    ds = counts["train"]
    check_dataset(ds)
    assert ds.images.shape == (546, 1, 28, 28)
    assert ds.info.num_classes == 2 and ds.info.class_names == ("malignant", "normal, benign")
    assert ds.info.split == "train" and int(ds.labels.sum()) == 399  # train: 147 malignant / 399 benign
    assert "CC BY 4.0" in ds.info.attribution and "\n" not in ds.info.attribution
    assert len(load_dataset("breastmnist", split="all")) == 780
    assert load_dataset("medmnist:breastmnist").images.equal(ds.images)  # embedded copy, no download


def test_shared_breastmnist_npz_in_medmnist_layout() -> None:
    path = shared("medmnist/breastmnist.npz")
    lengths = [len(load_dataset(path, split=s)) for s in ("train", "val", "test")]
    assert lengths == [546, 78, 156]


def test_lgg_mri_train_split_flair_only_at_64() -> None:
    path = shared("lgg-mri/lgg_mri_128.npz")
    ds = load_dataset(path, split="train", channels="flair", size=64)
    check_dataset(ds)
    assert len(ds) == 2693 and ds.images.shape == (2693, 1, 64, 64)
    assert ds.info.channel_names == ("flair",) and ds.info.split == "train"
    assert ds.masks is not None and 0 < float(ds.masks.mean()) < 0.1
    assert len(set(ds.patients.tolist())) == 70
    # The file's patients split by our splitter never share a patient between splits.
    patients = np.load(path)["patient"]
    parts = patient_split(patients, seed=3)
    sets = [set(patients[parts[s]].tolist()) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_kaggle_3m_folder_pairs_masks() -> None:
    folder = shared("lgg-mri/kaggle_3m_sample")
    ds = load_dataset(folder, split="all", size=64)
    check_dataset(ds)
    assert len(ds) == 20 and ds.images.shape[1] == 3 and ds.masks is not None
    assert ds.labels is None  # a single sub-folder is not a class
    assert set(ds.patients.tolist()) == {"TCGA_CS_4942_19970222"}  # sub-folders with masks are patients
    for meta in ds.meta:
        image, mask = Path(meta["path"]), Path(meta["mask_path"])
        assert mask.name == f"{image.stem}_mask{image.suffix}"
    assert float(ds.masks.sum()) > 0


def test_ph2_folder_cases_are_not_classes() -> None:
    folder = shared("ph2/images")
    ds = load_dataset(folder, split="all", size=32)
    check_dataset(ds)
    assert len(ds) == 160 and ds.labels is None and ds.masks is not None


# ---------------------------------------------------------------- image folders


def test_png_8bit_grey_values(tmp_path: Path) -> None:
    pixels = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    save(tmp_path / "a.png", pixels)
    ds = load_dataset(tmp_path, split="all")
    check_dataset(ds)
    assert ds.images.shape == (1, 1, 2, 2) and ds.info.channel_names == ()
    expected = torch.tensor(pixels, dtype=torch.float32) / 127.5 - 1
    torch.testing.assert_close(ds.images[0, 0], expected)
    assert ds.meta[0]["path"] == str(tmp_path / "a.png")


def test_png_16bit_grey_scaled_by_dtype_range(tmp_path: Path) -> None:
    pixels = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    save(tmp_path / "a.png", pixels)
    ds = load_dataset(tmp_path, split="all")
    expected = torch.tensor(pixels.astype(np.float32)) / 32767.5 - 1  # not /255, which would saturate
    torch.testing.assert_close(ds.images[0, 0], expected)


def test_rgb_rgba_and_channel_selection(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    save(tmp_path / "rgb.png", rgb)
    save(tmp_path / "rgba.png", np.dstack([rgb, np.full((8, 8), 100, np.uint8)]))
    ds = load_dataset(tmp_path, split="all")
    check_dataset(ds)
    assert ds.images.shape == (2, 3, 8, 8) and ds.info.channel_names == ("red", "green", "blue")
    assert torch.all(ds.images[:, 1] == 1) and torch.all(ds.images[:, 0] == -1)
    green = load_dataset(tmp_path, split="all", channels="green")
    assert green.images.shape == (2, 1, 8, 8) and green.info.channel_names == ("green",)
    assert load_dataset(tmp_path, split="all", channels=[2]).info.channel_names == ("blue",)


def test_mixed_grey_and_colour_become_majority(tmp_path: Path) -> None:
    for i in range(2):
        save(tmp_path / f"grey{i}.png", np.full((6, 6), 200, np.uint8))
    save(tmp_path / "colour.png", np.full((6, 6, 3), 90, np.uint8))
    save(tmp_path / "palette.gif", np.full((6, 6), 30, np.uint8), mode="P")  # grey palette -> grey
    with pytest.warns(UserWarning, match="converted to grey"):
        ds = load_dataset(tmp_path, split="all")
    assert ds.images.shape == (4, 1, 6, 6)


def test_sizes_crop_and_resize(tmp_path: Path) -> None:
    save(tmp_path / "wide.png", np.zeros((10, 16), np.uint8))
    save(tmp_path / "big.png", np.zeros((40, 40), np.uint8))
    save(tmp_path / "square.png", np.zeros((10, 10), np.uint8))
    assert load_dataset(tmp_path, split="all").images.shape == (3, 1, 10, 10)  # most common side
    assert load_dataset(tmp_path, split="all", size=16).images.shape == (3, 1, 16, 16)


def test_class_subfolders_labels_and_stratified_split(tmp_path: Path) -> None:
    for cls, count in (("malignant", 10), ("benign", 20)):
        for i in range(count):
            save(tmp_path / cls / f"{i}.png", np.full((4, 4), i, np.uint8))
    full = load_dataset(tmp_path, split="all")
    assert full.info.class_names == ("benign", "malignant") and full.info.num_classes == 2
    assert full.labels.tolist().count(1) == 10
    paths = {}
    for split in ("train", "val", "test"):
        ds = load_dataset(tmp_path, split=split, seed=1)
        check_dataset(ds)
        assert set(ds.labels.tolist()) == {0, 1} and ds.info.num_classes == 2
        paths[split] = {m["path"] for m in ds.meta}
    assert [len(p) for p in paths.values()] == [21, 3, 6]
    assert not (
        paths["train"] & paths["test"] or paths["train"] & paths["val"] or paths["val"] & paths["test"]
    )
    again = {m["path"] for m in load_dataset(tmp_path, split="test", seed=1).meta}
    assert again == paths["test"]  # deterministic given the seed


def test_split_folders_are_used_as_splits(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("valid", 1), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                save(tmp_path / split / cls / f"{i}.png", np.zeros((4, 4), np.uint8))
    ds = load_dataset(tmp_path, split="val")
    assert len(ds) == 2 and ds.info.class_names == ("a", "b") and ds.info.split == "val"
    assert len(load_dataset(tmp_path, split="test")) == 4


def test_mask_pairing_and_missing_mask(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    for i in range(3):
        save(tmp_path / "case" / f"s_{i}.tif", np.full((8, 8, 3), 50, np.uint8))
        save(tmp_path / "case" / f"s_{i}_mask.tif", mask)
    ds = load_dataset(tmp_path, split="all")
    check_dataset(ds)
    assert len(ds) == 3 and float(ds.masks[0].sum()) == 16
    save(tmp_path / "case" / "s_9.tif", np.full((8, 8, 3), 50, np.uint8))
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path, split="all")
    assert_one_line(excinfo, tmp_path / "case" / "s_9.tif")


def test_corrupt_png_names_the_file(tmp_path: Path) -> None:
    save(tmp_path / "good.png", np.zeros((4, 4), np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path, split="all")
    assert "not a valid PNG image" in assert_one_line(excinfo, bad)


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, "PNG")
    bad = tmp_path / "cut.png"
    bad.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path, split="all")
    assert_one_line(excinfo, bad)


def test_empty_folder_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path)
    assert_one_line(excinfo, tmp_path)
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError):
        load_dataset(tmp_path)
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as excinfo:
        load_dataset(missing)
    assert_one_line(excinfo, missing)
    odd = tmp_path / "table.csv"
    odd.write_text("a,b")
    with pytest.raises(DataError) as excinfo:
        load_dataset(odd)
    assert_one_line(excinfo, odd)



def patient_slices(root: Path, patients: int, slices: int, masks: bool = True) -> None:
    """kaggle_3m layout: ``TCGA_xx/TCGA_xx_N.tif`` (+ ``_mask.tif``), one sub-folder per patient."""
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 255
    for p in range(patients):
        for s in range(slices):
            save(root / f"TCGA_{p:02d}" / f"TCGA_{p:02d}_{s}.tif", np.full((8, 8, 3), 10 * s, np.uint8))
            if masks:
                save(root / f"TCGA_{p:02d}" / f"TCGA_{p:02d}_{s}_mask.tif", mask)


def test_patient_folders_with_masks_split_by_patient(tmp_path: Path) -> None:
    patient_slices(tmp_path, patients=6, slices=4)
    seen = {}
    for split in ("train", "val", "test"):
        with pytest.warns(UserWarning, match="as patients"):
            ds = load_dataset(tmp_path, split=split)
        check_dataset(ds)
        assert ds.labels is None and ds.info.num_classes == 0
        seen[split] = set(ds.patients.tolist())
        assert {Path(m["path"]).parent.name for m in ds.meta} == seen[split]
        assert len(ds) == 4 * len(seen[split])  # every slice of a patient goes with the patient
    assert [len(s) for s in seen.values()] == [4, 1, 1]
    assert not (seen["train"] & seen["test"] or seen["train"] & seen["val"] or seen["val"] & seen["test"])


def test_folder_groups_option_and_auto_rule(tmp_path: Path) -> None:
    few = tmp_path / "few"
    patient_slices(few, patients=3, slices=4, masks=False)  # 3 folders, no masks: auto reads classes
    with pytest.warns(UserWarning, match="folder_groups='patient'"):
        auto = load_dataset(few, split="all")
    assert auto.info.num_classes == 3 and auto.patients is None
    parts = {
        s: load_dataset(few, split=s, folder_groups="patient", val_fraction=0.0, test_fraction=0.34)
        for s in ("train", "test")
    }
    assert all(d.labels is None for d in parts.values())
    assert len(set(parts["train"].patients.tolist())) == 2 and len(set(parts["test"].patients.tolist())) == 1
    assert not set(parts["train"].patients.tolist()) & set(parts["test"].patients.tolist())

    many = tmp_path / "many"
    for p in range(21):  # more than 20 sub-folders: auto reads patients
        for i in range(2):
            save(many / f"case{p:02d}" / f"{i}.png", np.full((4, 4), p, np.uint8))
    with pytest.warns(UserWarning, match="folder_groups='class'"):
        ds = load_dataset(many, split="all")
    assert ds.labels is None and len(set(ds.patients.tolist())) == 21
    classes = load_dataset(many, split="all", folder_groups="class")
    assert classes.info.num_classes == 21 and classes.patients is None
    with pytest.raises(ConfigError, match="folder_groups"):
        load_dataset(few, folder_groups="subject")


def test_mask_threshold_by_dtype_convention() -> None:
    cases = [
        (np.array([0, 1, 2, 4], np.uint8), [0, 1, 1, 1]),  # label map: every label is foreground
        (np.array([0, 255], np.uint8), [0, 1]),
        (np.array([0, 3, 250, 255], np.uint8), [0, 0, 1, 1]),  # JPEG-noisy 0/255 mask
        (np.array([0, 1, 2], np.uint16), [0, 1, 1]),
        (np.array([0, 3, 40000, 65535], np.uint16), [0, 0, 1, 1]),
        (np.array([0.0, 0.3, 0.7, 1.0], np.float32), [0, 0, 1, 1]),
        (np.array([False, True]), [0, 1]),
    ]
    for masks, expected in cases:
        assert (masks > mask_threshold(masks)).astype(int).tolist() == expected, masks


def test_label_map_masks_keep_every_label(tmp_path: Path) -> None:
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, 0] = [0, 1, 2, 4]
    masks[1, 1, :2] = 1
    path = tmp_path / "labels.npz"
    np.savez(path, images=np.zeros((2, 4, 4), np.uint8), masks=masks)
    ds = load_dataset(path, split="all")
    assert ds.masks[0, 0, 0].tolist() == [0, 1, 1, 1] and ds.masks[1, 0, 1].tolist() == [1, 1, 0, 0]
    folder = tmp_path / "folder"
    save(folder / "x.png", np.zeros((4, 4), np.uint8))
    save(folder / "x_mask.png", masks[0])
    assert load_dataset(folder, split="all").masks[0, 0, 0].tolist() == [0, 1, 1, 1]


def test_folder_masks_use_one_threshold_for_the_whole_set(tmp_path: Path) -> None:
    clean = np.zeros((8, 8), np.uint8)
    clean[2:6, 2:6] = 255
    noise = np.zeros((8, 8), np.uint8)
    noise[::2, ::3] = 3  # an empty JPEG-saved mask: compression noise, no tumour
    save(tmp_path / "train" / "p1" / "a.png", np.full((8, 8), 100, np.uint8))
    save(tmp_path / "train" / "p1" / "a_mask.png", clean)
    save(tmp_path / "test" / "p2" / "b.png", np.full((8, 8), 100, np.uint8))
    save(tmp_path / "test" / "p2" / "b_mask.png", noise)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the auto folder_groups notice
        assert float(load_dataset(tmp_path, split="train").masks.sum()) == 16
        assert float(load_dataset(tmp_path, split="test").masks.sum()) == 0


def test_12bit_data_in_uint16_scaled_by_the_data_max(tmp_path: Path) -> None:
    images = np.zeros((3, 4, 4), np.uint16)
    images[0, 0, 0], images[1, 0, 0] = 4095, 2048
    path = tmp_path / "ct12.npz"
    np.savez(path, images=images)
    with pytest.warns(UserWarning, match="4095") as record:
        ds = load_dataset(path, split="all")
    assert str(path) in str(record[0].message)
    assert float(ds.images.max()) == 1.0 and float(ds.images.min()) == -1.0
    torch.testing.assert_close(ds.images[1, 0, 0, 0], torch.tensor(2048 / 4095 * 2 - 1))
    # Image folder: 16-bit PNGs holding 12-bit values, scaled by the folder's maximum (not each image's own).
    folder = tmp_path / "png"
    save(folder / "a.png", np.array([[0, 4095], [1000, 2000]], np.uint16))
    save(folder / "b.png", np.array([[0, 1000], [0, 0]], np.uint16))
    with pytest.warns(UserWarning, match="4095"):
        pngs = load_dataset(folder, split="all")
    expected = torch.tensor([[0.0, 4095.0], [1000.0, 2000.0]]) / 4095 * 2 - 1
    torch.testing.assert_close(pngs.images[0, 0], expected)
    torch.testing.assert_close(pngs.images[1, 0, 0, 1], torch.tensor(1000 / 4095 * 2 - 1))


def test_split_warnings_per_image_and_crossing_patients(tmp_path: Path) -> None:
    for i in range(5):
        save(tmp_path / "flat" / f"{i}.png", np.full((4, 4), i, np.uint8))
    with pytest.warns(UserWarning, match="per image") as record:
        load_dataset(tmp_path / "flat", split="train")
    message = next(str(w.message) for w in record if "per image" in str(w.message))
    assert str(tmp_path / "flat") in message and "\n" not in message
    path = tmp_path / "x.npz"
    np.savez(
        path,
        images=np.zeros((6, 4, 4), np.uint8),
        patient=np.array(["a", "a", "b", "b", "c", "c"]),
        split=np.array(["train", "test", "train", "train", "val", "test"]),
    )
    with pytest.warns(UserWarning, match="2 patients") as record:
        assert len(load_dataset(path, split="train")) == 3
    message = next(str(w.message) for w in record if "2 patients" in str(w.message))
    assert str(path) in message and "\n" not in message


# ---------------------------------------------------------------- npz


def test_npz_wrong_keys_lists_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, pictures=np.zeros((2, 4, 4), np.uint8), y=np.zeros(2))
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    message = assert_one_line(excinfo, path)
    assert "pictures" in message and "y" in message
    assert len(load_dataset(path, image_key="pictures", split="all")) == 2


def test_npz_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert_one_line(excinfo, path)


def test_npz_named_arrays_with_split_key_and_string_labels(tmp_path: Path) -> None:
    n = 12
    rng = np.random.default_rng(0)
    path = tmp_path / "named.npz"
    np.savez(
        path,
        images=rng.integers(0, 255, (n, 6, 6, 2), dtype=np.uint8),
        labels=np.array(["tumour", "healthy"] * 6),
        masks=(rng.random((n, 6, 6)) > 0.5).astype(np.uint8),
        patient=np.repeat([f"p{i}" for i in range(4)], 3),
        split=np.array(["train"] * 6 + ["val"] * 3 + ["test"] * 3),
        channel_names=np.array(["t1", "t2"]),
    )
    ds = load_dataset(path, split="val", channels="t2", size=4)
    check_dataset(ds)
    assert len(ds) == 3 and ds.images.shape == (3, 1, 4, 4) and ds.info.channel_names == ("t2",)
    assert ds.info.class_names == ("healthy", "tumour") and ds.info.num_classes == 2
    assert [m["index"] for m in ds.meta] == [6, 7, 8]
    assert len(load_dataset(path, split="all")) == n
    with pytest.raises(DataError) as excinfo:
        load_dataset(path, split="holdout")
    assert_one_line(excinfo, path)


def test_npz_without_split_uses_patient_split(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    patients = np.repeat([f"p{i}" for i in range(10)], 5)
    np.savez(path, images=np.zeros((50, 4, 4), np.float32), patient=patients)
    seen = {}
    for split in ("train", "val", "test"):
        ds = load_dataset(path, split=split, seed=7)
        seen[split] = set(ds.patients.tolist())
    assert [len(s) for s in seen.values()] == [7, 1, 2]
    assert not (seen["train"] & seen["test"] or seen["train"] & seen["val"] or seen["val"] & seen["test"])


def test_npz_medmnist_multilabel_keeps_first_column(tmp_path: Path) -> None:
    path = tmp_path / "chest.npz"
    labels = np.zeros((4, 14), np.uint8)
    labels[1, 0] = labels[2, 5] = 1
    arrays = {f"{s}_images": np.zeros((4, 28, 28), np.uint8) for s in ("train", "val", "test")}
    arrays |= {f"{s}_labels": labels for s in ("train", "val", "test")}
    np.savez(path, **arrays)
    with pytest.warns(UserWarning, match="multi-label"):
        ds = load_dataset(path)
    assert ds.labels.tolist() == [0, 1, 0, 0]


# ---------------------------------------------------------------- DICOM


def write_dicom(path: Path, frames: np.ndarray, patient: str | None = "P1", **attributes: object) -> Path:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    if patient is not None:
        ds.PatientID = patient
    ds.Rows, ds.Columns = frames.shape[-2:]
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = frames.astype(np.uint16).tobytes()
    try:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    except TypeError:  # pydicom < 3
        pydicom.dcmwrite(path, ds, write_like_original=False)
    return path


STORED = np.array([[25, 75], [100, 125]], dtype=np.uint16)  # * 2 - 100 -> [[-50, 50], [100, 150]]


def test_dicom_rescale_window_and_monochrome1(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "ct.dcm", STORED, RescaleSlope=2, RescaleIntercept=-100,
        WindowCenter=[100, 40], WindowWidth=[200, 80], PhotometricInterpretation="MONOCHROME1",
    )  # fmt: skip
    ds = load_dataset(path, split="all")
    check_dataset(ds)
    # DICOM linear VOI (PS3.3 C.11.2.1.2.1): centre 100, width 200 -> [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2]
    # = [0, 199]: -50 -> -1 (clipped), 50 -> 100/199 - 1, ...; MONOCHROME1 -> negated
    hu = torch.tensor([[-50.0, 50.0], [100.0, 150.0]])
    torch.testing.assert_close(ds.images[0, 0], -(hu / 199 * 2 - 1).clamp(-1, 1))
    assert ds.patients.tolist() == ["P1"] and ds.meta[0]["path"] == str(path)
    custom = load_dicom(path, window=(0, 400), split="all")  # [-0.5 - 199.5, -0.5 + 199.5] = [-200, 199]
    torch.testing.assert_close(custom.images[0, 0], -((hu + 200) / 399 * 2 - 1))


def test_dicom_folder_multiframe_and_patients(tmp_path: Path) -> None:
    for p in range(5):
        write_dicom(tmp_path / f"p{p}.dcm", np.stack([STORED * (f + 1) for f in range(3)]), patient=f"P{p}")
    ds = load_dataset(tmp_path, split="all")
    check_dataset(ds)
    assert len(ds) == 15 and sorted(set(ds.patients.tolist())) == [f"P{p}" for p in range(5)]
    assert [m["frame"] for m in ds.meta[:3]] == [0, 1, 2]
    train, test = load_dataset(tmp_path, split="train"), load_dataset(tmp_path, split="test")
    assert not set(train.patients.tolist()) & set(test.patients.tolist())


def test_dicom_empty_and_invalid_files(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(DataError) as excinfo:
        load_dataset(empty)
    assert_one_line(excinfo, empty)
    text = tmp_path / "text.dcm"
    text.write_text("this is not DICOM\n" * 20)
    with pytest.raises(DataError) as excinfo:
        load_dataset(text)
    assert "not a valid DICOM" in assert_one_line(excinfo, text)



def test_dicom_without_patient_id_groups_by_study(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from pydicom.uid import generate_uid

    study_of = {}
    for s in range(2):
        study, series = generate_uid(), generate_uid()
        for i in range(4):
            path = write_dicom(
                tmp_path / f"s{s}_{i}.dcm", STORED + i, patient=None,
                StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=i + 1,
            )  # fmt: skip
            study_of[str(path)] = study
    parts = {}
    for split in ("train", "test"):
        with pytest.warns(UserWarning, match="PatientID"):
            ds = load_dataset(tmp_path, split=split, val_fraction=0.0, test_fraction=0.5)
        parts[split] = {study_of[m["path"]] for m in ds.meta}
        assert len(ds) == 4 and len(parts[split]) == 1  # one whole study per split
    assert parts["train"] != parts["test"]


def test_dicom_empty_window_and_one_range_per_series(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from pydicom.uid import generate_uid

    series = generate_uid()
    write_dicom(
        tmp_path / "a.dcm", np.array([[0, 50], [100, 100]]), SeriesInstanceUID=series, InstanceNumber=1,
        WindowCenter="", WindowWidth="",
    )  # fmt: skip
    write_dicom(tmp_path / "b.dcm", np.array([[0, 100], [200, 200]]), SeriesInstanceUID=series, InstanceNumber=2)
    ds = load_dataset(tmp_path, split="all")
    check_dataset(ds)
    # No usable window: one range for the whole series (0..200), so equal values look equal in every slice.
    torch.testing.assert_close(ds.images[0, 0], torch.tensor([[-1.0, -0.5], [0.0, 0.0]]))
    torch.testing.assert_close(ds.images[1, 0], torch.tensor([[-1.0, 0.0], [1.0, 1.0]]))


def test_dicom_palette_color_becomes_rgb(tmp_path: Path) -> None:
    ramp = np.arange(256, dtype=np.uint16) * 257
    path = write_dicom(
        tmp_path / "pal.dcm", np.array([[0, 255], [0, 255]]), PhotometricInterpretation="PALETTE COLOR",
        RedPaletteColorLookupTableDescriptor=[256, 0, 16], RedPaletteColorLookupTableData=ramp.tobytes(),
        GreenPaletteColorLookupTableDescriptor=[256, 0, 16],
        GreenPaletteColorLookupTableData=np.zeros(256, np.uint16).tobytes(),
        BluePaletteColorLookupTableDescriptor=[256, 0, 16], BluePaletteColorLookupTableData=ramp[::-1].tobytes(),
    )  # fmt: skip
    ds = load_dataset(path, split="all")
    check_dataset(ds)
    assert ds.images.shape == (1, 3, 2, 2) and ds.info.channel_names == ("red", "green", "blue")
    torch.testing.assert_close(ds.images[0, :, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))
    torch.testing.assert_close(ds.images[0, :, 0, 1], torch.tensor([1.0, -1.0, -1.0]))


# ---------------------------------------------------------------- NIfTI


def test_nifti_slices_percentiles_and_4d(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    volume = np.zeros((8, 8, 6), np.float32)
    volume[..., 1:5] = rng.uniform(100, 200, (8, 8, 4))
    volume[0, 0, 2] = 1e6  # outlier removed by the 99.5th-percentile clip
    path = tmp_path / "case01.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    ds = load_dataset(path, split="all")
    check_dataset(ds)
    assert len(ds) == 4 and [m["slice"] for m in ds.meta] == [1, 2, 3, 4]  # empty slices 0 and 5 skipped
    assert set(ds.patients.tolist()) == {"case01"}
    assert float(ds.images.max()) == 1.0 and float(ds.images.median()) > -0.5

    four_d = np.stack([volume, -volume], axis=-1)
    path4 = tmp_path / "multi.nii"
    nib.save(nib.Nifti1Image(four_d, np.eye(4)), path4)
    first = load_dataset(path4, split="all")
    assert first.images.shape == (4, 1, 8, 8)
    both = load_dataset(path4, split="all", channels=[0, 1], size=4)
    assert both.images.shape == (4, 2, 4, 4)
    torch.testing.assert_close(both.images[:, 1], -both.images[:, 0], atol=0.02, rtol=0)

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(b"garbage" * 10))
    with pytest.raises(DataError) as excinfo:
        load_dataset(bad)
    assert_one_line(excinfo, bad)


def test_nifti_patient_ids_and_label_volumes(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    volume = np.ones((4, 4, 2), np.float32)

    def put(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), path)

    brats = tmp_path / "brats"
    for case in ("case_001", "case_002", "case_003"):
        for modality in ("flair", "t1", "seg"):
            put(brats / case / f"{case}_{modality}.nii.gz")
    with pytest.warns(UserWarning, match="seg"):
        ds = load_dataset(brats, split="all")
    assert len(ds) == 3 * 2 * 2 and not any("seg" in m["path"] for m in ds.meta)  # no label volume
    assert sorted(set(ds.patients.tolist())) == ["case_001", "case_002", "case_003"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = load_dataset(brats, split="train", val_fraction=0.0, test_fraction=0.34)
        test = load_dataset(brats, split="test", val_fraction=0.0, test_fraction=0.34)
    assert len(test) == 4 and not set(train.patients.tolist()) & set(test.patients.tolist())

    flat = tmp_path / "flat"
    for name in ("IXI002_T1", "IXI002_t2", "IXI002_PD", "IXI012_flair", "IXI012_T1CE", "IXI012_brainmask"):
        put(flat / f"{name}.nii.gz")
    with pytest.warns(UserWarning, match="mask"):
        flat_ds = load_dataset(flat, split="all")
    assert sorted(set(flat_ds.patients.tolist())) == ["IXI002", "IXI012"] and len(flat_ds) == 5 * 2
    root = Path("/data")  # containers (imagesTr/) vs per-case folders (KiTS, BIDS), by name only
    files = ["imagesTr/BRATS_001.nii.gz", "imagesTr/BRATS_002.nii.gz", "case_00000/imaging.nii.gz"]
    files += ["sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_T2w.nii.gz"]
    ids = patient_ids([root / f for f in files], root)
    assert ids == ["BRATS_001", "BRATS_002", "case_00000", "sub-01", "sub-01"]


# ---------------------------------------------------------------- MedMNIST download


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A local HTTP server on 127.0.0.1 serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (_Handler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, handler.requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def medmnist_file(path: Path, side: int = 28) -> str:
    rng = np.random.default_rng(side)
    arrays = {f"{s}_images": rng.integers(0, 255, (3, side, side), np.uint8) for s in ("train", "val", "test")}
    arrays |= {f"{s}_labels": np.array([[0], [1], [1]], np.uint8) for s in ("train", "val", "test")}
    np.savez_compressed(path, **arrays)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_medmnist_download_then_cache_hit(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, root, requests = server
    md5 = medmnist_file(root / "pneumoniamnist_64.npz")
    monkeypatch.setattr(mm, "MEDMNIST_BASE_URL", url)
    monkeypatch.setitem(mm.MEDMNIST_MD5, "pneumoniamnist_64.npz", md5)
    cache = tmp_path / "cache"
    ds = load_dataset("medmnist:pneumoniamnist", size=64, cache_dir=cache)
    check_dataset(ds)
    assert (
        len(ds) == 3 and ds.info.class_names == ("normal", "pneumonia") and "MedMNIST" in ds.info.attribution
    )
    assert len(requests) == 1 and [p.name for p in cache.iterdir()] == ["pneumoniamnist_64.npz"]
    assert len(load_dataset("medmnist:pneumoniamnist", size=64, cache_dir=cache, split="test")) == 3
    assert len(requests) == 1  # second call served from the cache


def test_breastmnist_larger_size_uses_the_official_file(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root, requests = server
    md5 = medmnist_file(root / "breastmnist_64.npz", side=64)
    monkeypatch.setattr(mm, "MEDMNIST_BASE_URL", url)
    monkeypatch.setitem(mm.MEDMNIST_MD5, "breastmnist_64.npz", md5)
    cache = tmp_path / "cache"
    plain = load_dataset("breastmnist", size=64, cache_dir=cache)
    prefixed = load_dataset("medmnist:breastmnist", size=64, cache_dir=cache)
    assert plain.images.shape == (3, 1, 64, 64) and torch.equal(plain.images, prefixed.images)
    assert plain.info.attribution == prefixed.info.attribution and len(requests) == 1
    assert load_dataset("breastmnist", size=28).images.shape == (546, 1, 28, 28)  # embedded, no download
    assert len(requests) == 1


def test_medmnist_cache_env_and_url_env(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, root, requests = server
    md5 = medmnist_file(root / "bloodmnist.npz")
    monkeypatch.setenv("SYNTHMED_MEDMNIST_URL", url)
    monkeypatch.setenv("SYNTHMED_CACHE", str(tmp_path / "envcache"))
    monkeypatch.setitem(mm.MEDMNIST_MD5, "bloodmnist.npz", md5)
    load_dataset("medmnist:bloodmnist")
    assert (tmp_path / "envcache" / "bloodmnist.npz").is_file() and len(requests) == 1


def test_medmnist_checksum_mismatch_leaves_nothing(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root, _ = server
    medmnist_file(root / "dermamnist.npz")
    monkeypatch.setattr(mm, "MEDMNIST_BASE_URL", url)
    monkeypatch.setitem(mm.MEDMNIST_MD5, "dermamnist.npz", "0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as excinfo:
        load_dataset("medmnist:dermamnist", cache_dir=cache)
    message = assert_one_line(excinfo, cache / "dermamnist.npz")
    assert "checksum mismatch" in message and url in message
    assert list(cache.iterdir()) == []  # neither the file nor a temporary part is left


def test_medmnist_server_down_says_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(mm, "MEDMNIST_BASE_URL", f"http://127.0.0.1:{port}")
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as excinfo:
        load_dataset("medmnist:octmnist", size=128, cache_dir=cache)
    message = assert_one_line(excinfo, cache / "octmnist_128.npz")
    assert f"http://127.0.0.1:{port}/octmnist_128.npz" in message and "offline" in message
    assert list(cache.iterdir()) == []
    with pytest.raises(DataError) as excinfo:
        load_dataset("medmnist:octmnist", cache_dir=cache, download=False)
    assert_one_line(excinfo, cache / "octmnist.npz")


def test_medmnist_unknown_name_and_size() -> None:
    with pytest.raises(DataError) as excinfo:
        load_dataset("medmnist:kneemnist")
    message = assert_one_line(excinfo, "medmnist:kneemnist")
    assert "dermamnist" in message and "organsmnist" in message
    with pytest.raises(DataError) as excinfo:
        load_dataset("medmnist:dermamnist", size=32)
    assert "28, 64, 128, 224" in assert_one_line(excinfo, "medmnist:dermamnist")


def test_medmnist_table_is_complete() -> None:
    files = [mm.file_name(name, size) for name in mm.NAMES for size in mm.SIZES]
    assert len(set(files)) == len(mm.NAMES) * len(mm.SIZES)  # every (name, size) has its own file
    missing = [f for f in files if f not in mm.MEDMNIST_MD5]
    assert not missing, missing
    assert sorted(mm.MEDMNIST_MD5) == sorted(files), "entries for files no (name, size) names"
    for file in files:
        assert re.fullmatch(r"[0-9a-f]{32}", mm.MEDMNIST_MD5[file]), (file, mm.MEDMNIST_MD5[file])
    digests = [mm.MEDMNIST_MD5[f] for f in files]
    assert len(set(digests)) == len(digests), "two files share an MD5: a copy-paste slip"
    assert mm.url_for("dermamnist_64.npz").startswith("https://zenodo.org/records/10519652/files/")


# ---------------------------------------------------------------- splits and transforms


def test_patient_split_disjoint_deterministic() -> None:
    rng = np.random.default_rng(0)
    patients = rng.choice([f"pt{i:02d}" for i in range(30)], size=500)
    a = patient_split(patients, 0.1, 0.2, seed=5)
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(500))
    groups = [set(patients[a[s]].tolist()) for s in ("train", "val", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert [len(g) for g in groups] == [21, 3, 6]
    b = patient_split(patients[::-1], 0.1, 0.2, seed=5)  # row order does not change who goes where
    assert set(patients[::-1][b["test"]].tolist()) == groups[2]
    assert set(patients[patient_split(patients, seed=6)["test"]].tolist()) != groups[2]
    with pytest.raises(ConfigError):
        patient_split(patients, 0.5, 0.5)


def test_stratified_split_keeps_proportions() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    parts = stratified_split(labels, 0.1, 0.2, seed=0)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [70, 10, 20]
    assert int(labels[parts["test"]].sum()) == 4 and int(labels[parts["val"]].sum()) == 2


def test_pad_to_uint8_resize_and_channels() -> None:
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    padded = pad_to(x, 32)
    assert padded.shape == (2, 1, 32, 32) and torch.equal(padded[:, :, 2:30, 2:30], x)
    assert float(padded[0, 0, 0, 0]) == -1.0 and pad_to(x.numpy(), 32).shape == (2, 1, 32, 32)
    with pytest.raises(ConfigError):
        pad_to(x, 16)
    u8 = to_uint8(torch.tensor([[[[-1.0, 0.0], [1.0, 1.5]]]]))
    assert u8.shape == (1, 2, 2, 1) and u8.dtype == np.uint8 and u8.ravel().tolist() == [0, 128, 255, 255]
    assert resize(x, 14).shape == (2, 1, 14, 14) and resize(x, 56).shape == (2, 1, 56, 56)
    assert parse_channels("0,2", 3) == [0, 2]
    assert parse_channels("post_contrast", 3, ("a", "flair", "post-contrast")) == [2]
    with pytest.raises(ConfigError, match="unknown channel"):
        parse_channels("flair", 3)
    with pytest.raises(ConfigError, match="out of range"):
        parse_channels([3], 3)


def test_no_warnings_on_clean_sources(tmp_path: Path) -> None:
    save(tmp_path / "plain" / "a.png", np.zeros((4, 4), np.uint8))
    patient_slices(tmp_path / "kaggle", patients=3, slices=2)
    path = tmp_path / "p.npz"
    np.savez(
        path,
        images=np.zeros((6, 4, 4), np.uint16),
        patient=np.array(["a", "a", "b", "b", "c", "c"]),
        split=np.array(["train", "train", "val", "val", "test", "test"]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(tmp_path / "plain", split="all")
        load_dataset(split="val")
        load_dataset(tmp_path / "kaggle", split="train", folder_groups="patient")
        load_dataset(path, split="train")  # all-zero uint16: no 12-bit notice; split agrees with patients
