"""Data loading: every source ends in one in-memory :class:`ImageDataset` (float32 images in [-1, 1]).

>>> ds = load_dataset()                                   # embedded BreastMNIST, train split
>>> ds = load_dataset("medmnist:dermamnist", size=64)     # downloaded once, MD5-verified, cached
>>> ds = load_dataset("lgg_mri_128.npz", channels="flair", size=64)
>>> ds = load_dataset("scans/", split="val")              # image folder, DICOM or NIfTI folder
>>> ds = load_dataset("ph2/images", labels="ph2/PH2_dataset.csv", label_column="Clinical Diagnosis",
...                   label_map="0=other,1=other,2=melanoma")  # classes from a CSV (synthmed.data.labels)

Test splits are for final evaluation only; never train a GAN on them (see :mod:`synthmed.data.splits`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from synthmed.data import medmnist
from synthmed.data._core import RawData, assemble, reading_mask_targets
from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.data.dicom import DICOM_SUFFIXES, load_dicom, looks_like_dicom, read_dicom
from synthmed.data.folder import FOLDER_GROUPS, IMAGE_FORMATS, list_files, read_image_folder
from synthmed.data.intensity import check_intensity_range
from synthmed.data.labels import LabelSource, assign_labels, sample_names
from synthmed.data.nifti import is_nifti, load_nifti, read_nifti
from synthmed.data.normalize import check_normalize
from synthmed.data.npz import read_npz
from synthmed.data.sets import DataSpec, TensorSet, TrainingSet, UnpairedSet
from synthmed.data.splits import patient_split, random_split, stratified_patient_split, stratified_split
from synthmed.data.transforms import check_mask_values, pad_to, to_uint8
from synthmed.errors import ConfigError, DataError

__all__ = [
    "DataInfo",
    "DataSpec",
    "ImageDataset",
    "TensorSet",
    "TrainingSet",
    "UnpairedSet",
    "load_dataset",
    "load_training_set",
    "load_dicom",
    "load_nifti",
    "pad_to",
    "patient_split",
    "random_split",
    "stratified_patient_split",
    "stratified_split",
    "to_uint8",
]


def load_dataset(
    source: str | Path | None = None,
    *,
    size: int | None = None,
    split: str = "train",
    channels: str | Sequence[int] | None = None,
    image_key: str = "images",
    label_key: str | None = None,
    mask_key: str | None = None,
    patient_key: str | None = None,
    split_key: str | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    folder_groups: str = "auto",
    labels: str | Path | None = None,
    label_column: str | None = None,
    label_map: str | Mapping[str, str] | None = None,
    label_key_column: str | None = None,
    intensity_range: tuple[float, float] | None = None,
    mask_values: str = "binary",
    normalize: str = "none",
) -> ImageDataset:
    """Load any supported source as an :class:`ImageDataset`.

    ``source``: ``None``/``"breastmnist"`` (embedded, 28 px), ``"medmnist:<name>"`` (``size`` picks the
    official 28/64/128/224 px file), an ``.npz`` (MedMNIST layout or named arrays), a ``.dcm``, ``.nii``/
    ``.nii.gz``, or a folder of images / DICOM / NIfTI files. Except for ``medmnist:``, ``size`` is the side
    images are centre-cropped and resized to (default: their own, cropped to a square); ``"breastmnist"``
    with ``size`` 64/128/224 loads the official file of that size, exactly as ``"medmnist:breastmnist"``
    (other sizes resize the embedded 28 px images).
    ``split``: ``train``/``val``/``test`` or ``all``. The source's own split is used when it has one
    (MedMNIST, a split array, split folders); otherwise it is made here, by patient when patient ids
    exist, else stratified by label, seeded by ``seed`` with ``val_fraction``/``test_fraction``.
    ``channels``: indices (``[1]``, ``"0,2"``) or names (``"flair"``) when the source names its channels.
    ``folder_groups`` (image folders): whether first-level sub-folders are ``"class"``-es or ``"patient"``-s;
    ``"auto"`` picks patients for more than 20 sub-folders or sub-folders with mask files, else classes
    (see :mod:`synthmed.data.folder`).
    ``labels`` (folders of images, DICOM or NIfTI files): a CSV naming each image's class by file name or case
    folder; ``label_column`` (default: the second column) holds the class, ``label_map`` (``"0=other,1=other,
    2=melanoma"``) names and merges raw values, ``label_key_column`` (default: the first column) holds the
    names. Splits are then stratified by label, case folders kept whole (see :mod:`synthmed.data.labels`).
    ``intensity_range=(low, high)``: the stored range mapped to [-1, 1], the same for every image: DICOM in
    units after rescale (HU for CT) instead of the window / series range, NIfTI instead of the per-volume
    percentiles, 16-bit and float image folders instead of 0..65535 / the folder's maximum / each image's range,
    named-array npz files instead of their value range; refused for MedMNIST and 8-bit-only image folders.
    Every source records its mapping in ``info.intensity`` (:mod:`synthmed.data.intensity`).
    ``mask_values`` (npz masks, ``_mask`` files of image folders): ``"binary"`` masks become {0, 1};
    ``"labels"``: label maps, whose whole values are class indices (0 = background), kept as float32 class
    indices, with ``info.mask_classes`` = largest label over every row or file (every split) + 1, at least 2
    (for segmentation targets: ``pair="image:mask"``, see :mod:`synthmed.data.paired`).
    ``normalize``: ``"none"`` (the mapping above only), ``"patient"`` (each patient's images, per channel, clipped
    to their own 1st..99th percentile over all its pixels and mapped onto [-1, 1]; each image on its own without
    patient ids) or ``"image"`` (the same per image); masks untouched; recorded in ``info.intensity`` (see
    :mod:`synthmed.data.normalize`).
    Bad input raises :class:`~synthmed.errors.DataError` with a one-line message naming the file.
    """
    common = {
        "split": split,
        "channels": channels,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "normalize": check_normalize(normalize),
    }
    if folder_groups not in FOLDER_GROUPS:
        raise ConfigError(f"folder_groups={folder_groups!r}: choose one of {', '.join(FOLDER_GROUPS)}")
    intensity_range = check_intensity_range(intensity_range)
    masks = {"mask_values": check_mask_values(mask_values), "refuse_label_maps": reading_mask_targets()}
    text = "" if source is None else str(source)
    label_source = LabelSource.from_options(labels, label_column, label_map, label_key_column)
    if label_source is not None:
        _check_labelled_source(source)
    if intensity_range is not None and (source is None or text.lower() == "breastmnist"
                                        or text.lower().startswith("medmnist:")):
        raise ConfigError(f"intensity_range={intensity_range!r} does not apply to MedMNIST (8-bit images, always "
                          "scaled 0..255)")
    if (source is None or text.lower() == "breastmnist") and size in medmnist.SIZES and size != 28:
        # The official larger file (downloaded once, cached), not the 28 px images upsampled.
        return _load_medmnist("breastmnist", size, cache_dir, download, common)
    if source is None or text.lower() == "breastmnist":
        raw = read_npz(
            medmnist.embedded_breastmnist(),
            split=split,
            source="breastmnist",
            class_names=medmnist.MEDMNIST_CLASSES["breastmnist"],
            attribution=medmnist.BREASTMNIST_ATTRIBUTION,
        )
        return assemble(raw, size=size, **common)
    if text.lower().startswith("medmnist:"):
        return _load_medmnist(text.split(":", 1)[1].strip().lower(), size, cache_dir, download, common)

    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if path.is_dir():
        return _load_folder(path, size, common, folder_groups, label_source, intensity_range, masks)
    name = path.name.lower()
    if name.endswith(".npz"):
        raw = read_npz(
            path,
            split=split,
            image_key=image_key,
            label_key=label_key,
            mask_key=mask_key,
            patient_key=patient_key,
            split_key=split_key,
            intensity_range=intensity_range,
            **masks,
        )
        return assemble(raw, size=size, **common)
    if name.endswith(DICOM_SUFFIXES) or looks_like_dicom(path):
        return load_dicom(path, size=size, intensity_range=intensity_range, **common)
    if is_nifti(path):
        return load_nifti(path, size=size, intensity_range=intensity_range, **common)
    if path.suffix.lower() in IMAGE_FORMATS:
        raise DataError(path, "is a single image; point to the folder that holds the images")
    raise DataError(
        path,
        f"unsupported file type '{path.suffix or path.name}' "
        "(expected .npz, .dcm, .nii, .nii.gz, medmnist:<name> or a folder of images)",
    )


def _load_medmnist(
    name: str, size: int | None, cache_dir: str | Path | None, download: bool, common: dict
) -> ImageDataset:
    file = medmnist.file_name(name, size)  # validates name and size first, before any network access
    if file == "breastmnist.npz" and not (medmnist.cache_directory(cache_dir) / file).is_file():
        path = medmnist.embedded_breastmnist()  # same 28 px data, shipped with the package: no download
    else:
        path = medmnist.fetch(name, size, cache_dir, download)
    raw = read_npz(
        path,
        split=common["split"],
        source=f"medmnist:{name}",
        class_names=medmnist.MEDMNIST_CLASSES[name],
        attribution=medmnist.attribution(name),
    )
    return assemble(raw, **common)


def _check_labelled_source(source: str | Path | None) -> None:
    """A labels CSV names files, so it labels folders only (a missing path is reported as such later)."""
    text = "breastmnist" if source is None else str(source)
    path = Path(text).expanduser()
    if source is None or text.lower() == "breastmnist" or text.lower().startswith("medmnist:") or (
        path.exists() and not path.is_dir()
    ):
        raise ConfigError(
            f"labels=CSV names the files of a folder (images, DICOM or NIfTI) and cannot label {text}; an npz "
            "names its label array with label_key=..., MedMNIST brings its own labels"
        )


def _label_by_table(raw: RawData, root: Path, label_source: LabelSource | None) -> RawData:
    """DICOM / NIfTI slices labelled from the CSV by file or case folder, split by patient and label."""
    if label_source is None:
        return raw
    names = sample_names(root, [meta["path"] for meta in raw.meta])
    raw.labels, raw.class_names = assign_labels(label_source, names, root)
    raw.num_classes = len(raw.class_names)
    raw.stratify_patients = True
    return raw


def _load_folder(root: Path, size: int | None, common: dict, folder_groups: str = "auto",
                 label_source: LabelSource | None = None,
                 intensity_range: tuple[float, float] | None = None,
                 masks: dict[str, Any] | None = None) -> ImageDataset:
    """A folder holds images, DICOM or NIfTI files: exactly one kind; ``masks`` are the mask options of image
    folders (``mask_values``, ``refuse_label_maps``; DICOM and NIfTI folders have no masks)."""
    files = list_files(root)
    images = [p for p in files if p.suffix.lower() in IMAGE_FORMATS]
    niftis = [p for p in files if is_nifti(p)]
    dicoms = [
        p
        for p in files
        if p.suffix.lower() in DICOM_SUFFIXES
        or (not p.suffix and p.name.upper() != "DICOMDIR" and looks_like_dicom(p))
    ]
    kinds = {"image": images, "DICOM": dicoms, "NIfTI": niftis}
    present = {kind: found for kind, found in kinds.items() if found}
    if not present:
        raise DataError(root, "contains no images (PNG, JPEG, TIFF, BMP, GIF), DICOM or NIfTI files")
    if len(present) > 1:
        counts = ", ".join(f"{len(found)} {kind}" for kind, found in present.items())
        raise DataError(root, f"mixes {counts} files; point to a folder that holds one kind")
    kind, found = next(iter(present.items()))
    if kind == "DICOM":
        raw = _label_by_table(read_dicom(found, source=str(root), size=size, skip_non_image=True,
                                         intensity_range=intensity_range), root, label_source)
    elif kind == "NIfTI":
        channels = common.pop("channels")  # NIfTI: channels pick 4D volumes while reading
        raw = _label_by_table(read_nifti(found, source=str(root), size=size, channels=channels, root=root,
                                         intensity_range=intensity_range), root, label_source)
    else:
        split_args = {k: common[k] for k in ("split", "seed", "val_fraction", "test_fraction")}
        raw = read_image_folder(root, found, size=size, folder_groups=folder_groups, label_source=label_source,
                                intensity_range=intensity_range, **split_args, **(masks or {}))
    return assemble(raw, size=size, **common)


RECORD_SUFFIXES = (".csv", ".parquet", ".csv.gz")


def load_training_set(
    source: str | Path | None = None,
    *,
    kind: str = "auto",
    target: str | Path | None = None,
    pair: str | None = None,
    fov: str | Path | None = None,
    match: str | None = None,
    target_masks: bool | None = None,
    target_intensity_range: tuple[float, float] | None = None,
    **options: Any,
) -> TrainingSet:
    """Any training data as a set of named tensors (:mod:`synthmed.data.sets`), by ``kind``:

    * ``images``: :func:`load_dataset` (``options`` are its keyword arguments);
    * ``paired``: ``image`` -> ``target`` from ``source`` and a ``target`` folder matched by file name, or from
      one source with ``pair="image:mask"`` (its masks become targets) or ``pair="A:B"`` (channel groups of one
      array, by name or index: ``pair="t1:t1ce"``);
    * ``unpaired``: domain A from ``source`` and domain B from ``target`` (or ``pair="A:B"`` channel groups
      taken from disjoint patients), sampled independently;
    * ``records``: a CSV or parquet matrix of binary or count codes (:func:`synthmed.data.records.load_records`).

    ``fov`` (a folder of field-of-view masks, batch key ``mask``), ``match`` (a regular expression for the key
    shared by matched file names) and ``target_masks`` apply to paired folders (see
    :func:`~synthmed.data.paired.load_paired`); ``target_intensity_range`` is the target side's own fixed range
    (paired folders, unpaired sources).

    ``auto`` is ``records`` for CSV/parquet files, ``paired`` when ``target`` or ``pair`` is given, else
    ``images``. Every kind is split by patient where patient ids exist. ``mask_values="labels"`` (label-map
    targets, class indices) applies to mask targets: paired folders and ``pair="image:mask"``.
    """
    if kind == "auto":
        if source is not None and str(source).lower().endswith(RECORD_SUFFIXES):
            kind = "records"
        else:
            kind = "paired" if (target is not None or pair is not None) else "images"
    if kind == "images":
        if target is not None or pair is not None:
            raise ConfigError("--target and --pair give paired or unpaired data, not images")
        if check_mask_values(options.get("mask_values", "binary")) != "binary":
            # Image batches carry masks as {0, 1} conditions; class indices are for segmentation targets.
            raise ConfigError(f"mask_values={options['mask_values']!r} applies to mask targets (a target folder of "
                              "label maps, or pair='image:mask'), not to images")
        return load_dataset(source, **options)
    pairing = {k: v for k, v in {"fov": fov, "match": match, "target_masks": target_masks}.items() if v is not None}
    if target_intensity_range is not None:
        if kind not in ("paired", "unpaired"):
            raise ConfigError(f"target_intensity_range applies to paired or unpaired data (a target side), not to "
                              f"{kind}")
        pairing["target_intensity_range"] = target_intensity_range
    if pairing and kind != "paired" and set(pairing) != {"target_intensity_range"}:
        raise ConfigError(f"{', '.join(pairing)} appl{'ies' if len(pairing) == 1 else 'y'} to paired folders "
                          f"(--target FOLDER), not to {kind} data")
    if kind == "paired":
        from synthmed.data.paired import load_paired

        return load_paired(source, target=target, pair=pair, **pairing, **options)
    if kind == "unpaired":
        from synthmed.data.paired import load_unpaired

        return load_unpaired(source, target=target, pair=pair, target_intensity_range=target_intensity_range,
                             **options)
    if kind == "records":
        from synthmed.data.records import load_records

        if target is not None or pair is not None:
            raise ConfigError("records are one CSV or parquet file: --target and --pair do not apply")
        return load_records(source, **options)
    raise ConfigError(f"unknown data kind {kind!r}; kinds: auto, images, paired, unpaired, records")
