"""Metrics of synthetic patient records (:mod:`synthmed.metrics.ehr`) and their pictures (:mod:`synthmed.viz.ehr`).

Hand-made cases whose numbers are worked out in the comments, then behaviour on simulated records: a synthetic
set that copies its training records must score as leaking, one drawn afresh from the same distribution must not.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.metrics import roc_auc_score

from synthmed.metrics import ehr
from synthmed.viz.ehr import save_cooccurrence_difference, save_prediction_scatter, save_probability_scatter

pytestmark = pytest.mark.usefixtures("one_thread")


def _clustered(n: int, seed: int, *, codes: int = 12, groups: int = 3, inside: float = 0.8,
               outside: float = 0.05) -> np.ndarray:
    """Binary records of a latent-class model: each patient belongs to a group whose own codes are likely
    (``inside``) and the others rare, so codes predict each other."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, groups, n)
    owner = np.arange(codes) % groups
    p = np.where(owner[None, :] == group[:, None], inside, outside)
    return (rng.random((n, codes)) < p).astype(np.float64)


def _shuffle_columns(records: np.ndarray, seed: int) -> np.ndarray:
    """Each column permuted on its own: every prevalence kept, every link between codes destroyed."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(column) for column in records.T], axis=1)


# --- fidelity -------------------------------------------------------------------------------------------------------
def test_dimension_wise_probability_by_hand() -> None:
    real = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=float)  # prevalences 3/4, 1/4, 1/2
    synthetic = np.array([[1, 0, 1], [0, 0, 0]], dtype=float)  # 1/2, 0, 1/2
    out = ehr.dimension_wise_probability(real, synthetic)
    assert out["prevalence_real"] == [0.75, 0.25, 0.5]
    assert out["prevalence_synthetic"] == [0.5, 0.0, 0.5]
    # Centred: x = (1/4, -1/4, 0), y = (1/6, -1/3, 1/6); x.y = 1/8, |x|^2 = 1/8, |y|^2 = 1/6 -> r = sqrt(3/4).
    assert out["pearson_r"] == pytest.approx(math.sqrt(3) / 2)
    assert out["rmse"] == pytest.approx(math.sqrt((0.25**2 + 0.25**2) / 3))
    assert out["max_abs_difference"] == pytest.approx(0.25)
    assert (out["n_real"], out["n_synthetic"], out["n_codes"], out["values"]) == (4, 2, 3, "binary")
    assert out["mean_value_real"] is None


def test_dimension_wise_probability_binarises_counts_and_reports_means() -> None:
    real = np.array([[3, 0, 1], [1, 2, 0], [0, 0, 2], [2, 0, 0]], dtype=float)  # same presence as above
    synthetic = np.array([[4, 0, 1], [0, 0, 0]], dtype=float)
    out = ehr.dimension_wise_probability(real, synthetic)
    assert out["prevalence_real"] == [0.75, 0.25, 0.5]
    assert out["pearson_r"] == pytest.approx(math.sqrt(3) / 2)
    assert out["values"] == "counts"
    assert out["mean_value_real"] == [1.5, 0.5, 0.75]
    assert out["mean_value_synthetic"] == [2.0, 0.0, 0.5]


def test_dimension_wise_probability_constant_prevalences_have_no_r() -> None:
    out = ehr.dimension_wise_probability(np.ones((3, 2)), np.eye(2))
    assert out["pearson_r"] is None and "note" in out


def test_cooccurrence_difference_by_hand() -> None:
    # Real: a = b (r = 1), c uncorrelated with both (centred a.c = 0). Synthetic: a = 1 - b (r = -1), c always present.
    real = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=float)
    synthetic = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=float)
    out = ehr.cooccurrence_difference(real, synthetic)
    # Pairs (a, b), (a, c), (b, c): |1 - (-1)| = 2, |0 - 0|, |0 - 0| -> mean 2/3, max 2.
    assert out["mean_abs_difference"] == pytest.approx(2 / 3)
    assert out["max_abs_difference"] == pytest.approx(2.0)
    assert (out["constant_codes_real"], out["constant_codes_synthetic"], out["n_pairs"]) == (0, 1, 3)


def test_code_correlation_matches_numpy_and_zeroes_constant_codes() -> None:
    records = _clustered(200, seed=4, codes=6)
    records[:, 5] = 1.0  # constant
    corr, constant = ehr.code_correlation(records * 3)  # counts: presence is what counts
    assert constant == 1
    np.testing.assert_allclose(corr[:5, :5], np.corrcoef(records[:, :5], rowvar=False), atol=1e-12)
    assert not corr[5].any() and not corr[:, 5].any()


def test_shuffled_columns_keep_prevalences_but_lose_cooccurrence() -> None:
    real, fresh = _clustered(2000, seed=1), _clustered(2000, seed=2)
    shuffled = _shuffle_columns(fresh, seed=3)
    # Every prevalence is about 0.32, so r says little here; the prevalences agree to sampling noise.
    assert ehr.dimension_wise_probability(real, shuffled)["rmse"] < 0.03
    fresh_gap = ehr.cooccurrence_difference(real, fresh)["mean_abs_difference"]
    shuffled_gap = ehr.cooccurrence_difference(real, shuffled)["mean_abs_difference"]
    assert fresh_gap < 0.05 < 0.2 < shuffled_gap


# --- utility --------------------------------------------------------------------------------------------------------
def test_dimension_wise_prediction_fresh_sample_close_shuffled_columns_far() -> None:
    train, test, fresh = _clustered(600, seed=1), _clustered(600, seed=2), _clustered(600, seed=3)
    close = ehr.dimension_wise_prediction(train, fresh, test, top_k=12)
    far = ehr.dimension_wise_prediction(train, _shuffle_columns(fresh, seed=4), test, top_k=12)
    assert close["n_codes"] == far["n_codes"] == 12
    assert close["mean_f1_real"] > 0.7  # each code is predictable from its group's other codes
    assert close["mean_abs_f1_gap"] < 0.05
    assert far["mean_abs_f1_gap"] > 0.5
    assert far["mean_f1_real"] == close["mean_f1_real"]  # the real arm does not depend on the synthetic set
    assert (close["n_train_real"], close["n_train_synthetic"], close["n_test"]) == (600, 600, 600)


def test_dimension_wise_prediction_equal_rows_degenerate_and_skipped_codes() -> None:
    train, test = _clustered(300, seed=1), _clustered(300, seed=2)
    synthetic = _clustered(500, seed=3)
    synthetic[:, 0] = 0.0  # code 0 never present: its model can only say "absent"
    test[:, 11] = 0.0  # code 11 has no positive test record: skipped
    out = ehr.dimension_wise_prediction(train, synthetic, test, top_k=12, max_rows=250)
    assert (out["n_train_real"], out["n_train_synthetic"]) == (250, 250)
    assert (out["n_real_available"], out["n_synthetic_available"]) == (300, 500)
    assert out["skipped_codes"] == [11] and 11 not in out["codes"]
    assert out["degenerate_synthetic"] == [0] and out["degenerate_real"] == []
    assert out["f1_synthetic"][out["codes"].index(0)] == 0.0  # predicting absent everywhere: no true positive
    assert out["codes"] == sorted(out["codes"], key=lambda c: -train[:, c].mean())  # most prevalent first


def test_dimension_wise_prediction_sparse_fit_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = {"codes": 30, "groups": 10, "inside": 0.6, "outside": 0.01}  # about 7% of values present: sparse
    train, synthetic, test = (_clustered(400, seed=s, **kwargs) for s in (1, 2, 3))
    fitted_sparse = ehr.dimension_wise_prediction(train, synthetic, test, top_k=6)
    monkeypatch.setattr(ehr, "_SPARSE_BELOW", 0.0)
    fitted_dense = ehr.dimension_wise_prediction(train, synthetic, test, top_k=6)
    assert fitted_sparse["n_codes"] == 6
    assert fitted_sparse["f1_real"] == pytest.approx(fitted_dense["f1_real"])
    assert fitted_sparse["f1_synthetic"] == pytest.approx(fitted_dense["f1_synthetic"])


def test_dimension_wise_prediction_without_eligible_codes() -> None:
    records = _clustered(40, seed=1)
    out = ehr.dimension_wise_prediction(records, records, records, min_positives=100)
    assert out["n_codes"] == 0 and out["mean_f1_real"] is None and "note" in out


# --- privacy: hand-made cases ----------------------------------------------------------------------------------------
def test_closest_distance_is_hamming_for_binary_and_l1_for_counts() -> None:
    query = np.array([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=float)
    reference = np.array([[1, 1, 1, 1], [0, 0, 1, 1], [1, 0, 1, 0]], dtype=float)
    # Row 0: 2, 2, 2 -> 2. Row 1: 1 (first code), 1 (second code), 3 -> 1.
    np.testing.assert_array_equal(ehr.closest_distance(query, reference), [2.0, 1.0])
    np.testing.assert_array_equal(ehr.closest_distance(torch.from_numpy(query), reference), [2.0, 1.0])
    rng = np.random.default_rng(0)
    counts_q, counts_r = rng.integers(0, 5, (30, 7)).astype(float), rng.integers(0, 5, (40, 7)).astype(float)
    np.testing.assert_array_equal(ehr.closest_distance(counts_q, counts_r),
                                  cdist(counts_q, counts_r, "cityblock").min(axis=1))


def test_distances_are_the_same_in_small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    query, reference = (rng.random((50, 9)) < 0.3).astype(float), (rng.random((70, 9)) < 0.3).astype(float)
    whole = ehr.closest_distance(query, reference)
    monkeypatch.setattr(ehr, "_CHUNK_ENTRIES", 100)  # one query row per chunk
    np.testing.assert_array_equal(ehr.closest_distance(query, reference), whole)
    np.testing.assert_array_equal(whole, cdist(query, reference, "cityblock").min(axis=1))


def test_membership_inference_by_hand() -> None:
    synthetic = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=float)
    train = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=float)  # closest distances 0 and 1
    holdout = np.array([[1, 1, 1, 1], [0, 1, 1, 1]], dtype=float)  # 2 and 1
    out = ehr.membership_inference(train, holdout, synthetic)
    # Scores -d: members (0, -1), non-members (-2, -1); of the 4 pairs 3 are won and one tied -> 3.5 / 4.
    assert out["auc"] == pytest.approx(0.875)
    # d <= 0: TP 1, FP 0, accuracy 3/4; d <= 1: TP 2, FP 1, also 3/4; the tie goes to the smaller distance.
    assert out["best_threshold"] == {"distance": 0.0, "accuracy": 0.75, "precision": 1.0, "recall": 0.5}
    assert out["exact_match"] == {"accuracy": 0.75, "precision": 1.0, "recall": 0.5}
    assert (out["n_members"], out["n_non_members"], out["n_synthetic"], out["distance"]) == (2, 2, 2, "hamming")


def test_membership_auc_matches_scikit_learn() -> None:
    train, holdout, synthetic = _clustered(80, seed=1), _clustered(60, seed=2), _clustered(90, seed=3)
    out = ehr.membership_inference(train, holdout, synthetic, attacker_records=50, seed=7)
    rng = np.random.default_rng(7)  # the same draws as the function's
    members = train[np.sort(rng.choice(80, size=50, replace=False))]
    others = holdout[np.sort(rng.choice(60, size=50, replace=False))]
    scores = -np.r_[ehr.closest_distance(members, synthetic), ehr.closest_distance(others, synthetic)]
    assert out["auc"] == pytest.approx(roc_auc_score(np.r_[np.ones(50), np.zeros(50)], scores), abs=1e-12)
    assert (out["n_members"], out["n_non_members"]) == (50, 50)


def test_attribute_disclosure_by_hand() -> None:
    train = np.array([[1, 0, 1, 1], [0, 1, 0, 0]], dtype=float)
    holdout = np.array([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=float)
    synthetic = train.copy()  # the attacker's nearest record on codes 0-1 is each training patient's own copy
    out = ehr.attribute_disclosure(train, holdout, synthetic, known_codes=[0, 1])
    assert out["train"]["f1"] == 1.0 and out["train"]["true_positives"] == 2
    # Holdout: (1, 0 | 0, 1) gets copy 0's (1, 1): TP 1, FP 1; (0, 1 | 1, 0) gets copy 1's (0, 0): FN 1.
    assert (out["holdout"]["true_positives"], out["holdout"]["false_positives"],
            out["holdout"]["false_negatives"]) == (1, 1, 1)
    assert out["holdout"]["precision"] == 0.5 and out["holdout"]["recall"] == 0.5 and out["holdout"]["f1"] == 0.5
    assert out["f1_gap"] == pytest.approx(0.5)
    assert (out["n_known"], out["n_unknown"], out["k"]) == (2, 2, 1)


def test_attribute_disclosure_default_knows_half_the_most_prevalent_codes() -> None:
    records = _clustered(100, seed=1, codes=10)
    out = ehr.attribute_disclosure(records, _clustered(100, seed=2, codes=10), _clustered(100, seed=3, codes=10),
                                   k=3, attacked=40)
    assert out["n_known"] == 5 and out["n_unknown"] == 5  # min(256, 10 // 2)
    assert out["train"]["n_patients"] == out["holdout"]["n_patients"] == 40


def test_distance_to_closest_record_by_hand_with_ties() -> None:
    train = np.array([[0, 0, 0], [1, 1, 1]], dtype=float)
    holdout = np.array([[1, 0, 0], [0, 1, 1]], dtype=float)
    # (0,0,0): 0 to train, 1 to holdout -> closer to train; (1,1,0): one record at 1 in each -> 1/2; (1,0,1): the same.
    synthetic = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=float)
    out = ehr.distance_to_closest_record(train, holdout, synthetic)
    assert out["closer_to_train_share"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert out["expected_share"] == 0.5  # N / (N + H)
    assert (out["median_to_train"], out["median_to_holdout"]) == (1.0, 1.0)
    assert out["baseline_median_holdout_to_train"] == 1.0  # (1,0,0) -> (0,0,0) and (0,1,1) -> (1,1,1), both 1
    assert (out["n_train"], out["n_holdout"], out["n_synthetic"]) == (2, 2, 3)


def test_distance_to_closest_record_splits_ties_by_how_many_records_tie() -> None:
    """Two training records and one held-out record at the closest distance: the record counts 2/3 to train."""
    train = np.array([[1, 1, 1], [0, 1, 0]], dtype=float)
    holdout = np.array([[1, 0, 0], [0, 0, 1]], dtype=float)
    out = ehr.distance_to_closest_record(train, holdout, np.array([[1, 1, 0]], dtype=float))
    assert out["closer_to_train_share"] == pytest.approx(2 / 3)


def test_distance_to_closest_record_flags_copies_when_train_is_larger_than_holdout() -> None:
    """Regression: the references were sub-sampled to the smaller size, so most copies of training records were
    no longer in the training reference and a copying generator looked like a fresh sample."""
    kwargs = {"codes": 40, "groups": 4, "inside": 0.5, "outside": 0.1}
    train, holdout = _clustered(700, seed=1, **kwargs), _clustered(200, seed=2, **kwargs)
    copied = ehr.distance_to_closest_record(train, holdout, train)
    assert copied["median_to_train"] == 0.0 < copied["baseline_median_holdout_to_train"]
    assert copied["closer_to_train_share"] > 0.95
    fresh = ehr.distance_to_closest_record(train, holdout, _clustered(700, seed=3, **kwargs))
    assert fresh["expected_share"] == pytest.approx(700 / 900)
    assert abs(fresh["closer_to_train_share"] - fresh["expected_share"]) < 0.05


def test_copy_rate_by_hand() -> None:
    train = np.array([[1, 0], [0, 1], [1, 1]], dtype=float)
    holdout = np.array([[1, 1], [0, 0]], dtype=float)  # one of two repeats a training record
    synthetic = np.array([[1, 0], [1, 0], [0, 0], [2, 0]], dtype=float)  # rows 0 and 1 copy train[0]
    out = ehr.copy_rate(train, holdout, synthetic)
    assert out["copy_rate"] == 0.5 and out["n_synthetic_copies"] == 2
    assert out["baseline_holdout_copy_rate"] == 0.5
    assert out["unique_within_synthetic"] == 0.5 and out["n_unique_synthetic"] == 2  # (0, 0) and (2, 0)
    assert (out["n_train"], out["n_holdout"], out["n_synthetic"]) == (3, 2, 4)


def test_negative_zero_is_a_copy_of_zero() -> None:
    assert ehr.copy_rate(np.zeros((1, 2)), np.ones((1, 2)), np.array([[-0.0, 0.0]]))["copy_rate"] == 1.0


# --- privacy: a copying generator leaks, a fresh one does not --------------------------------------------------------
@pytest.fixture(scope="module")
def leak_sets() -> dict[str, np.ndarray]:
    """Rich enough records (40 codes) that two different patients rarely coincide."""
    kwargs = {"codes": 40, "groups": 4, "inside": 0.5, "outside": 0.1}
    train, holdout = _clustered(200, seed=1, **kwargs), _clustered(200, seed=2, **kwargs)
    return {"train": train, "holdout": holdout, "independent": _clustered(200, seed=3, **kwargs)}


def test_copied_training_records_score_as_leaking(leak_sets: dict[str, np.ndarray]) -> None:
    train, holdout, independent = leak_sets["train"], leak_sets["holdout"], leak_sets["independent"]
    copied, fresh = ehr.membership_inference(train, holdout, train), ehr.membership_inference(train, holdout,
                                                                                             independent)
    assert copied["auc"] > 0.95 and copied["exact_match"]["recall"] == 1.0
    assert abs(fresh["auc"] - 0.5) < 0.1
    assert ehr.copy_rate(train, holdout, train)["copy_rate"] == 1.0
    assert ehr.copy_rate(train, holdout, independent)["copy_rate"] < 0.05
    assert ehr.distance_to_closest_record(train, holdout, train)["closer_to_train_share"] == 1.0
    assert abs(ehr.distance_to_closest_record(train, holdout, independent)["closer_to_train_share"] - 0.5) < 0.1
    assert ehr.distance_to_closest_record(train, holdout, independent)["expected_share"] == 0.5
    disclosed = ehr.attribute_disclosure(train, holdout, train)
    assert disclosed["train"]["f1"] > disclosed["holdout"]["f1"] + 0.3
    baseline = ehr.attribute_disclosure(train, holdout, independent)
    assert abs(baseline["f1_gap"]) < 0.1


# --- the whole document ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("values", ["binary", "counts"])
def test_evaluate_records_is_strict_json_with_counts(values: str) -> None:
    train, holdout, synthetic = _clustered(150, seed=1), _clustered(120, seed=2), _clustered(100, seed=3)
    if values == "counts":
        rng = np.random.default_rng(0)
        train, holdout, synthetic = (x * rng.integers(1, 4, x.shape) for x in (train, holdout, synthetic))
    columns = [f"code{i}" for i in range(12)]
    doc = ehr.evaluate_records(train, holdout, synthetic, columns=columns, top_k=4)
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text) == doc
    assert list(doc) == ["counts", "fidelity", "utility", "privacy", "settings"]
    assert doc["counts"] == {"train": 150, "holdout": 120, "synthetic": 100, "codes": 12}
    assert set(doc["privacy"]) == {"membership_inference", "attribute_disclosure", "distance_to_closest_record",
                                   "copy_rate"}
    assert doc["settings"]["values"] == values
    assert doc["settings"]["distance"] == ("hamming" if values == "binary" else "l1")
    prediction = doc["utility"]["dimension_wise_prediction"]
    assert prediction["code_names"] == [columns[c] for c in prediction["codes"]]
    assert doc["privacy"]["membership_inference"]["n_members"] == 120
    assert doc["settings"]["known_top"] == 6


def test_evaluate_records_nulls_undefined_values() -> None:
    records = np.ones((6, 3))  # every code always present: no r, no eligible code
    doc = ehr.evaluate_records(records, records, records, columns=["a", "b", "c"], known_top=1)
    json.dumps(doc, allow_nan=False)
    assert doc["fidelity"]["dimension_wise_probability"]["pearson_r"] is None
    assert doc["utility"]["dimension_wise_prediction"]["mean_f1_real"] is None
    assert doc["privacy"]["distance_to_closest_record"]["closer_to_train_share"] == 0.5  # all tied: 6 and 6


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s[:, :2], "share their columns"),
    (lambda s: s[:0], "empty"),
    (lambda s: s - 2.0, "negative"),
    (lambda s: np.where(s > 0, np.nan, s), "NaN or infinite"),
    (lambda s: s[0], "2-D"),
])
def test_bad_inputs_are_refused_in_one_line(change, message: str) -> None:
    records = _clustered(20, seed=1, codes=3)
    with pytest.raises(ValueError, match=message) as caught:
        ehr.evaluate_records(records, records, change(records), columns=["a", "b", "c"])
    assert "\n" not in str(caught.value)


def test_column_names_must_match() -> None:
    records = _clustered(20, seed=1, codes=3)
    with pytest.raises(ValueError, match="2 column names for 3 columns"):
        ehr.evaluate_records(records, records, records, columns=["a", "b"])


# --- pictures -------------------------------------------------------------------------------------------------------
def test_plots_write_png_files(tmp_path) -> None:
    real, synthetic = _clustered(100, seed=1), _clustered(80, seed=2)
    fidelity = ehr.dimension_wise_probability(real, synthetic)
    paths = [
        save_probability_scatter(tmp_path / "prob.png", fidelity["prevalence_real"],
                                 fidelity["prevalence_synthetic"], r=fidelity["pearson_r"], rmse=fidelity["rmse"],
                                 n_real=100, n_synthetic=80, title="toy"),
        save_prediction_scatter(tmp_path / "pred.png", [0.8, 0.6, 0.7], [0.7, 0.1, 0.65], mean_gap=0.22, n_codes=3,
                                n_train=80, n_test=100),
        save_cooccurrence_difference(tmp_path / "sub" / "corr.png", ehr.code_correlation(real)[0],
                                     ehr.code_correlation(synthetic)[0], n_real=100, n_synthetic=80,
                                     codes=[0, 3, 6, 9], names=[f"c{i}" for i in range(12)], mean_abs_difference=0.1),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["corr.png", "pred.png", "prob.png"]
