"""OMOP CDM database (DuckDB) -> a patient x concept matrix for medGAN-style record synthesis.

:func:`read_omop` reads one row per person of the ``person`` table and one column per concept: conditions from
``condition_occurrence.condition_concept_id`` (``condition_<concept_id>``), drugs from
``drug_exposure.drug_concept_id`` (``drug_<concept_id>``) and, with the ``person`` domain, one-hot gender
(``gender_<concept_id>``) and birth-decade (``birth_decade_1950``) columns. :func:`write_records` saves it as
``records.csv`` (what :func:`synthmed.data.records.load_records` reads) and ``vocabulary.csv`` (what each column
means; :func:`read_vocabulary` reads it back into :attr:`synthmed.data.dataset.DataInfo.vocabulary`).

>>> records = read_omop("eunomia.duckdb", domains=("condition", "drug", "person"), min_patients=10)
>>> write_records(records, Path("ehr"))   # ehr/records.csv, ehr/vocabulary.csv

The database is opened read-only; table and column names are matched in any case. duckdb is optional
(``pip install duckdb``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.splits import patient_split
from synthmed.errors import ConfigError, DataError, one_line
from synthmed.io import empty_output_folder, write_folder_atomically

__all__ = ["DOMAINS", "OmopRecords", "VocabularyEntry", "read_omop", "read_vocabulary", "write_records"]

# Event domains: (table, concept id column); "person" (gender, birth decade) comes from the person table.
EVENT_DOMAINS = {"condition": ("condition_occurrence", "condition_concept_id"),
                 "drug": ("drug_exposure", "drug_concept_id")}
DOMAINS = (*EVENT_DOMAINS, "person")
VALUES = ("binary", "count")
RECORDS_FILE, VOCABULARY_FILE = "records.csv", "vocabulary.csv"
VOCABULARY_HEADER = ("column", "concept_id", "concept_name", "domain", "patients")
_DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file
# The standard OMOP gender concepts, named even when a database ships without them in its concept table (Eunomia).
_GENDER_NAMES = {8507: "MALE", 8532: "FEMALE"}


@dataclass(frozen=True)
class VocabularyEntry:
    """What one column of the matrix means.

    ``concept_id`` is None for columns without an OMOP concept (birth decades); ``patients`` is the number of
    persons having the code at least once (all splits together).
    """

    column: str
    concept_id: int | None
    concept_name: str
    domain: str
    patients: int


@dataclass
class OmopRecords:
    """Persons x concepts read from an OMOP CDM database by :func:`read_omop`.

    ``matrix`` is float32 (N, D), row i for ``person_ids[i]`` (int64, sorted), column j described by
    ``vocabulary[j]``; ``splits`` names each person's split (``train``/``val``/``test``, by person);
    ``values`` is ``binary`` or ``count``; ``skipped`` counts the event rows left out (concept id 0 or NULL,
    NULL person id, or a person absent from ``person``).
    """

    person_ids: np.ndarray
    matrix: np.ndarray
    vocabulary: list[VocabularyEntry]
    splits: np.ndarray
    source: str
    values: str
    skipped: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # event rows read per domain (before the filter)

    def __post_init__(self) -> None:
        n, d = self.matrix.shape
        if len(self.person_ids) != n or len(self.splits) != n or len(self.vocabulary) != d:
            raise ValueError(f"{len(self.person_ids)} person ids, {len(self.splits)} splits and "
                             f"{len(self.vocabulary)} vocabulary entries for a {n} x {d} matrix")

    @property
    def columns(self) -> list[str]:
        """The column names, in matrix order."""
        return [entry.column for entry in self.vocabulary]


def listing(names: Sequence[str], limit: int = 12) -> str:
    """``a, b, c`` or ``a, b, ... (40 in all)``: error messages stay one readable line."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Database:
    """A read-only DuckDB connection that finds tables and columns by name in any case."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connection = _connect(path)
        rows = self.connection.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "ORDER BY table_schema = 'main' DESC, table_schema, table_name, ordinal_position"
        ).fetchall()
        self.tables: dict[str, str] = {}  # lower-case name -> quoted "schema"."table" (main first)
        self.columns: dict[str, dict[str, str]] = {}  # lower-case table -> lower-case column -> real name
        for schema, table, column in rows:
            key = table.lower()
            quoted = f"{_quote(schema)}.{_quote(table)}"
            if self.tables.setdefault(key, quoted) == quoted:
                self.columns.setdefault(key, {})[column.lower()] = column

    def close(self) -> None:
        self.connection.close()

    def require(self, needs: dict[str, tuple[str, ...]], why: dict[str, str]) -> None:
        """Refuse (one line) missing tables, then missing columns; ``why`` says what needs each table."""
        missing = [t for t in needs if t not in self.tables]
        if missing:
            reasons = "; ".join(f"{t} ({why[t]})" for t in missing)
            raise DataError(self.path, f"has no table {reasons}; its tables: "
                                       f"{listing(sorted(self.tables)) or 'none'}")
        for table, columns in needs.items():
            absent = [c for c in columns if c not in self.columns[table]]
            if absent:
                raise DataError(self.path, f"table {table} has no column {', '.join(absent)}; its columns: "
                                           f"{listing(sorted(self.columns[table]))}")

    def column(self, table: str, name: str) -> str:
        return _quote(self.columns[table][name])

    def fetch(self, sql: str, *params: Any) -> dict[str, np.ndarray]:
        return self.connection.execute(sql, list(params)).fetchnumpy()


def _connect(path: Path) -> Any:
    try:
        import duckdb
    except ImportError as exc:
        raise DataError(path, "reading an OMOP database needs duckdb: pip install duckdb") from exc
    if not path.is_file():
        raise DataError(path, "no such file" if not path.exists() else "is a folder, not a DuckDB database file")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[8:12] != _DUCKDB_MAGIC:
        kind = "an SQLite database" if head.startswith(b"SQLite format 3") else "not a DuckDB database"
        raise DataError(path, f"is {kind}; an OMOP CDM is read from a DuckDB file (.duckdb)")
    # No extension downloads: a read must not reach the network.
    config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    try:
        return duckdb.connect(str(path), read_only=True, config=config)
    except duckdb.Error as exc:
        raise DataError(path, f"cannot open read-only ({one_line(exc, limit=200)})") from exc


def _check_options(domains: Sequence[str], values: str, min_patients: int) -> tuple[str, ...]:
    if isinstance(domains, str):
        domains = (domains,)
    chosen = tuple(str(d).strip().lower() for d in domains)
    unknown = [d for d in chosen if d not in DOMAINS]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        problem = f"unknown domain {unknown[0]!r}" if unknown else f"domains {list(domains)!r}"
        raise ConfigError(f"{problem}: choose one or more of {', '.join(DOMAINS)}, each once")
    if values not in VALUES:
        raise ConfigError(f"unknown values {values!r}: choose binary (1 if a person has the code) or count")
    if isinstance(min_patients, bool) or not isinstance(min_patients, (int, np.integer)) or min_patients < 1:
        raise ConfigError(f"min_patients must be an integer >= 1, not {min_patients!r}")
    return chosen


def _needs(domains: tuple[str, ...]) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    person_columns = ("person_id", "gender_concept_id", "year_of_birth") if "person" in domains else ("person_id",)
    needs: dict[str, tuple[str, ...]] = {"person": person_columns}
    why = {"person": "one row per person"}
    for domain in domains:
        if domain in EVENT_DOMAINS:
            table, concept = EVENT_DOMAINS[domain]
            needs[table] = ("person_id", concept)
            why[table] = f"needed for domain '{domain}'"
    return needs, why


def _persons(db: _Database) -> np.ndarray:
    ids = db.fetch(f"SELECT {db.column('person', 'person_id')} AS p FROM {db.tables['person']}")["p"]
    if np.ma.is_masked(ids):
        raise DataError(db.path, f"table person has {int(np.ma.getmaskarray(ids).sum())} rows without a person_id")
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    if ids.size == 0:
        raise DataError(db.path, "table person has no rows; records need one row per person")
    repeated = ids[1:][ids[1:] == ids[:-1]]
    if repeated.size:
        raise DataError(db.path, f"person_id {int(repeated[0])} appears more than once in table person")
    return ids


def _events(db: _Database, domain: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Distinct (person, concept) pairs of ``domain`` with their row counts; total rows and rows skipped
    (concept id 0 = "no matching concept", NULL concept or person)."""
    table, concept = EVENT_DOMAINS[domain]
    source = (f"SELECT {db.column(table, 'person_id')} AS p, {db.column(table, concept)} AS c "
              f"FROM {db.tables[table]}")
    totals = db.fetch(f"SELECT COUNT(*) AS n, COUNT(*) FILTER (WHERE p IS NULL OR c IS NULL OR c = 0) AS bad "
                      f"FROM ({source})")
    pairs = db.fetch(f"SELECT p, c, COUNT(*) AS n FROM ({source}) WHERE p IS NOT NULL AND c IS NOT NULL "
                     f"AND c <> 0 GROUP BY p, c")
    return (np.asarray(pairs["p"], np.int64), np.asarray(pairs["c"], np.int64), np.asarray(pairs["n"], np.int64),
            int(totals["n"][0]), int(totals["bad"][0]))


def _concept_names(db: _Database, ids: list[int]) -> dict[int, str]:
    """Names from the ``concept`` table, when the database has one."""
    if not ids or "concept_name" not in db.columns.get("concept", {}) or "concept_id" not in db.columns["concept"]:
        return {}
    rows = db.fetch(f"SELECT {db.column('concept', 'concept_id')} AS i, {db.column('concept', 'concept_name')} "
                    f"AS n FROM {db.tables['concept']} WHERE {db.column('concept', 'concept_id')} IN "
                    "(SELECT UNNEST($1))", ids)
    return {int(i): str(n) for i, n in zip(rows["i"].tolist(), rows["n"].tolist(), strict=True) if n is not None}


@dataclass
class _Block:
    """The columns of one domain before concept names are known."""

    domain: str
    prefix: str
    keys: list[int]  # concept ids (birth decades for the decade columns)
    patients: list[int]
    cells: np.ndarray  # (N, len(keys)) float32
    concept: bool = True  # keys are OMOP concept ids


def _code_block(domain: str, prefix: str, rows: np.ndarray, codes: np.ndarray, amounts: np.ndarray, n: int,
                min_patients: int, order_by_count: bool = True) -> tuple[_Block, int]:
    """Columns for the codes held by at least ``min_patients`` persons; also the largest patient count.

    ``rows``/``codes``/``amounts``: one entry per distinct (person row, code) pair.
    """
    unique, inverse = np.unique(codes, return_inverse=True)
    patients = np.bincount(inverse, minlength=len(unique))
    kept = np.flatnonzero(patients >= min_patients)
    kept = kept[np.lexsort((unique[kept], -patients[kept]))] if order_by_count else kept
    position = np.full(len(unique), -1, dtype=np.int64)
    position[kept] = np.arange(len(kept))
    cells = np.zeros((n, len(kept)), dtype=np.float32)
    hit = position[inverse] >= 0
    cells[rows[hit], position[inverse][hit]] = amounts[hit]
    block = _Block(domain, prefix, unique[kept].tolist(), patients[kept].tolist(), cells)
    return block, int(patients.max(initial=0))


def _event_block(db: _Database, domain: str, persons: np.ndarray, values: str,
                 min_patients: int) -> tuple[_Block, int, int, int]:
    """The block of an event domain, its largest patient count, rows read and rows skipped."""
    people, codes, amounts, total, skipped = _events(db, domain)
    rows = np.searchsorted(persons, people)
    known = (rows < len(persons)) & (persons[np.minimum(rows, len(persons) - 1)] == people)
    skipped += int(amounts[~known].sum())  # events of persons missing from the person table
    if not known.any():
        table = EVENT_DOMAINS[domain][0]
        problem = ("is empty" if total == 0
                   else f"has {total} rows, all with concept id 0 or NULL (or no person)" if people.size == 0
                   else f"has {total} rows, none of a person in table person")
        raise DataError(db.path, f"table {table} {problem}: no {domain} events; leave out domain '{domain}'")
    amounts = amounts[known] if values == "count" else np.ones(int(known.sum()), dtype=np.int64)
    block, most = _code_block(domain, f"{domain}_", rows[known], codes[known], amounts, len(persons), min_patients)
    return block, most, total, skipped


def _person_blocks(db: _Database, persons: np.ndarray, min_patients: int) -> tuple[list[_Block], int]:
    """One-hot gender (by patient count) and birth decade (in time order) columns."""
    frame = db.fetch(f"SELECT {db.column('person', 'person_id')} AS p, {db.column('person', 'gender_concept_id')} "
                     f"AS g, {db.column('person', 'year_of_birth')} AS y FROM {db.tables['person']}")
    rows = np.searchsorted(persons, np.asarray(frame["p"], np.int64))
    blocks, most = [], 0
    for key, prefix, by_count in (("g", "gender_", True), ("y", "birth_decade_", False)):
        column = np.ma.asarray(frame[key])
        codes = np.asarray(column.filled(0), dtype=np.int64)
        present = ~np.ma.getmaskarray(column) & (codes != 0)  # gender concept 0: no matching concept
        codes = codes // 10 * 10 if key == "y" else codes
        block, top = _code_block("person", prefix, rows[present], codes[present],
                                 np.ones(int(present.sum()), dtype=np.int64), len(persons), min_patients, by_count)
        block.concept = key == "g"
        blocks.append(block)
        most = max(most, top)
    return blocks, most


def _entries(db: _Database, blocks: list[_Block]) -> list[VocabularyEntry]:
    names = {**_GENDER_NAMES, **_concept_names(db, sorted({k for b in blocks if b.concept for k in b.keys}))}
    entries = []
    for block in blocks:
        for key, patients in zip(block.keys, block.patients, strict=True):
            if block.concept:
                entries.append(VocabularyEntry(f"{block.prefix}{key}", key, names.get(key, f"concept {key}"),
                                               block.domain, patients))
            else:
                entries.append(VocabularyEntry(f"{block.prefix}{key}", None, f"born {key}-{key + 9}", block.domain,
                                               patients))
    return entries


def read_omop(
    path: str | Path,
    *,
    domains: Sequence[str] = ("condition", "drug"),
    values: str = "binary",
    min_patients: int = 10,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> OmopRecords:
    """Read an OMOP CDM DuckDB database as a persons x concepts matrix (one row per row of ``person``).

    Persons without a selected event get an all-zero row. Event rows with concept id 0 ("no matching concept")
    or NULL, a NULL person id, or a person absent from ``person`` are left out and counted in ``skipped``.
    Columns: domain by domain in the order given, then by descending patient count, then concept id (birth
    decades in time order). Concept names come from the ``concept`` table when the database has one, else
    ``concept <id>``.

    Args:
        path: a DuckDB file holding OMOP CDM tables (any schema; table and column names in any case).
        domains: any of ``condition`` (``condition_occurrence``), ``drug`` (``drug_exposure``) and ``person``
            (one-hot ``gender_<concept_id>`` and ``birth_decade_<year>`` columns, so synthetic persons get a
            gender and a birth year).
        values: ``binary`` (1 if the person has the code at least once) or ``count`` (occurrence rows).
        min_patients: keep codes present in at least this many persons, counted over all persons (all splits
            together: the vocabulary is fixed before splitting, so every split has the same columns).
        split_seed: seed of the patient-level split (:func:`synthmed.data.splits.patient_split` on the person
            ids as text, the split :func:`synthmed.data.records.load_records` makes of the written records).
        val_fraction: fraction of persons in ``val``.
        test_fraction: fraction of persons in ``test``.

    Raises:
        ConfigError: an unknown domain or ``values``, ``min_patients`` < 1, bad split fractions.
        DataError: one line naming the file: missing, not a DuckDB database, duckdb not installed, a needed
            table or column missing, no persons, a domain without events, no code kept by ``min_patients``.
    """
    chosen = _check_options(domains, values, min_patients)
    path = Path(path).expanduser()
    db = _Database(path)
    try:
        needs, why = _needs(chosen)
        db.require(needs, why)
        persons = _persons(db)
        blocks: list[_Block] = []
        most, skipped, counts = 0, 0, {}
        for domain in chosen:
            if domain == "person":
                found, top = _person_blocks(db, persons, min_patients)
                blocks += found
            else:
                block, top, counts[domain], lost = _event_block(db, domain, persons, values, min_patients)
                blocks.append(block)
                skipped += lost
            most = max(most, top)
        if not any(block.keys for block in blocks):
            raise DataError(path, f"no code is present in >= {min_patients} persons; the most frequent appears in "
                                  f"{most}: lower min_patients")
        vocabulary = _entries(db, blocks)
    finally:
        db.close()
    parts = patient_split(persons.astype(str), val_fraction, test_fraction, split_seed)
    splits = np.empty(len(persons), dtype="<U5")
    for name, idx in parts.items():
        splits[idx] = name
    matrix = np.concatenate([block.cells for block in blocks], axis=1)
    return OmopRecords(person_ids=persons, matrix=matrix, vocabulary=vocabulary, splits=splits, source=str(path),
                       values=values, skipped=skipped, counts=counts)


def write_records(records: OmopRecords, out_dir: str | Path) -> dict[str, Path]:
    """Write ``records.csv`` and ``vocabulary.csv`` into a new folder, all or nothing.

    ``records.csv``: header ``person_id,split,<columns...>``, one row per person, integer cells.
    ``vocabulary.csv``: header ``column,concept_id,concept_name,domain,patients``, one row per column in column
    order (``concept_id`` empty for birth decades). Both are written into a hidden folder beside ``out_dir`` and
    renamed into place, so a failure leaves no half-written output.

    Args:
        records: what :func:`read_omop` returned.
        out_dir: a folder that does not exist yet or is empty.

    Returns:
        ``{"records": path, "vocabulary": path}``.

    Raises:
        ConfigError: ``out_dir`` exists and is not an empty folder.
    """
    out = empty_output_folder(out_dir)
    cells = np.rint(records.matrix).astype(np.int64)

    def write(folder: Path) -> None:
        with open(folder / RECORDS_FILE, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["person_id", "split", *records.columns])
            for person, split, row in zip(records.person_ids.tolist(), records.splits.tolist(), cells, strict=True):
                writer.writerow([person, split, *row.tolist()])
        with open(folder / VOCABULARY_FILE, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(VOCABULARY_HEADER)
            for e in records.vocabulary:
                writer.writerow([e.column, "" if e.concept_id is None else e.concept_id, e.concept_name, e.domain,
                                 e.patients])

    write_folder_atomically(out, write)
    return {"records": out / RECORDS_FILE, "vocabulary": out / VOCABULARY_FILE}


def read_vocabulary(path: str | Path, columns: Sequence[str]) -> dict[str, list[Any]]:
    """The entries of a vocabulary file for ``columns``, as :attr:`DataInfo.vocabulary` holds them.

    Args:
        path: a CSV with the columns ``column``, ``concept_id``, ``concept_name`` and ``domain`` (``patients`` and
            others are ignored), as :func:`write_records` writes it; rows for columns not in ``columns`` are ignored.
        columns: the record columns, in order.

    Returns:
        ``{"concept_id": [int | None, ...], "concept_name": [...], "domain": [...]}`` in ``columns`` order.

    Raises:
        DataError: one line naming the file: unreadable, a missing header column, a column listed twice, a
            record column absent from the file, a concept id that is not an integer.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(path, f"cannot read the vocabulary ({one_line(exc, limit=200)})") from exc
    header = [name.strip().lower() for name in rows[0]] if rows else []
    missing = [name for name in VOCABULARY_HEADER[:4] if name not in header]
    if missing:
        raise DataError(path, f"vocabulary has no column {', '.join(missing)}; it needs a header "
                              f"{','.join(VOCABULARY_HEADER)}")
    at = {name: header.index(name) for name in VOCABULARY_HEADER[:4]}
    entries: dict[str, tuple[int | None, str, str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(path, f"line {line} has {len(row)} cells for {len(header)} columns")
        name, concept = row[at["column"]].strip(), row[at["concept_id"]].strip()
        if name in entries:
            raise DataError(path, f"line {line}: column {name!r} is listed twice")
        try:
            concept_id = None if concept == "" else int(concept)
        except ValueError:
            raise DataError(path, f"line {line}: concept_id {concept!r} is not an integer") from None
        entries[name] = (concept_id, row[at["concept_name"]], row[at["domain"]].strip())
    absent = [c for c in columns if c not in entries]
    if absent:
        raise DataError(path, f"vocabulary lacks {len(absent)} record column(s): {listing(absent, 5)}")
    chosen = [entries[c] for c in columns]
    return {"concept_id": [e[0] for e in chosen], "concept_name": [e[1] for e in chosen],
            "domain": [e[2] for e in chosen]}
