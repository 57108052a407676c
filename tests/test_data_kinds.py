"""Data kinds beyond single images: paired (``image`` -> ``target``), unpaired domains, tabular records."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthmed.data import DataInfo, ImageDataset, TensorSet, UnpairedSet, load_training_set
from synthmed.data.paired import load_paired, load_unpaired
from synthmed.data.records import load_records
from synthmed.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DRIVE = SHARED / "drive" / "training"
LGG = SHARED / "lgg-mri" / "lgg_mri_128.npz"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------------ DataInfo


def test_datainfo_new_fields_round_trip_and_old_configs_read() -> None:
    info = DataInfo(source="a/", channels=3, height=8, width=8, kind="unpaired", target_channels=1,
                    target_names=("mask",), target_is_mask=True, target_source="b/", columns=("x", "y"),
                    sizes=(30, 17), channel_names=("red", "green", "blue"))
    data = json.loads(json.dumps(info.to_dict()))  # as a run config stores it
    assert data["sizes"] == [30, 17] and data["columns"] == ["x", "y"] and data["target_names"] == ["mask"]
    assert DataInfo.from_dict(data) == info
    old = {"source": "x.npz", "channels": 1, "height": 28, "width": 28, "num_classes": 2,
           "class_names": ["a", "b"], "split": "train", "channel_names": [], "attribution": ""}
    read = DataInfo.from_dict(old)
    assert read.kind == "images" and read.target_channels == 0 and read.columns == () and read.sizes == ()
    assert read.class_names == ("a", "b")


# ------------------------------------------------------------------------------------- paired: two folders


def _drive_like(root: Path, ids: list[int], side: int = 12) -> tuple[Path, Path, Path]:
    """DRIVE's layout and names: images/NN_training.tif, 1st_manual/NN_manual1.gif, mask/NN_training_mask.gif.
    Image NN has the uniform value NN*5; its vessel mask is all white for even NN, black for odd NN."""
    images, manual, fov = root / "images", root / "1st_manual", root / "mask"
    for folder in (images, manual, fov):
        folder.mkdir(parents=True)
    for n in ids:
        Image.fromarray(np.full((side, side + 2, 3), n * 5, np.uint8)).save(images / f"{n}_training.tif")
        Image.fromarray(np.full((side, side + 2), 255 * (n % 2 == 0), np.uint8)).save(manual / f"{n}_manual1.gif")
        ring = np.zeros((side, side + 2), np.uint8)
        ring[2:-2, 2:-2] = 255
        Image.fromarray(ring).save(fov / f"{n}_training_mask.gif")
    return images, manual, fov


def _check_drive_alignment(ds: ImageDataset) -> None:
    for i in range(len(ds)):
        n = int(Path(ds.meta[i]["path"]).name.split("_")[0])
        assert Path(ds.meta[i]["target_path"]).name == f"{n}_manual1.gif"
        assert Path(ds.meta[i]["mask_path"]).name == f"{n}_training_mask.gif"
        assert torch.allclose(ds.images[i], torch.full_like(ds.images[i], n * 5 / 127.5 - 1), atol=1e-5)
        assert torch.all(ds.targets[i] == float(n % 2 == 0))


def test_paired_folders_drive_names_with_fov(tmp_path: Path) -> None:
    images, manual, fov = _drive_like(tmp_path, [21, 22, 23, 24, 25])
    ds = load_training_set(images, target=manual, fov=fov, size=8, split="all")  # kind "auto": paired
    assert isinstance(ds, ImageDataset) and len(ds) == 5
    assert ds.images.shape == (5, 3, 8, 8) and ds.targets.shape == (5, 1, 8, 8) and ds.masks.shape == (5, 1, 8, 8)
    assert ds.images.dtype == ds.targets.dtype == ds.masks.dtype == torch.float32
    assert set(ds.masks.unique().tolist()) == {0.0, 1.0} and set(ds.targets.unique().tolist()) <= {0.0, 1.0}
    _check_drive_alignment(ds)
    info = ds.info
    assert (info.kind, info.channels, info.target_channels, info.target_is_mask) == ("paired", 3, 1, True)
    assert info.target_names == ("mask",) and info.target_source == str(manual) and info.height == 8
    spec = ds.spec()
    assert spec.kind == "paired" and spec.channels == {"image": 3, "mask": 1, "target": 1}
    batch = ds.batches(2, seed=0).next()
    assert set(batch) == {"image", "mask", "target"}

    # The same pairs by an explicit key; channels pick the image side only.
    green = load_paired(images, target=manual, fov=fov, match=r"^(\d+)_", channels="green", size=8, split="all")
    assert green.images.shape == (5, 1, 8, 8) and green.info.channel_names == ("green",)
    assert green.targets.shape == (5, 1, 8, 8)


def test_paired_folders_unmatched_file_is_one_line_error(tmp_path: Path) -> None:
    images, manual, fov = _drive_like(tmp_path, [21, 22, 23])
    (manual / "22_manual1.gif").unlink()
    with pytest.raises(DataError) as exc:
        load_paired(images, target=manual, split="all")
    message = _one_line(exc)
    assert str(images) in message and str(manual) in message and "22_training.tif" in message
    with pytest.raises(DataError) as exc:
        load_paired(images, target=manual, match=r"^(\d+)_", split="all")
    assert "22_training.tif" in _one_line(exc)
    # A target file no image claims is left out with a warning.
    Image.fromarray(np.zeros((12, 14), np.uint8)).save(manual / "22_manual1.gif")
    Image.fromarray(np.zeros((12, 14), np.uint8)).save(manual / "99_manual1.gif")
    with pytest.warns(UserWarning, match="99_manual1.gif"):
        assert len(load_paired(images, target=manual, split="all")) == 3


def test_paired_folders_reject_misuse(tmp_path: Path) -> None:
    images, manual, _ = _drive_like(tmp_path, [1, 2, 3])
    with pytest.raises(ConfigError):
        load_paired(images, split="all")  # neither target nor pair
    with pytest.raises(ConfigError):
        load_paired(images, target=manual, pair="0:1")
    with pytest.raises(ConfigError, match="mask_key"):
        load_paired(images, target=manual, mask_key="m")  # npz options do not apply to folders
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(manual / "2_manual1.gif")
    with pytest.raises(DataError, match="2_manual1.gif.*must be the size"):
        load_paired(images, target=manual, split="all")


def test_paired_folders_split_by_patient_folder(tmp_path: Path) -> None:
    """Patient sub-folders: the split keeps each patient whole, and every image keeps its own target."""
    rng = np.random.default_rng(0)
    for p in range(10):
        for s in range(3):
            value = p * 20 + s
            for side, name in (("scans", f"P{p:02d}_{s}.png"), ("maps", f"P{p:02d}_{s}_t2.png")):
                folder = tmp_path / side / f"P{p:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                noise = rng.integers(0, 3, (10, 10))  # a grey target with many values: an image, not a mask
                pixels = value + noise if side == "maps" else np.full((10, 10), value)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / name)
    seen: dict[str, set[str]] = {}
    total = 0
    for split in ("train", "val", "test"):
        ds = load_paired(tmp_path / "scans", target=tmp_path / "maps", split=split)
        total += len(ds)
        assert not ds.info.target_is_mask and ds.targets.min() >= -1 and ds.info.target_names == ()
        seen[split] = set(ds.patients.tolist())
        for i in range(len(ds)):
            assert Path(ds.meta[i]["target_path"]).name == Path(ds.meta[i]["path"]).stem + "_t2.png"
            assert ds.meta[i]["path"].split("/")[-2] == ds.patients[i]
            # the target of image i is its own (value + 0..2), never another slice's
            assert 0 <= float((ds.targets[i] - ds.images[i]).mean()) * 127.5 <= 2.01
    assert total == 30
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])


# ------------------------------------------------------------------------------- paired: one source (npz)


def _npz(path: Path, n: int = 24, patients: int = 8, side: int = 8, masks: bool = True) -> Path:
    """(N, 3, H, W) uint8 images whose channel c of row i is uniform (i * 3 + c) % 256; masks mark row parity."""
    rows = np.arange(n)
    images = ((rows[:, None] * 3 + np.arange(3)[None]) % 256).astype(np.uint8)
    arrays = {
        "images": np.broadcast_to(images[:, :, None, None], (n, 3, side, side)).copy(),
        "patient": np.asarray([f"p{i % patients}" for i in rows]),
        "channel_names": np.asarray(["t1", "flair", "t1ce"]),
    }
    if masks:
        arrays["masks"] = np.broadcast_to((rows % 2)[:, None, None], (n, side, side)).astype(np.uint8).copy()
    np.savez(path, **arrays)
    return path


def _row_of(image: torch.Tensor, channel: int = 0) -> int:
    """The row an image came from (see :func:`_npz`)."""
    return (round((float(image.mean()) + 1) * 127.5) - channel) // 3


def test_paired_channels_of_one_array_split_once_by_patient(tmp_path: Path) -> None:
    path = _npz(tmp_path / "mri.npz")
    by_split = {}
    for split in ("train", "val", "test"):
        ds = load_training_set(path, pair="t1,flair:t1ce", split=split)
        assert ds.images.shape[1:] == (2, 8, 8) and ds.targets.shape[1:] == (1, 8, 8)
        assert ds.info.channel_names == ("t1", "flair") and ds.info.target_names == ("t1ce",)
        assert ds.info.kind == "paired" and not ds.info.target_is_mask and ds.masks is not None
        for i in range(len(ds)):  # image and target of one sample come from one row
            row = _row_of(ds.images[i, :1])
            assert _row_of(ds.targets[i], channel=2) == row and ds.patients[i] == f"p{row % 8}"
        by_split[split] = set(ds.patients.tolist())
    assert sum(len(s) for s in by_split.values()) == 8
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    by_index = load_paired(path, pair="0:2", split="all")
    assert by_index.info.channel_names == ("t1",) and torch.equal(by_index.targets[:, 0], by_index.targets[:, 0])
    with pytest.raises(ConfigError):
        load_paired(path, pair="0:0")
    with pytest.raises(ConfigError):
        load_paired(path, pair="0:2", channels="flair")
    with pytest.raises(ConfigError):
        load_paired(path, pair="t1:nope")


def test_paired_image_mask_of_one_source(tmp_path: Path) -> None:
    path = _npz(tmp_path / "seg.npz")
    ds = load_paired(path, pair="image:mask", split="all")
    assert ds.masks is None and ds.targets.shape == (24, 1, 8, 8)
    assert ds.info.target_is_mask and ds.info.target_names == ("mask",) and ds.info.channels == 3
    for i in range(len(ds)):
        assert torch.all(ds.targets[i] == float(_row_of(ds.images[i]) % 2))
    back = load_paired(path, pair="mask:image", split="all")
    assert set(back.images.unique().tolist()) == {-1.0, 1.0} and not back.info.target_is_mask
    with pytest.raises(DataError, match="has no masks"):
        load_paired(_npz(tmp_path / "plain.npz", masks=False), pair="image:mask", split="all")


# ------------------------------------------------------------------------------------------------ unpaired


def _domain_npz(path: Path, n: int, sign: int) -> Path:
    """n images with distinct uniform values, all positive (sign 1) or all negative (sign -1) in [-1, 1]."""
    values = (0.05 + 0.9 * np.arange(n) / n) * sign
    np.savez(path, images=np.broadcast_to(values[:, None, None, None], (n, 1, 4, 4)).astype(np.float32).copy())
    return path


def test_unpaired_two_sources_sampled_independently_with_state(tmp_path: Path) -> None:
    a, b = _domain_npz(tmp_path / "a.npz", 30, 1), _domain_npz(tmp_path / "b.npz", 17, -1)
    data = load_training_set(a, kind="unpaired", target=b, split="all")
    assert isinstance(data, UnpairedSet) and data.sizes == (30, 17) and len(data) == 30
    assert data.info.kind == "unpaired" and data.info.sizes == (30, 17) and data.info.target_source == str(b)
    assert data.spec().kind == "unpaired"
    values_a = set(data.domain_a.tensors["image"][:, 0, 0, 0].tolist())
    values_b = set(data.domain_b.tensors["target"][:, 0, 0, 0].tolist())
    stream = data.batches(4, seed=3)
    drawn_a, drawn_b = [], []
    for _ in range(10):  # more than one epoch of B (17 // 4 batches), under two of A
        batch = stream.next()
        assert set(batch) == {"image", "target"}
        drawn_a += batch["image"][:, 0, 0, 0].tolist()
        drawn_b += batch["target"][:, 0, 0, 0].tolist()
    assert set(drawn_a) <= values_a and set(drawn_b) <= values_b
    # Independent orders: B, the smaller domain, starts its second epoch while A is still in its first.
    assert len(set(drawn_a[:28])) == 28 and len(set(drawn_b[:16])) == 16 and len(set(drawn_b[16:32])) == 16

    state = {k: v.clone() for k, v in stream.state().items()}
    assert any(k.startswith("sampler_a/") for k in state) and any(k.startswith("sampler_b/") for k in state)
    after = [stream.next() for _ in range(6)]
    resumed = data.batches(4, seed=99)
    resumed.load_state(state)
    again = [resumed.next() for _ in range(6)]
    for x, y in zip(after, again, strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["target"], y["target"])


def test_unpaired_one_npz_uses_disjoint_patients(tmp_path: Path) -> None:
    path = _npz(tmp_path / "mri.npz", n=60, patients=12)
    data = load_unpaired(path, pair="flair:t1ce", split="train")
    pa, pb = set(data.domain_a.patients.tolist()), set(data.domain_b.patients.tolist())
    assert pa and pb and not (pa & pb)
    train = load_paired(path, pair="flair:t1ce", split="train")
    assert sum(data.sizes) == len(train) and pa | pb == set(train.patients.tolist())
    assert data.info.channel_names == ("flair",) and data.info.target_names == ("t1ce",)
    for i in range(len(data.domain_b)):  # domain B holds channel t1ce of its own rows
        sample = data.domain_b[i]
        assert sample["meta"]["patient"] in pb
    with pytest.raises(ConfigError):
        load_unpaired(path, split="all")


# ------------------------------------------------------------------------------------------------- records


def _records_csv(path: Path, patients: int = 20, visits: int = 3) -> Path:
    rng = np.random.default_rng(1)
    lines = ["patient_id,E11,I10,N18,metformin_count"]
    for p in range(patients):
        for _ in range(visits):
            codes = rng.integers(0, 2, 3).tolist() + [int(rng.integers(0, 5))]
            lines.append(",".join([f"P{p:03d}", *map(str, codes)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_records_csv_split_by_patient(tmp_path: Path) -> None:
    path = _records_csv(tmp_path / "ehr.csv")
    parts = {}
    for split in ("train", "val", "test"):
        data = load_training_set(path, split=split)  # kind "auto": records for a CSV
        assert isinstance(data, TensorSet) and data.kind == "records"
        record = data.tensors["record"]
        assert record.dtype == torch.float32 and record.shape[1] == 4
        assert data.columns == ("E11", "I10", "N18", "metformin_count") == data.info.columns
        assert (data.info.kind, data.info.channels, data.info.height, data.info.width) == ("records", 4, 1, 1)
        assert data.spec().kind == "records" and data.spec().channels == {"record": 4}
        parts[split] = (len(data), set(data.patients.tolist()))
        assert len(data) == 3 * len(parts[split][1])  # every visit of a patient comes along
    assert sum(n for n, _ in parts.values()) == 60
    seen = [ids for _, ids in parts.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    batch = load_records(path, split="all").batches(8, seed=0).next()
    assert set(batch) == {"record"} and batch["record"].shape == (8, 4)


@pytest.mark.parametrize(
    ("cell", "problem"), [("yes", "is not a number"), ("-1", "is negative"), ("nan", "is not finite"), ("", "")]
)
def test_records_bad_cell_is_one_line_error(tmp_path: Path, cell: str, problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"subject_id,a,b\ns1,0,1\ns2,1,{cell}\ns3,0,0\n")
    with pytest.raises(DataError) as exc:
        load_records(path, split="all")
    message = _one_line(exc)
    assert str(path) in message and "line 3" in message and "column 'b'" in message and problem in message


def test_records_refuse_image_options_and_per_row_split_warns(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("a,b\n" + "".join(f"{i % 2},{i}\n" for i in range(10)))
    with pytest.raises(ConfigError, match="size=64"):
        load_records(path, size=64)
    with pytest.raises(ConfigError, match="channels"):
        load_training_set(path, channels="0")
    with pytest.raises(ConfigError):
        load_training_set(path, pair="a:b", kind="records")
    with pytest.warns(UserWarning, match="per row"):
        data = load_records(path, split="train")
    assert data.patients is None and data.info.columns == ("a", "b") and 0 < len(data) < 10
    with pytest.raises(DataError, match="line 3 has 3 cells"):
        (tmp_path / "ragged.csv").write_text("a,b\n1,2\n1,2,3\n")
        load_records(tmp_path / "ragged.csv", split="all")


def test_records_parquet_without_pandas_says_what_to_install(tmp_path: Path) -> None:
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        path = tmp_path / "x.parquet"
        path.write_bytes(b"PAR1")
        with pytest.raises(DataError, match="pip install pandas pyarrow"):
            load_records(path, split="all")
    else:
        pytest.skip("pandas and pyarrow are installed: the missing-dependency message cannot be shown")


# ---------------------------------------------------------------------------------------------- real data


def test_drive_training_set_paired_with_fov() -> None:
    if not DRIVE.is_dir():
        pytest.skip(f"real data not found: {DRIVE}")
    ds = load_paired(DRIVE / "images", target=DRIVE / "1st_manual", fov=DRIVE / "mask", size=32, split="all")
    assert len(ds) == 20 and ds.images.shape == (20, 3, 32, 32) and ds.info.target_is_mask
    assert ds.targets.shape == ds.masks.shape == (20, 1, 32, 32)
    for m in ds.meta:  # 21_training.tif <-> 21_manual1.gif <-> 21_training_mask.gif
        n = Path(m["path"]).name.split("_")[0]
        assert Path(m["target_path"]).name == f"{n}_manual1.gif" and Path(m["mask_path"]).name.startswith(n + "_")
    vessels, fov = ds.targets.mean().item(), ds.masks.mean().item()
    assert 0.03 < vessels < 0.25 and 0.5 < fov < 0.9  # thin vessels inside a round field of view
    assert float((ds.targets * (1 - ds.masks)).sum()) < 0.01 * float(ds.targets.sum()) + 1  # vessels in the fov


def test_lgg_paired_by_channels_split_by_patient() -> None:
    if not LGG.is_file():
        pytest.skip(f"real data not found: {LGG}")
    ds = load_paired(LGG, pair="pre-contrast:post-contrast", size=32, split="val")
    assert ds.info.channel_names == ("pre-contrast",) and ds.info.target_names == ("post-contrast",)
    assert ds.images.shape[1:] == ds.targets.shape[1:] == (1, 32, 32) and ds.masks is not None
    with np.load(LGG) as arrays:
        patients, splits = arrays["patient"], arrays["split"]
    val = set(patients[splits == "val"].tolist())
    assert set(ds.patients.tolist()) == val and len(ds) == int((splits == "val").sum())
    assert not val & set(patients[splits != "val"].tolist())  # no val patient has slices in another split


def test_no_warnings_leak_from_paired_folders_with_split_all(tmp_path: Path) -> None:
    images, manual, fov = _drive_like(tmp_path, [1, 2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_paired(images, target=manual, fov=fov, split="all")
