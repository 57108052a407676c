"""Label-map mask targets (``mask_values="labels"``) for segmentation, the refusal of label maps read as binary
masks, and the split-fraction options of ``DataConfig`` / ``synthmed train``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthmed.cli import app
from synthmed.data import load_dataset, load_training_set
from synthmed.data.splits import random_split
from synthmed.errors import ConfigError, DataError
from synthmed.training.config import DataConfig

N = 8
SIDE = 8


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _one_line(excinfo: pytest.ExceptionInfo, path: Path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message, message
    return message


def _test_index() -> int:
    """The image of a flat 8-pair folder that the default split (seed 0, 0.1 / 0.2) puts in ``test``: paired
    folders without patients split per image, as :func:`random_split` does."""
    return int(random_split(N)["test"][0])


def _paired_labels(root: Path, two_at: int | None = None, suffix: str = ".png") -> tuple[Path, Path]:
    """8 grey images and label-map targets: classes 0 and 1 everywhere, class 2 only in image ``two_at``."""
    images, masks = root / "images", root / "masks"
    for i in range(N):
        _save(images / f"{i:02d}.png", np.full((SIDE, SIDE), 20 * i, np.uint8))
        label = np.zeros((SIDE, SIDE), np.uint8)
        label[:4] = 1
        if i == two_at:
            label[6:] = 2
        _save(masks / f"{i:02d}{suffix}", label)
    return images, masks


def _load(source: Path, **options: object) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "split made per image": these pairs have no patient ids
        return load_training_set(source, **options)


def test_paired_label_maps_keep_classes_counted_over_every_split(tmp_path: Path) -> None:
    images, masks = _paired_labels(tmp_path, two_at=_test_index())
    train = _load(images, target=masks, mask_values="labels")
    assert train.info.target_is_mask and train.info.mask_classes == 3
    assert 2.0 not in train.targets.unique().tolist()  # class 2 lies only in the test split
    assert train.targets.dtype.is_floating_point and train.targets.shape[1:] == (1, SIDE, SIDE)
    every = _load(images, target=masks, mask_values="labels", split="all", size=4)  # nearest neighbour keeps indices
    assert set(every.targets.unique().tolist()) == {0.0, 1.0, 2.0} and every.info.mask_classes == 3


def test_label_maps_read_as_binary_are_refused(tmp_path: Path) -> None:
    images, masks = _paired_labels(tmp_path, two_at=_test_index())
    with pytest.raises(DataError) as excinfo:
        _load(images, target=masks)  # target_masks decided from the files
    assert "labels" in _one_line(excinfo, masks) and "distinct values" in str(excinfo.value)
    with pytest.raises(DataError, match="mask_values='labels'"):
        _load(images, target=masks, target_masks=True)
    as_images = _load(images, target=masks, target_masks=False)  # said to be images: read as images
    assert not as_images.info.target_is_mask and as_images.info.mask_classes == 0


def test_binary_pairs_of_labels_spread_over_files_are_refused(tmp_path: Path) -> None:
    """No file holds three values, but one holds {0, 1} and another {0, 2}: still a label map."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(N):
        _save(images / f"{i:02d}.png", np.full((SIDE, SIDE), 20 * i, np.uint8))
        _save(masks / f"{i:02d}.png", np.eye(SIDE, dtype=np.uint8) * (2 if i == _test_index() else 1))
    with pytest.raises(DataError, match="3 distinct values.*mask_values='labels'"):
        _load(images, target=masks)


def test_npz_masks_as_label_targets(tmp_path: Path) -> None:
    masks = np.zeros((10, SIDE, SIDE), np.uint8)
    masks[:, 0, :4] = [0, 1, 2, 3]
    masks[9, 1, 0] = 3
    path = tmp_path / "seg.npz"
    np.savez(path, images=np.zeros((10, SIDE, SIDE), np.uint8), masks=masks,
             patient=np.arange(10).astype(str))
    paired = load_training_set(path, pair="image:mask", mask_values="labels", split="all")
    assert paired.info.mask_classes == 4 and paired.info.target_is_mask
    assert set(paired.targets.unique().tolist()) == {0.0, 1.0, 2.0, 3.0}
    train = load_training_set(path, pair="image:mask", mask_values="labels")
    assert train.info.mask_classes == 4  # from every row, whatever the split holds
    with pytest.raises(DataError, match="4 distinct values.*mask_values='labels'"):
        load_training_set(path, pair="image:mask", split="all")
    # Plain image data keep the documented rule for their masks: any label > 0 is foreground.
    images = load_dataset(path, split="all")
    assert set(images.masks.unique().tolist()) == {0.0, 1.0} and images.info.mask_classes == 0
    with pytest.raises(ConfigError, match="pair='image:mask'"):
        load_training_set(path, pair="mask:image", mask_values="labels")
    with pytest.raises(ConfigError, match="mask targets"):
        load_training_set(path, mask_values="labels", kind="images")


def test_non_integer_negative_and_colour_label_maps_name_the_file(tmp_path: Path) -> None:
    images, masks = _paired_labels(tmp_path, suffix=".tif")
    bad = masks / "03.tif"
    Image.fromarray(np.full((SIDE, SIDE), 0.5, np.float32)).save(bad)
    with pytest.raises(DataError) as excinfo:
        _load(images, target=masks, mask_values="labels", split="all")
    assert "non-integer" in _one_line(excinfo, bad)
    Image.fromarray(np.full((SIDE, SIDE), -1, np.int32)).save(bad)
    with pytest.raises(DataError) as excinfo:
        _load(images, target=masks, mask_values="labels", split="all")
    assert "negative" in _one_line(excinfo, bad)
    Image.fromarray(np.zeros((SIDE, SIDE, 3), np.uint8)).save(bad)
    with pytest.raises(DataError) as excinfo:
        _load(images, target=masks, mask_values="labels", split="all")
    assert "colour" in _one_line(excinfo, bad)
    path = tmp_path / "float.npz"
    np.savez(path, images=np.zeros((4, SIDE, SIDE), np.uint8), masks=np.full((4, SIDE, SIDE), 0.25, np.float32))
    with pytest.raises(DataError) as excinfo:
        load_training_set(path, pair="image:mask", mask_values="labels", split="all")
    assert "non-integer" in _one_line(excinfo, path)


def test_binary_masks_unchanged(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(N):
        _save(images / f"{i:02d}.png", np.full((SIDE, SIDE), 20 * i, np.uint8))
        _save(masks / f"{i:02d}.png", np.eye(SIDE, dtype=np.uint8) * 255)
    ds = _load(images, target=masks, split="all")
    assert ds.info.target_is_mask and ds.info.mask_classes == 0
    assert set(ds.targets.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(DataError, match="0 and 255.*mask_values='binary'"):
        _load(images, target=masks, split="all", mask_values="labels")


def test_folder_mask_files_as_label_targets(tmp_path: Path) -> None:
    for i in range(4):
        _save(tmp_path / f"s{i}.png", np.full((SIDE, SIDE), 30 * i, np.uint8))
        _save(tmp_path / f"s{i}_mask.png", np.full((SIDE, SIDE), i % 3, np.uint8))
    ds = _load(tmp_path, pair="image:mask", mask_values="labels", split="all")
    assert ds.info.mask_classes == 3 and set(ds.targets.unique().tolist()) == {0.0, 1.0, 2.0}
    with pytest.raises(DataError, match="mask_values='labels'"):
        _load(tmp_path, pair="image:mask", split="all")


def test_data_config_and_cli_options(tmp_path: Path) -> None:
    text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert all(flag in text for flag in ("--mask-values", "--val-fraction", "--test-fraction"))
    with pytest.raises(ConfigError) as excinfo:
        DataConfig(val_fraction=0.6, test_fraction=0.5)
    assert "\n" not in str(excinfo.value) and "sum to less than 1" in str(excinfo.value)
    for bad in ({"val_fraction": 1.0}, {"test_fraction": -0.1}, {"mask_values": "multi"}):
        with pytest.raises(ConfigError):
            DataConfig(**bad)
    assert "val_fraction" not in DataConfig().loader_options()  # unset: each loader keeps its own default

    images, masks = _paired_labels(tmp_path)
    config = DataConfig(source=str(images), target=str(masks), mask_values="labels", val_fraction=0.25,
                        test_fraction=0.0)
    options = config.loader_options()
    assert options["test_fraction"] == 0.0 and options["mask_values"] == "labels"
    sizes = {split: len(_load(images, **{**options, "split": split})) for split in ("train", "val")}
    assert sizes == {"train": 6, "val": 2}
    with pytest.raises(DataError, match="split 'test' is empty"):
        _load(images, **{**options, "split": "test"})
