"""Labels from a CSV for image folders (synthmed.data.labels): matching, class order, errors, splits."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.data import load_dataset, load_training_set, stratified_patient_split
from synthmed.errors import ConfigError, DataError
from synthmed.training.config import DataConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PH2 = SHARED / "ph2"


def _png(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def _csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def _ph2_like(root: Path, diagnoses: dict[str, int]) -> tuple[Path, Path]:
    """PH2's layout: images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.png + its lesion mask; a CSV per case."""
    images = root / "images"
    for name in diagnoses:
        _png(images / name / f"{name}_Dermoscopic_Image" / f"{name}.png")
        _png(images / name / f"{name}_lesion" / f"{name}_lesion.png", 255)
    rows = "\n".join(f"{name},{value},0" for name, value in diagnoses.items())
    return images, _csv(root / "PH2_dataset.csv", "Name,Clinical Diagnosis,Asymmetry\n" + rows)


def _label_of(ds, path_part: str) -> str:
    row = next(i for i, m in enumerate(ds.meta) if path_part in m["path"])
    return ds.info.class_names[int(ds.labels[row])]


def _quiet_load(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the per-image split warning of flat folders is not under test here
        return load_dataset(*args, **kwargs)


def test_case_folders_are_looked_up_and_merged_by_the_label_map(tmp_path: Path) -> None:
    images, table = _ph2_like(tmp_path, {"IMD002": 0, "IMD003": 1, "IMD004": 2, "IMD005": 2})
    ds = load_dataset(images, labels=table, label_column="Clinical Diagnosis", label_map="0=other,1=other,2=melanoma",
                      split="all")
    assert ds.info.class_names == ("other", "melanoma") and ds.info.num_classes == 2
    assert [_label_of(ds, n) for n in ("IMD002", "IMD003", "IMD004", "IMD005")] == ["other", "other", "melanoma",
                                                                                     "melanoma"]
    assert ds.masks is not None and sorted(set(ds.patients.tolist())) == ["IMD002", "IMD003", "IMD004", "IMD005"]


def test_class_order_without_a_map_is_numeric_then_alphabetical(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d", "e"):
        _png(tmp_path / "imgs" / f"{name}.png")
    table = _csv(tmp_path / "labels.csv", "file,grade\na,10\nb,2\nc,01\nd,zeta\ne,alpha\nunused,3.5")
    ds = _quiet_load(tmp_path / "imgs", labels=table, split="all")
    # Every value of the column (also rows naming no image) in order: numbers numerically, then the rest.
    assert ds.info.class_names == ("1", "2", "3.5", "10", "alpha", "zeta")
    assert _label_of(ds, "c.png") == "1" and _label_of(ds, "a.png") == "10"


def test_label_map_orders_classes_by_first_appearance(tmp_path: Path) -> None:
    images, table = _ph2_like(tmp_path, {"IMD002": 0, "IMD003": 2})
    ds = load_dataset(images, labels=table, label_column="Clinical Diagnosis", label_map="2=melanoma,0=other,1=other",
                      split="all")
    assert ds.info.class_names == ("melanoma", "other")
    assert _label_of(ds, "IMD003") == "melanoma" and int(ds.labels.sum()) == 1  # IMD002 is class 1, "other"


def test_file_names_with_extension_and_other_columns_by_name(tmp_path: Path) -> None:
    for name in ("ISIC_1", "ISIC_2", "ISIC_3"):
        _png(tmp_path / "imgs" / f"{name}.png")
    # HAM10000-like: the first column is the lesion, not the image; the key and label columns are named.
    table = _csv(tmp_path / "meta.csv", "lesion_id,image_id,dx\nL1,ISIC_1.png,nv\nL1,ISIC_2.png,nv\nL2,ISIC_3.png,mel")
    ds = _quiet_load(tmp_path / "imgs", labels=table, label_key_column="image_id", label_column="dx", split="all")
    assert ds.info.class_names == ("mel", "nv") and _label_of(ds, "ISIC_3") == "mel"
    with pytest.raises(DataError, match="names 'L1' twice"):  # the default key (first column) repeats
        _quiet_load(tmp_path / "imgs", labels=table, label_column="dx", split="all")


@pytest.mark.parametrize(
    ("rows", "options", "message"),
    [
        ("Name,dx\nIMD002,0", {}, "has no row for image IMD003.png .*case folder 'IMD003'"),
        ("Name,dx\nIMD002,0\nIMD003,", {}, "row 'IMD003' .* has no value in column 'dx'"),
        ("Name,dx\nIMD002,0\nIMD003,7", {"label_map": "0=a,1=b"}, "dx '7', which label_map does not name"),
        ("Name,dx\nIMD002,0\nIMD003,1\nIMD002,1", {}, "names 'IMD002' twice"),
        ("Name,dx\nIMD002,0\nIMD003,1", {"label_column": "diagnosis"}, "no label column 'diagnosis'"),
    ],
)
def test_bad_tables_are_one_line_errors_naming_the_csv(tmp_path: Path, rows: str, options: dict,
                                                       message: str) -> None:
    images, _ = _ph2_like(tmp_path, {"IMD002": 0, "IMD003": 1})
    table = _csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=message) as excinfo:
        load_dataset(images, labels=table, split="all", **options)
    assert str(excinfo.value).startswith(str(table)) and "\n" not in str(excinfo.value)


def test_names_matching_by_file_and_by_folder_with_different_labels_are_refused(tmp_path: Path) -> None:
    _png(tmp_path / "imgs" / "caseA" / "img1.png")
    _png(tmp_path / "imgs" / "caseB" / "img2.png")
    table = _csv(tmp_path / "t.csv", "name,label\ncaseA,0\ncaseB,1\nimg1,1\nimg2,0")
    with pytest.raises(DataError, match="by file .* and by case folder .* different labels"):
        load_dataset(tmp_path / "imgs", labels=table, split="all")


def test_one_file_name_in_two_folders_needs_case_keys(tmp_path: Path) -> None:
    _png(tmp_path / "imgs" / "p1" / "slice.png")
    _png(tmp_path / "imgs" / "p2" / "slice.png")
    with pytest.raises(DataError, match="row 'slice' matches 2 images by file name"):
        load_dataset(tmp_path / "imgs", labels=_csv(tmp_path / "t.csv", "name,label\nslice,0"), split="all")
    ds = load_dataset(tmp_path / "imgs", labels=_csv(tmp_path / "c.csv", "case,label\np1,0\np2,1"), split="all")
    assert ds.info.class_names == ("0", "1") and _label_of(ds, "p2") == "1"


def test_splits_are_stratified_and_keep_each_case_whole(tmp_path: Path) -> None:
    cases = {f"case{i:02d}": (1 if i < 10 else 0) for i in range(40)}  # 10 of 40 positive
    for name in cases:
        for k in range(2):  # two images per case: a case must never straddle splits
            _png(tmp_path / "imgs" / name / f"{name}_{k}.png", 10 * k)
    table = _csv(tmp_path / "t.csv", "case,positive\n" + "\n".join(f"{n},{v}" for n, v in cases.items()))
    splits = {s: load_dataset(tmp_path / "imgs", labels=table, split=s) for s in ("train", "val", "test")}
    patients = {s: set(ds.patients.tolist()) for s, ds in splits.items()}
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])
    assert set().union(*patients.values()) == set(cases)
    positives = {s: int(ds.labels.sum()) // 2 for s, ds in splits.items()}  # cases: 2 images each
    assert positives == {"train": 7, "val": 1, "test": 2}, positives  # 10 cases at 0.7 / 0.1 / 0.2


def test_stratified_patient_split_counts_patients_by_their_majority_class() -> None:
    patients = np.array(["a", "a", "a", "b", "c", "d", "e", "f", "g"])
    labels = np.array([1, 1, 0, 0, 0, 0, 1, 1, 1])  # a: mostly 1
    parts = stratified_patient_split(patients, labels, val_fraction=0.0, test_fraction=0.34, seed=3)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(9))
    test_patients = set(patients[parts["test"]].tolist())
    assert len(test_patients & {"b", "c", "d"}) == 1 and len(test_patients & {"a", "e", "f", "g"}) == 1
    again = stratified_patient_split(patients[::-1], labels[::-1], val_fraction=0.0, test_fraction=0.34, seed=3)
    assert set(patients[::-1][again["test"]].tolist()) == test_patients  # row order does not matter


def test_label_options_without_labels_and_sources_without_file_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="label_column need labels=CSV"):
        load_dataset(tmp_path, label_column="dx")
    table = _csv(tmp_path / "t.csv", "name,label\na,0")
    for source in (None, "breastmnist", "medmnist:dermamnist"):
        with pytest.raises(ConfigError, match="cannot label"):
            load_dataset(source, labels=table)
    np.savez(tmp_path / "x.npz", images=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ConfigError, match="label_key"):
        load_dataset(tmp_path / "x.npz", labels=table)
    images, ph2_table = _ph2_like(tmp_path / "ph2", {"IMD002": 0, "IMD003": 1})
    with pytest.raises(ConfigError, match="folder_groups='class'"):
        load_dataset(images, labels=ph2_table, folder_groups="class")


def test_run_config_passes_the_label_options_to_the_loader(tmp_path: Path) -> None:
    images, table = _ph2_like(tmp_path, {f"IMD{i:03d}": i % 3 for i in range(12)})
    config = DataConfig(source=str(images), split="all", labels=str(table), label_column="Clinical Diagnosis",
                        label_map="0=other,1=other,2=melanoma")
    data = load_training_set(config.source, **config.loader_options())
    assert data.info.class_names == ("other", "melanoma") and data.info.num_classes == 2
    assert int(data.labels.sum()) == 4
    records = _csv(tmp_path / "codes.csv", "a,b\n1,0\n0,1\n1,1")
    with pytest.raises(ConfigError, match="labels=.* does not apply to records"):
        load_training_set(records, labels=str(table), split="all")
    with pytest.raises(ConfigError, match="labels=.* does not apply to unpaired data"):
        load_training_set(images, kind="unpaired", pair="image:mask", labels=str(table), split="all")


def test_nifti_folders_take_labels_by_case_folder(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    for i in range(6):
        path = tmp_path / "vols" / f"sub{i}" / "t1.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.full((8, 8, 2), float(i + 1), np.float32), np.eye(4)), path)
    table = _csv(tmp_path / "t.csv", "subject,group\n" + "\n".join(f"sub{i},{'AD' if i < 3 else 'CN'}"
                                                                    for i in range(6)))
    ds = load_dataset(tmp_path / "vols", labels=table, split="all")
    assert ds.info.class_names == ("AD", "CN") and ds.labels.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]


def test_real_ph2_melanoma_against_the_rest() -> None:
    if not PH2.exists():
        pytest.skip(f"shared data {PH2} absent")
    options = {"labels": PH2 / "PH2_dataset.csv", "label_column": "Clinical Diagnosis",
               "label_map": "0=other,1=other,2=melanoma", "size": 16}
    splits = {s: load_dataset(PH2 / "images", split=s, **options) for s in ("train", "val", "test")}
    assert all(ds.info.class_names == ("other", "melanoma") and ds.info.num_classes == 2 for ds in splits.values())
    assert sum(len(ds) for ds in splits.values()) == 160
    assert sum(int(ds.labels.sum()) for ds in splits.values()) == 32
    assert all(int(ds.labels.sum()) > 0 for ds in splits.values()), "stratified: melanoma in every split"
    paths = {s: {m["path"] for m in ds.meta} for s, ds in splits.items()}
    cases = {s: set(ds.patients.tolist()) for s, ds in splits.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not paths[a] & paths[b] and not cases[a] & cases[b], (a, b)
