"""load_records: a ``split`` column found by name, and ``DataInfo.vocabulary`` (values, vocabulary files)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from synthmed.data.dataset import DataInfo
from synthmed.data.records import load_records
from synthmed.errors import DataError

ROWS = [("p1", "train", 1, 0), ("p2", "train", 0, 1), ("p3", "val", 1, 1), ("p4", "test", 0, 0), ("p5", "train", 1, 0)]
VOCABULARY = 'column,concept_id,concept_name,domain,patients\nI10,320128,"Hypertension, essential",condition,3\n' \
             "E11,201826,Type 2 diabetes,condition,2\nextra,7,not in the records,drug,1\n"


def _records(path: Path, split_name: str = "Split", rows: list[tuple] | None = None) -> Path:
    lines = [f"person_id,{split_name},E11,I10"] + [",".join(map(str, row)) for row in rows or ROWS]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_split_column_found_by_name(tmp_path: Path) -> None:
    path = _records(tmp_path / "ehr.csv")
    for split, patients in [("train", ["p1", "p2", "p5"]), ("val", ["p3"]), ("test", ["p4"])]:
        data = load_records(path, split=split)
        assert data.patients.tolist() == patients and data.columns == ("E11", "I10")
    # Values that are not all split names: the column is an ordinary code, as before.
    codes = _records(tmp_path / "codes.csv", split_name="split", rows=[(f"p{i}", i % 2, 1, 0) for i in range(10)])
    data = load_records(codes, split="all")
    assert data.columns == ("split", "E11", "I10")


def test_values_binary_or_count_over_the_whole_file(tmp_path: Path) -> None:
    binary = load_records(_records(tmp_path / "binary.csv"), split="test")
    assert binary.info.vocabulary == {"values": "binary"}
    rows = [*ROWS[:4], ("p5", "train", 3, 0)]  # the only count sits in train
    count = load_records(_records(tmp_path / "count.csv", rows=rows), split="test")
    assert count.info.vocabulary == {"values": "count"}


def test_vocabulary_file_beside_the_records(tmp_path: Path) -> None:
    path = _records(tmp_path / "ehr.csv")
    (tmp_path / "vocabulary.csv").write_text(VOCABULARY)
    info = load_records(path, split="all").info
    assert info.vocabulary == {"values": "binary", "concept_id": [201826, 320128],
                               "concept_name": ["Type 2 diabetes", "Hypertension, essential"],
                               "domain": ["condition", "condition"]}  # in record column order
    assert DataInfo.from_dict(json.loads(json.dumps(info.to_dict()))).vocabulary == info.vocabulary
    # <stem>.vocabulary.csv wins over vocabulary.csv; .csv.gz drops both suffixes.
    gz = tmp_path / "ehr2.csv.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(path.read_text())
    (tmp_path / "ehr2.vocabulary.csv").write_text(VOCABULARY.replace("320128", "1").replace("201826", ""))
    assert load_records(gz, split="all").info.vocabulary["concept_id"] == [None, 1]


@pytest.mark.parametrize("text, fragment", [
    ("column,concept_id\nE11,1\n", "no column concept_name, domain"),
    ("column,concept_id,concept_name,domain\nE11,x1,a,condition\nI10,2,b,condition\n", "'x1' is not an integer"),
    ("column,concept_id,concept_name,domain\nE11,1,a,condition\n", "lacks 1 record column(s): I10"),
])
def test_wrong_vocabulary_file_is_a_one_line_error(tmp_path: Path, text: str, fragment: str) -> None:
    path = _records(tmp_path / "ehr.csv")
    vocabulary = tmp_path / "ehr.vocabulary.csv"
    vocabulary.write_text(text)
    with pytest.raises(DataError) as exc:
        load_records(path, split="all")
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(vocabulary)) and fragment in message, message
