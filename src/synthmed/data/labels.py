"""Class labels from a CSV, for sources whose files carry none (folders of images, DICOM or NIfTI files).

>>> ds = load_dataset("ph2/images", labels="ph2/PH2_dataset.csv", label_column="Clinical Diagnosis",
...                   label_map="0=other,1=other,2=melanoma", size=64)
>>> ds.info.class_names
('other', 'melanoma')

Rules:

* **The CSV** has a header row, then one row per image or per case. Its key column (``label_key_column``,
  default: the first column) names each image either by its **file name** (stem ``IMD002`` or name
  ``IMD002.png``) or by its **case folder**: the first-level sub-folder that holds it (below split folders, if
  any; PH2's ``IMD002/``). Whichever of the two names every image is used; when both do, they must give every
  image the same label, else the CSV is refused as ambiguous (name the column with ``label_key_column``).
  Rows naming no image are ignored, so one CSV may label several folders.
* **The label** is ``label_column`` (default: the second column). Values are compared stripped, and
  numeric-looking values as numbers (``01``, ``1`` and ``1.0`` are one class, named ``1``).
* **label_map** (optional), ``"value=name,..."``, gives raw values class names; several values may share a
  name, merging their classes (``"0=other,1=other,2=melanoma"``).
* **Class order** (the label indices): with ``label_map``, the order in which its names first appear; without,
  the distinct values of the label column over **all rows** of the CSV, numbers in numeric order first, then
  the rest alphabetically. The label space is the CSV's (or the map's), not the images', so two folders
  labelled from one CSV share class indices; a class that no image has is warned about.
* **Every image gets a label**: an image without a row, a row with an empty label, a value missing from
  ``label_map``, and a name that appears twice in the key column are each a one-line
  :class:`~synthmed.errors.DataError` naming the CSV and the first offending name.
* **Splits** of labelled data are stratified by label, and by patient where patients exist: an image folder's
  case folders are its patients, so a case never straddles two splits
  (:func:`synthmed.data.splits.stratified_patient_split`).

``npz`` and MedMNIST sources are refused: their rows have no file names to look up (an ``npz`` brings its own
label array, ``label_key=...``).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthmed.errors import ConfigError, DataError

__all__ = ["LabelSource", "SampleName", "assign_labels", "parse_label_map", "sample_names"]

NIFTI_ENDINGS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class LabelSource:
    """Where labels come from: the options ``labels``, ``label_column``, ``label_map``, ``label_key_column``."""

    csv: Path
    column: str | None = None
    key_column: str | None = None
    label_map: str | Mapping[str, str] | None = None

    @classmethod
    def from_options(
        cls,
        labels: str | Path | None,
        label_column: str | None = None,
        label_map: str | Mapping[str, str] | None = None,
        label_key_column: str | None = None,
    ) -> LabelSource | None:
        """The label source of :func:`~synthmed.data.load_dataset`'s options; ``None`` without ``labels``."""
        if labels is None:
            given = [name for name, value in (("label_column", label_column), ("label_map", label_map),
                                              ("label_key_column", label_key_column)) if value is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} need labels=CSV (the file that names each image's class)")
            return None
        parse_label_map(label_map)  # a malformed map fails before any image is read
        return cls(Path(labels).expanduser(), label_column, label_key_column, label_map)


@dataclass(frozen=True)
class SampleName:
    """What a CSV row may call an image: its file, and its case folder (``""`` for a file in the root)."""

    path: Path
    case: str

    @property
    def stem(self) -> str:
        name = self.path.name
        ending = next((e for e in NIFTI_ENDINGS if name.lower().endswith(e)), self.path.suffix)
        return name[: len(name) - len(ending)] if ending else name


def sample_names(root: Path, paths: Sequence[str | Path]) -> list[SampleName]:
    """Names of files found under ``root``: the case folder is the first sub-folder of the relative path."""
    names = []
    for path in paths:
        parts = Path(path).relative_to(root).parts if Path(path).is_relative_to(root) else (Path(path).name,)
        names.append(SampleName(Path(path), parts[0] if len(parts) > 1 else ""))
    return names


def canonical_value(text: str) -> str:
    """A label value as compared and named: stripped; numbers written plainly (``01`` and ``1.0`` are ``1``)."""
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number):
        return value
    return str(int(number)) if number.is_integer() else repr(number)


def parse_label_map(label_map: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"0=other,1=other,2=melanoma"`` (or a mapping) as ``{raw value: class name}``, in the order given."""
    if label_map is None:
        return {}
    if isinstance(label_map, Mapping):
        pairs = [(str(k), str(v)) for k, v in label_map.items()]
    else:
        pairs = []
        for item in str(label_map).split(","):
            value, sep, name = item.partition("=")
            if not sep:
                raise ConfigError(f"label_map={label_map!r}: {item.strip()!r} is not value=name")
            pairs.append((value, name))
    mapping: dict[str, str] = {}
    for value, name in pairs:
        key, class_name = canonical_value(value), name.strip()
        if not key or not class_name:
            raise ConfigError(f"label_map={label_map!r}: every entry needs a value and a name (value=name)")
        if mapping.get(key, class_name) != class_name:
            raise ConfigError(f"label_map={label_map!r}: value {key!r} is given two names")
        mapping[key] = class_name
    return mapping


@dataclass(frozen=True)
class _Table:
    """The two columns of the CSV that matter: label value (canonical) by key, and the column names."""

    path: Path
    key_column: str
    label_column: str
    value_of: dict[str, str]
    all_values: list[str]  # every non-empty label value, row order (the label space without a map)


def _column(path: Path, header: list[str], wanted: str | None, default: int, what: str) -> int:
    if wanted is None:
        if len(header) <= default:
            raise DataError(path, f"has {len(header)} column(s); it needs a key column and a label column")
        return default
    names = [h.strip() for h in header]
    if wanted.strip() in names:
        return names.index(wanted.strip())
    lowered = [h.lower() for h in names]
    if wanted.strip().lower() in lowered:
        return lowered.index(wanted.strip().lower())
    raise DataError(path, f"has no {what} column {wanted!r}; its columns: {', '.join(names)}")


def _read_rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read the labels CSV ({' '.join(str(exc).split())})") from exc
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel  # one column, or nothing to sniff: plain commas
    rows = [row for row in csv.reader(text.splitlines(), dialect) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise DataError(path, "needs a header row and at least one row of labels")
    return rows


def _read_table(source: LabelSource) -> _Table:
    path = source.csv
    if not path.is_file():
        raise DataError(path, "no such labels CSV" if not path.exists() else "labels= must be a CSV file")
    header, *rows = _read_rows(path)
    key = _column(path, header, source.key_column, 0, "key")
    label = _column(path, header, source.column, 1, "label")
    if key == label:
        raise DataError(path, f"column {header[key].strip()!r} cannot be both the key and the label")
    value_of: dict[str, str] = {}
    all_values: list[str] = []
    for row in rows:
        name = row[key].strip() if key < len(row) else ""
        value = canonical_value(row[label]) if label < len(row) else ""
        if not name:
            continue  # a row naming nothing can label nothing
        if name in value_of:
            raise DataError(path, f"names {name!r} twice in column {header[key].strip()!r}; one row per image or case")
        value_of[name] = value
        if value:
            all_values.append(value)
    return _Table(path, header[key].strip(), header[label].strip(), value_of, all_values)


def _lookups(table: _Table, names: list[SampleName]) -> dict[str, list[str | None]]:
    """Each image's key in the CSV (or ``None``), looked up by file name and by case folder."""
    by_file = [next((k for k in (n.stem, n.path.name) if k in table.value_of), None) for n in names]
    by_case = [n.case if n.case and n.case in table.value_of else None for n in names]
    return {"file name": by_file, "case folder": by_case}


def _refuse_disagreement(table: _Table, names: list[SampleName], by_file: list[str], by_case: list[str]) -> None:
    """Both ways name every image: fine when they agree on every label, else ambiguous."""
    for name, a, b in zip(names, by_file, by_case, strict=True):
        if table.value_of[a] != table.value_of[b]:
            raise DataError(table.path, f"names image {name.path.name} by file ({a!r}: {table.value_of[a]!r}) and "
                                        f"by case folder ({b!r}: {table.value_of[b]!r}) with different labels; "
                                        "choose the key column with label_key_column")


def _missing_row(table: _Table, names: list[SampleName], lookups: dict[str, list[str | None]]) -> DataError:
    """The error naming the first image without a row, as the way that matched more images sees it."""
    keys = max(lookups.values(), key=lambda found: sum(k is not None for k in found))
    missing = names[keys.index(None)]
    case = f" or case folder {missing.case!r}" if missing.case else ""
    return DataError(table.path, f"has no row for image {missing.path.name} (looked up by file name "
                                 f"{missing.stem!r}{case} in column {table.key_column!r})")


def _matched_keys(table: _Table, names: list[SampleName]) -> list[str]:
    """The CSV key of every image, by whichever of file name / case folder names all of them (see the module)."""
    lookups = _lookups(table, names)
    complete = {how: [k for k in keys if k is not None] for how, keys in lookups.items() if None not in keys}
    by_file, by_case = complete.get("file name"), complete.get("case folder")
    if by_file is not None and by_case is not None:
        _refuse_disagreement(table, names, by_file, by_case)
        return by_case
    if by_case is not None:
        return by_case
    if by_file is not None:
        repeated = [k for k, count in Counter(by_file).items() if count > 1]
        if repeated:  # two "a.png" in different folders are two images, not one row's
            raise DataError(table.path, f"row {repeated[0]!r} matches {by_file.count(repeated[0])} images by file "
                                        "name; name each image once, or key the rows by case folder")
        return by_file
    raise _missing_row(table, names, lookups)


def _numeric_first(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _class_names(table: _Table, mapping: dict[str, str]) -> tuple[str, ...]:
    if mapping:
        return tuple(dict.fromkeys(mapping.values()))
    return tuple(sorted(set(table.all_values), key=_numeric_first))


def _class_of(table: _Table, key: str, mapping: dict[str, str], image: SampleName) -> str:
    value = table.value_of[key]
    if not value:
        raise DataError(table.path, f"row {key!r} (image {image.path.name}) has no value in column "
                                    f"{table.label_column!r}")
    if mapping and value not in mapping:
        raise DataError(table.path, f"row {key!r} (image {image.path.name}) has {table.label_column} {value!r}, "
                                    f"which label_map does not name (it names {', '.join(mapping)})")
    return mapping.get(value, value)


def assign_labels(
    source: LabelSource, names: list[SampleName], where: str | Path
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Every image's label index (int64, one per ``names``) and the class names, by the rules of the module.

    ``where`` (the data source) names the folder in the warning about classes without images.
    """
    table = _read_table(source)
    mapping = parse_label_map(source.label_map)
    keys = _matched_keys(table, names)
    classes = [_class_of(table, key, mapping, name) for key, name in zip(keys, names, strict=True)]
    class_names = _class_names(table, mapping)
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.asarray([index[c] for c in classes], dtype=np.int64)
    empty = [name for i, name in enumerate(class_names) if not np.any(labels == i)]
    if empty:
        warnings.warn(f"{where}: class{'es' if len(empty) > 1 else ''} {', '.join(map(repr, empty))} of "
                      f"{source.csv} {'have' if len(empty) > 1 else 'has'} no images here", stacklevel=3)
    if len(class_names) < 2:
        warnings.warn(f"{where}: {source.csv} gives one class only ({class_names[0]!r})", stacklevel=3)
    return labels, class_names
