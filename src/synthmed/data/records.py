"""Tabular records: a patient x code matrix of binary or count values (medGAN-style EHR synthesis).

A CSV (``.csv``, ``.csv.gz``) or parquet file with a header row and one row per patient, or one row per visit
with a patient id column. Every column other than the patient (and split) column is a code of the vocabulary
(``columns``): its cells must be numbers, finite and >= 0 (binary 0/1 or counts); anything else is refused
with one line naming the file, the row and the column. Records are never normalised here: a recipe decides
whether to binarise or scale counts.

The result is a :class:`~synthmed.data.sets.TensorSet` of kind ``records`` whose batches hold ``record``
(float32, (N, D)). Its :class:`~synthmed.data.dataset.DataInfo` has ``kind="records"``, ``channels`` = D,
``height`` = ``width`` = 1 (records have no pixels) and ``columns`` = the vocabulary, in file order.

Splits are made by patient when a patient column exists (``patient_key``, or found by name: ``patient``,
``patient_id``, ``subject_id``, ``person_id``, ... in any case), so no patient's visits cross splits; else per
row, with a warning. A ``split_key`` column of ``train``/``val``/``test`` gives the split explicitly; without
``split_key``, a column named ``split`` (any case) whose values are all train/val/test does the same.

``DataInfo.vocabulary`` says what the columns hold: ``values`` is ``binary`` when every cell of the file is 0 or 1,
else ``count``; when a vocabulary file sits beside the records (``<stem>.vocabulary.csv``, else ``vocabulary.csv``
in the same folder, as ``synthmed ehr extract`` writes it), it adds each column's ``concept_id``, ``concept_name``
and ``domain`` (:func:`synthmed.data.omop.read_vocabulary`). A vocabulary file that does not fit the records is
refused, not ignored.
"""

from __future__ import annotations

import csv
import gzip
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.data._core import SPLIT_ALIASES, split_indices
from synthmed.data.dataset import DataInfo
from synthmed.data.omop import VOCABULARY_FILE, read_vocabulary
from synthmed.data.paired import refuse_options
from synthmed.data.sets import TensorSet
from synthmed.data.splits import SPLITS, random_split
from synthmed.errors import ConfigError, DataError, one_line

__all__ = ["PATIENT_COLUMNS", "has_split_column", "load_records"]

# Column names read as the patient id when patient_key is not given (compared lower-case, "-"/" " as "_").
PATIENT_COLUMNS = ("patient", "patient_id", "patientid", "subject", "subject_id", "person", "person_id", "id")
_OPTIONS = frozenset({"split", "seed", "val_fraction", "test_fraction", "patient_key", "split_key"})


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows of cells, and a place (``line N``) per row; blank lines are skipped."""
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    rows, places = [], []
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if row and any(cell.strip() for cell in row):
                    rows.append(row)
                    places.append(f"line {reader.line_num}")
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as exc:
        raise DataError(path, f"cannot read CSV ({one_line(exc)})") from exc
    if not rows:
        raise DataError(path, "is empty; records need a header row and one row per patient or visit")
    header = [name.strip() for name in rows[0]]
    for row, place in zip(rows[1:], places[1:], strict=True):
        if len(row) != len(header):
            raise DataError(path, f"{place} has {len(row)} cells for {len(header)} columns")
    return header, rows[1:], places[1:]


def _read_parquet(path: Path) -> tuple[list[str], list[list[Any]], list[str]]:
    try:
        import pandas as pd  # optional dependencies, needed only for parquet
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise DataError(path, "reading parquet needs pandas and pyarrow: pip install pandas pyarrow "
                              "(or save the records as CSV)") from exc
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a bad file; all mean "cannot read it"
        raise DataError(path, f"cannot read parquet ({one_line(exc)})") from exc
    header = [str(name) for name in frame.columns]
    rows = frame.astype(object).where(frame.notna(), float("nan")).to_numpy().tolist()
    return header, rows, [f"row {i + 1}" for i in range(len(rows))]


def _find_column(header: list[str], given: str | None, role: str, path: Path, names: tuple[str, ...]) -> int | None:
    if given is not None:
        if given not in header:
            raise DataError(path, f"no column named {given!r} ({role}); the columns are: {', '.join(header[:20])}"
                                  f"{', ...' if len(header) > 20 else ''}")
        return header.index(given)

    def norm(name: str) -> str:
        return name.strip().lower().replace("-", "_").replace(" ", "_")

    normalised = [norm(h) for h in header]
    return next((normalised.index(n) for n in names if n in normalised), None)


def _values(path: Path, cells: np.ndarray, columns: list[str], places: list[str]) -> np.ndarray:
    """Cells as float64, refusing the first non-numeric, non-finite or negative one (row-major order)."""
    try:
        values = cells.astype(np.float64)
    except (ValueError, TypeError):
        values = None
    if values is None:
        for r, row in enumerate(cells):
            for c, cell in enumerate(row):
                try:
                    float(cell)
                except (ValueError, TypeError):
                    raise DataError(path, f"{places[r]}, column {columns[c]!r}: {str(cell)!r} is not a number; "
                                          "records hold binary (0/1) or count values") from None
        values = cells.astype(np.float64)  # every cell converts on its own; the array then does too
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        value = values[r, c]
        problem = "is not finite" if not np.isfinite(value) else "is negative"
        raise DataError(path, f"{places[r]}, column {columns[c]!r}: {value:g} {problem}; records hold binary "
                              "(0/1) or count values (>= 0)")
    return values


def _auto_split_column(header: list[str], cells: np.ndarray, patient_col: int | None) -> int | None:
    """The column named ``split`` (any case) when every value names a split, so written splits are kept."""
    found = [i for i, name in enumerate(header) if name.strip().lower() == "split" and i != patient_col]
    if len(found) != 1:
        return None
    names = {str(v).strip().lower() for v in cells[:, found[0]]}
    return found[0] if names <= set(SPLIT_ALIASES) else None


def _vocabulary_file(path: Path) -> Path | None:
    """``<stem>.vocabulary.csv`` beside the records, else ``vocabulary.csv`` in their folder; None if neither."""
    name = path.name
    for suffix in (".csv.gz", ".csv", ".parquet"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    for candidate in (path.with_name(f"{name}.vocabulary.csv"), path.with_name(VOCABULARY_FILE)):
        if candidate.is_file() and candidate.resolve() != path.resolve():
            return candidate
    return None


def _vocabulary(path: Path, values: np.ndarray, columns: list[str]) -> dict[str, Any]:
    """``DataInfo.vocabulary`` of the whole file (before any split)."""
    vocabulary: dict[str, Any] = {"values": "binary" if np.isin(values, (0.0, 1.0)).all() else "count"}
    file = _vocabulary_file(path)
    if file is not None:
        vocabulary.update(read_vocabulary(file, columns))
    return vocabulary


def _read_table(source: str | Path | None) -> tuple[Path, list[str], list[list[Any]], list[str]]:
    """The file's path, header, rows and row places, with one-line errors for what no records file may be."""
    if source is None:
        raise ConfigError("records need a CSV or parquet file")
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(path, "no such file" if not path.exists() else "is a folder; records are a CSV or parquet file")
    if path.suffix.lower() == ".parquet":
        header, rows, places = _read_parquet(path)
    else:
        header, rows, places = _read_csv(path)
    if not all(header):
        raise DataError(path, f"column {header.index('') + 1} has no name; every column needs one (the vocabulary)")
    repeated = [name for name, count in Counter(header).items() if count > 1]
    if repeated:
        raise DataError(path, f"column {repeated[0]!r} appears more than once; every code needs its own column")
    if not rows:
        raise DataError(path, "has a header but no rows")
    return path, header, rows, places


def has_split_column(source: str | Path, patient_key: str | None = None) -> bool:
    """Whether :func:`load_records` takes the file's splits from a ``split`` column (one named so, any case, whose
    values all name splits), as ``synthmed ehr extract`` writes it; a ``split`` column of other values is a code.

    Args:
        source: a records file (CSV or parquet).
        patient_key: the patient id column, when not found by name.
    """
    path, header, rows, _ = _read_table(source)
    patient_col = _find_column(header, patient_key, "patient ids", path, PATIENT_COLUMNS)
    return _auto_split_column(header, np.asarray(rows, dtype=object), patient_col) is not None


def load_records(
    source: str | Path | None,
    *,
    split: str = "train",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    patient_key: str | None = None,
    split_key: str | None = None,
    **ignored_image_options: Any,
) -> TensorSet:
    """Load a CSV or parquet file of binary / count records as a :class:`TensorSet` of kind ``records``.

    Batches hold ``record``: float32 (N, D), one column per code of ``columns`` (see the module docstring).

    Args:
        source: a ``.csv``, ``.csv.gz`` or ``.parquet`` file (parquet needs pandas and pyarrow).
        split: ``train``, ``val``, ``test`` or ``all``.
        seed: seed of the split.
        val_fraction: fraction of patients (or rows, without patient ids) in ``val``.
        test_fraction: fraction of patients (or rows) in ``test``.
        patient_key: the patient id column (default: found by name, see :data:`PATIENT_COLUMNS`); it is not
            part of the vocabulary.
        split_key: a column naming each row's split (``train``/``val``/``test``), used instead of a made split;
            default: a column named ``split`` (any case) when all its values are train/val/test, else none.
        ignored_image_options: image options of :func:`~synthmed.data.load_dataset`; they do not apply to records
            and must keep their defaults (``size``, ``channels``, ...), else a :class:`ConfigError` says so.

    Raises:
        ConfigError: image options given, an unknown split.
        DataError: an unreadable file, ragged rows, a non-numeric, non-finite or negative cell (naming the row
            and column), no code columns, an empty split, a vocabulary file beside the records that does not fit
            them (naming the vocabulary file).
    """
    refuse_options(ignored_image_options, _OPTIONS, "records (a CSV or parquet matrix)")
    path, header, rows, places = _read_table(source)
    patient_col = _find_column(header, patient_key, "patient ids", path, PATIENT_COLUMNS)
    cells = np.asarray(rows, dtype=object)
    if split_key is not None:
        split_col = _find_column(header, split_key, "split", path, ())
    else:
        split_col = _auto_split_column(header, cells, patient_col)
    id_cols = {c for c in (patient_col, split_col) if c is not None}
    value_cols = [i for i in range(len(header)) if i not in id_cols]
    if not value_cols:
        raise DataError(path, "has no code columns besides the patient id")
    columns = [header[i] for i in value_cols]
    values = _values(path, cells[:, value_cols], columns, places)
    vocabulary = _vocabulary(path, values, columns)

    patients = None
    if patient_col is not None:
        patients = np.asarray([str(v).strip() for v in cells[:, patient_col]], dtype=str)
        empty = np.flatnonzero(patients == "")
        if empty.size:
            raise DataError(path, f"{places[empty[0]]}: empty patient id in column {header[patient_col]!r}")
    splits = None if split_col is None else np.asarray([str(v).strip() for v in cells[:, split_col]], dtype=str)
    if patients is None and splits is None and split != "all":
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}: choose one of train, val, test, all")
        warnings.warn(f"{path}: split '{split}' made per row (no patient id column); rows of one patient may "
                      "cross splits unless patient_key=COLUMN names the patient ids", stacklevel=2)
        idx = random_split(len(rows), val_fraction, test_fraction, seed)[split]
    else:
        idx = split_indices(len(rows), split, source=path, patients=patients, splits=splits, seed=seed,
                            val_fraction=val_fraction, test_fraction=test_fraction)
    if idx is not None:
        if idx.size == 0:
            raise DataError(path, f"split '{split}' is empty ({len(rows)} rows in all); use split='all'")
        values, patients = values[idx], None if patients is None else patients[idx]
    rows_kept = range(len(rows)) if idx is None else idx.tolist()

    info = DataInfo(source=str(path), channels=len(columns), height=1, width=1, split=split, kind="records",
                    columns=tuple(columns), vocabulary=vocabulary)
    return TensorSet(
        tensors={"record": torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))}, info=info,
        kind="records", patients=patients, columns=tuple(columns),
        meta=[{"index": i} for i in rows_kept],  # the data row in the file, 0-based
    )
