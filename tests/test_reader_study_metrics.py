"""Statistics of the visual Turing test (synthmed.metrics.reader_study), checked against hand-computed values."""

from __future__ import annotations

import json
import math
import typing
from typing import Any

import numpy as np
import pytest

from synthmed.metrics.reader_study import (
    ReaderAnswer,
    clopper_pearson,
    fleiss_kappa,
    reader_study_summary,
    signed_confidence_auc,
)


def binomial_tail_at_least(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1.0 - p) ** (n - i) for i in range(k, n + 1))


def answer(reader: str, item: str, truth: str, called: str, confidence: int) -> ReaderAnswer:
    return ReaderAnswer(reader=reader, item=item, truth=truth, answer=called, confidence=confidence)


# --- Fleiss' kappa -----------------------------------------------------------------------------------------------
def test_fleiss_kappa_wikipedia_example() -> None:
    # Wikipedia "Fleiss' kappa", worked example: 10 items, 14 raters, 5 categories; P_bar = 0.378, P_e = 0.213,
    # kappa = 0.210.
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    result = fleiss_kappa(counts)
    assert result["kappa"] == pytest.approx(0.210, abs=5e-4)
    assert result["p_observed"] == pytest.approx(0.378, abs=5e-4)
    assert result["p_expected"] == pytest.approx(0.213, abs=5e-4)
    assert (result["n_items"], result["n_readers"]) == (10, 14)


def test_fleiss_kappa_two_categories_by_hand() -> None:
    # 4 items, 4 raters, categories (real, synthetic). Per item, the agreeing fraction of rater pairs is
    # (sum n_ij^2 - n) / (n (n - 1)) with n (n - 1) = 12:
    #   [4, 0]: (16 - 4) / 12 = 1;  [3, 1]: (9 + 1 - 4) / 12 = 0.5;  [1, 3]: 0.5;  [0, 4]: 1   -> P_bar = 0.75.
    # Column proportions: real (4 + 3 + 1 + 0) / 16 = 0.5, synthetic 0.5 -> P_e = 0.25 + 0.25 = 0.5.
    # kappa = (0.75 - 0.5) / (1 - 0.5) = 0.5.
    result = fleiss_kappa(np.array([[4, 0], [3, 1], [1, 3], [0, 4]]))
    assert result == {"kappa": pytest.approx(0.5), "n_items": 4, "n_readers": 4,
                      "p_observed": pytest.approx(0.75), "p_expected": pytest.approx(0.5)}


def test_fleiss_kappa_is_none_when_every_rating_is_one_category() -> None:
    result = fleiss_kappa([[3, 0], [3, 0]])
    assert result["kappa"] is None
    assert result["p_observed"] == 1.0 and result["p_expected"] == 1.0


@pytest.mark.parametrize("counts", [[[2, 0], [1, 0]], [[1, 0], [1, 0]], [[2.0, 0.0]], [[3, -1]], [1, 2]])
def test_fleiss_kappa_rejects_bad_tables(counts: list) -> None:
    with pytest.raises(ValueError, match="fleiss_kappa"):
        fleiss_kappa(counts)


# --- Clopper-Pearson ---------------------------------------------------------------------------------------------
def test_clopper_pearson_known_values() -> None:
    # 0/10: lo = 0, hi solves (1 - p)^10 = 0.025, so hi = 1 - 0.025^(1/10) = 0.3084971; 10/10 mirrors it.
    # 5/10: statsmodels proportion_confint(5, 10, method="beta") = (0.1870860, 0.8129140).
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1.0 - 0.025**0.1))
    assert clopper_pearson(0, 10)[1] == pytest.approx(0.3084971, abs=1e-7)
    assert clopper_pearson(10, 10) == (pytest.approx(0.6915029, abs=1e-7), 1.0)
    low, high = clopper_pearson(5, 10)
    assert (low, high) == (pytest.approx(0.1870860, abs=1e-7), pytest.approx(0.8129140, abs=1e-7))
    # 0/1 at 95%: hi = 1 - 0.025 = 0.975; 90%: 1 - 0.05.
    assert clopper_pearson(0, 1) == (0.0, pytest.approx(0.975))
    assert clopper_pearson(0, 1, level=0.90) == (0.0, pytest.approx(0.95))


@pytest.mark.parametrize(("k", "n"), [(6, 9), (2, 4), (17, 40)])
def test_clopper_pearson_bounds_are_where_the_binomial_tails_are_2_5_percent(k: int, n: int) -> None:
    # The definition: at lo, P(X >= k) = 0.025; at hi, P(X <= k) = 0.025 (sums of math.comb terms).
    low, high = clopper_pearson(k, n)
    assert binomial_tail_at_least(k, n, low) == pytest.approx(0.025, abs=1e-9)
    assert 1.0 - binomial_tail_at_least(k + 1, n, high) == pytest.approx(0.025, abs=1e-9)


@pytest.mark.parametrize(("k", "n", "level"), [(0, 0, 0.95), (5, 4, 0.95), (-1, 4, 0.95), (1, 4, 1.0)])
def test_clopper_pearson_rejects_bad_arguments(k: int, n: int, level: float) -> None:
    with pytest.raises(ValueError, match="clopper_pearson"):
        clopper_pearson(k, n, level)


# --- a small study computed by hand --------------------------------------------------------------------------------
# Items i1, i2 are real; i3, i4, i5 synthetic. "Ravi" answers i1-i4, "Ada" answers i1-i5 (Ravi's answers come first,
# so sorting by name must put Ada first). Signed score: +confidence if called synthetic, -confidence if called real.
#   reader item truth      answer     conf  correct  score
#   Ravi   i1   real       real       4     yes      -4
#   Ravi   i2   real       synthetic  2     no       +2
#   Ravi   i3   synthetic  synthetic  5     yes      +5
#   Ravi   i4   synthetic  real       1     no       -1
#   Ada    i1   real       real       3     yes      -3
#   Ada    i2   real       real       2     yes      -2
#   Ada    i3   synthetic  synthetic  4     yes      +4
#   Ada    i4   synthetic  synthetic  2     yes      +2
#   Ada    i5   synthetic  real       3     no       -3
SMALL_STUDY = [
    answer("Ravi", "i1", "real", "real", 4),
    answer("Ravi", "i2", "real", "synthetic", 2),
    answer("Ravi", "i3", "synthetic", "synthetic", 5),
    answer("Ravi", "i4", "synthetic", "real", 1),
    answer("Ada", "i1", "real", "real", 3),
    answer("Ada", "i2", "real", "real", 2),
    answer("Ada", "i3", "synthetic", "synthetic", 4),
    answer("Ada", "i4", "synthetic", "synthetic", 2),
    answer("Ada", "i5", "synthetic", "real", 3),
]


def test_small_study_pooled_by_hand() -> None:
    summary = reader_study_summary(SMALL_STUDY)
    assert (summary["n_answers"], summary["n_readers"], summary["n_items"], summary["chance"]) == (9, 2, 5, 0.5)
    pooled = summary["pooled"]
    # 6 of 9 correct; synthetic answers 5, called synthetic 3 (Ravi i3, Ada i3, Ada i4); real answers 4, called
    # real 3 (Ravi i1, Ada i1, Ada i2).
    assert (pooled["n"], pooled["correct"], pooled["n_synthetic"], pooled["n_real"]) == (9, 6, 5, 4)
    assert pooled["accuracy"] == pytest.approx(6 / 9)
    assert pooled["sensitivity"] == pytest.approx(3 / 5)
    assert pooled["specificity"] == pytest.approx(3 / 4)
    assert pooled["accuracy_ci"] == pytest.approx(list(clopper_pearson(6, 9)))
    assert pooled["sensitivity_ci"] == pytest.approx(list(clopper_pearson(3, 5)))
    assert pooled["specificity_ci"] == pytest.approx(list(clopper_pearson(3, 4)))
    # Two-sided binomial test at p = 0.5 (symmetric): 2 P(X >= 6) = 2 (C(9,6) + C(9,7) + C(9,8) + C(9,9)) / 2^9
    # = 2 * 130 / 512 = 0.5078125.
    assert pooled["binomial_p"] == pytest.approx(2 * sum(math.comb(9, i) for i in range(6, 10)) / 2**9)
    assert pooled["binomial_p"] == pytest.approx(0.5078125)
    # AUC: synthetic scores {+5, -1, +4, +2, -3} against real {-4, +2, -3, -2}, 20 pairs:
    #   +5 beats all 4 -> 4;  -1 beats -4, -3, -2 -> 3;  +4 -> 4;  +2 beats -4, -3, -2, ties +2 -> 3.5;
    #   -3 beats -4, ties -3 -> 1.5.  Total 16 / 20 = 0.8.
    assert pooled["auc"] == pytest.approx(0.8)


def test_small_study_per_reader_split() -> None:
    readers = reader_study_summary(SMALL_STUDY)["readers"]
    assert [r["reader"] for r in readers] == ["Ada", "Ravi"]
    ada, ravi = readers
    # Ada: 4 of 5 correct; synthetic 2 of 3 caught; real 2 of 2 passed. Binomial: 2 (C(5,4) + C(5,5)) / 32 = 0.375.
    # AUC: synthetic {+4, +2, -3} vs real {-3, -2}: 2 + 2 + 0.5 (tie with -3) = 4.5 of 6 = 0.75.
    assert (ada["n"], ada["correct"], ada["n_synthetic"], ada["n_real"]) == (5, 4, 3, 2)
    assert ada["accuracy"] == pytest.approx(0.8)
    assert ada["sensitivity"] == pytest.approx(2 / 3)
    assert ada["specificity"] == 1.0
    assert ada["specificity_ci"] == pytest.approx([clopper_pearson(2, 2)[0], 1.0])
    assert ada["binomial_p"] == pytest.approx(0.375)
    assert ada["auc"] == pytest.approx(0.75)
    # Ravi: 2 of 4 correct; synthetic 1 of 2; real 1 of 2. Binomial p = 1 (exactly at chance).
    # AUC: synthetic {+5, -1} vs real {-4, +2}: 2 + 1 = 3 of 4 = 0.75.
    assert (ravi["n"], ravi["correct"], ravi["n_synthetic"], ravi["n_real"]) == (4, 2, 2, 2)
    assert (ravi["accuracy"], ravi["sensitivity"], ravi["specificity"]) == (0.5, 0.5, 0.5)
    assert ravi["binomial_p"] == pytest.approx(1.0)
    assert ravi["auc"] == pytest.approx(0.75)
    assert ravi["accuracy_ci"] == pytest.approx(list(clopper_pearson(2, 4)))


def test_readers_are_listed_in_natural_order_numbers_by_value() -> None:
    names = ["reader 10", "reader 2", "Reader 3", "reader 1", "reader 2b", "ann"]
    study = [answer(name, f"i{k}", "real", "real", 3) for k, name in enumerate(names)]
    readers = [r["reader"] for r in reader_study_summary(study)["readers"]]
    assert readers == ["ann", "reader 1", "reader 2", "reader 2b", "Reader 3", "reader 10"]


def test_the_summary_is_typed_as_a_dict_of_str_keys() -> None:
    assert typing.get_type_hints(reader_study_summary)["return"] == dict[str, Any]


def test_small_study_calibration_by_hand() -> None:
    # Level 1: Ravi i4 (wrong) -> 0/1.  Level 2: Ravi i2 (wrong), Ada i2, Ada i4 (right) -> 2/3.
    # Level 3: Ada i1 (right), Ada i5 (wrong) -> 1/2.  Level 4: Ravi i1, Ada i3 (right) -> 2/2.
    # Level 5: Ravi i3 (right) -> 1/1.  Level 6 (asked for below) is never used: n = 0, accuracy None.
    calibration = reader_study_summary(SMALL_STUDY, confidence_levels=6)["calibration"]
    assert [row["confidence"] for row in calibration] == [1, 2, 3, 4, 5, 6]
    assert [row["n"] for row in calibration] == [1, 3, 2, 2, 1, 0]
    assert [row["accuracy"] for row in calibration[:5]] == pytest.approx([0.0, 2 / 3, 0.5, 1.0, 1.0])
    assert calibration[5]["accuracy"] is None and calibration[5]["ci"] is None
    # 0/1: [0, 0.975]; 1/1: [0.025, 1].
    assert calibration[0]["ci"] == pytest.approx([0.0, 0.975])
    assert calibration[4]["ci"] == pytest.approx([0.025, 1.0])


def test_small_study_kappa_uses_only_items_every_reader_answered() -> None:
    # i5 (Ada only) is left out. Over i1-i4 the (real, synthetic) counts are [2, 0], [1, 1], [0, 2], [1, 1]:
    # pair agreement 1, 0, 1, 0 -> P_bar = 0.5; proportions 4/8 and 4/8 -> P_e = 0.5; kappa = 0.
    summary = reader_study_summary(SMALL_STUDY)
    assert summary["fleiss_kappa"] == {"kappa": pytest.approx(0.0), "n_items": 4, "n_readers": 2,
                                       "p_observed": pytest.approx(0.5), "p_expected": pytest.approx(0.5)}
    assert any("4 of 5 items answered by all 2 readers (i1, i2, i3, i4); the other 1 answered by fewer" in note
               for note in summary["notes"])


def test_kappa_three_readers_one_skips_an_item() -> None:
    # x4 is answered by A and B only, so kappa uses x1-x3 with 3 raters each, counts (real, synthetic):
    #   x1 [0, 3]: (9 - 3) / 6 = 1;  x2 [2, 1]: (4 + 1 - 3) / 6 = 1/3;  x3 [3, 0]: 1  -> P_bar = 7/9.
    #   real 5/9, synthetic 4/9 -> P_e = 25/81 + 16/81 = 41/81; kappa = (63/81 - 41/81) / (40/81) = 22/40 = 0.55.
    study = [
        answer("A", "x1", "synthetic", "synthetic", 3), answer("B", "x1", "synthetic", "synthetic", 4),
        answer("C", "x1", "synthetic", "synthetic", 5),
        answer("A", "x2", "real", "real", 2), answer("B", "x2", "real", "real", 3),
        answer("C", "x2", "real", "synthetic", 1),
        answer("A", "x3", "real", "real", 5), answer("B", "x3", "real", "real", 4),
        answer("C", "x3", "real", "real", 2),
        answer("A", "x4", "synthetic", "synthetic", 2), answer("B", "x4", "synthetic", "real", 2),
    ]
    kappa = reader_study_summary(study)["fleiss_kappa"]
    assert (kappa["n_items"], kappa["n_readers"]) == (3, 3)
    assert kappa["p_observed"] == pytest.approx(7 / 9)
    assert kappa["p_expected"] == pytest.approx(41 / 81)
    assert kappa["kappa"] == pytest.approx(0.55)


def test_kappa_none_without_a_shared_item_or_with_unanimous_answers() -> None:
    disjoint = [answer("A", "x1", "real", "real", 1), answer("B", "x2", "real", "real", 1)]
    summary = reader_study_summary(disjoint)
    assert summary["fleiss_kappa"] is None
    assert any("No item was answered by all 2 readers" in note for note in summary["notes"])
    unanimous = [answer("A", "x1", "real", "real", 1), answer("B", "x1", "real", "real", 2)]
    kappa = reader_study_summary(unanimous)["fleiss_kappa"]
    assert kappa["kappa"] is None and kappa["p_expected"] == 1.0
    json.dumps(kappa, allow_nan=False)


# --- AUC cross-check -----------------------------------------------------------------------------------------------
def test_auc_matches_scikit_learn_on_a_random_study() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    n = 300
    is_synthetic = rng.random(n) < 0.4
    # Readers are right 65% of the time, so the AUC is well away from 0.5 and from 1; confidences tie often.
    right = rng.random(n) < 0.65
    called_synthetic = np.where(right, is_synthetic, ~is_synthetic)
    confidence = rng.integers(1, 6, size=n)
    study = [answer(f"r{i % 4}", f"img{i}", "synthetic" if s else "real", "synthetic" if c else "real", int(k))
             for i, (s, c, k) in enumerate(zip(is_synthetic, called_synthetic, confidence, strict=True))]
    expected = metrics.roc_auc_score(is_synthetic, np.where(called_synthetic, confidence, -confidence))
    assert 0.55 < expected < 0.95
    assert signed_confidence_auc(called_synthetic, confidence, is_synthetic) == pytest.approx(expected, abs=1e-12)
    summary = reader_study_summary(study)
    assert summary["pooled"]["auc"] == pytest.approx(expected, abs=1e-12)
    first = [i for i in range(n) if i % 4 == 0]
    assert summary["readers"][0]["auc"] == pytest.approx(metrics.roc_auc_score(
        is_synthetic[first], np.where(called_synthetic, confidence, -confidence)[first]), abs=1e-12)


def test_auc_none_when_one_class_is_absent() -> None:
    assert signed_confidence_auc([True, False], [3, 2], [True, True]) is None
    assert signed_confidence_auc([True, False], [3, 2], [False, False]) is None


# --- strict JSON and degenerate studies ------------------------------------------------------------------------------
def test_one_reader_only_real_images_is_strict_json() -> None:
    study = [answer("solo", "a", "real", "real", 5), answer("solo", "b", "real", "synthetic", 1),
             answer("solo", "c", "real", "real", 5)]
    summary = reader_study_summary(study, confidence_levels=5)
    text = json.dumps(summary, allow_nan=False)  # raises on NaN or inf
    assert json.loads(text) == summary
    pooled = summary["pooled"]
    assert pooled["sensitivity"] is None and pooled["sensitivity_ci"] is None
    assert pooled["specificity"] == pytest.approx(2 / 3)
    assert pooled["auc"] is None
    # 2 of 3 correct: 2 (C(3,2) + C(3,3)) / 8 = 1.0.
    assert pooled["binomial_p"] == pytest.approx(1.0)
    assert summary["fleiss_kappa"] is None
    assert summary["readers"] == [{"reader": "solo", **pooled}]
    levels = {row["confidence"]: row for row in summary["calibration"]}
    assert [levels[k]["n"] for k in range(1, 6)] == [1, 0, 0, 0, 2]
    assert levels[3]["accuracy"] is None and levels[3]["ci"] is None
    assert any("at least 2 readers" in note for note in summary["notes"])
    # Every answer is on a real image: the note points out that always answering "real" scores 1.0, not 0.5.
    assert any("0 of 3 answers are on synthetic images" in note and "1.000" in note for note in summary["notes"])


def test_small_study_is_strict_json_and_notes_name_the_assumptions() -> None:
    summary = reader_study_summary(SMALL_STUDY, confidence_levels=7)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert all(isinstance(note, str) for note in summary["notes"])
    assert any("independent" in note and "optimistic" in note for note in summary["notes"])


# --- bad input -----------------------------------------------------------------------------------------------------
def test_empty_study_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="no answers") as error:
        reader_study_summary([])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("bad", "shown"), [
    (answer("A", "x", "fake", "real", 3), "'fake'"),
    (answer("A", "x", "real", "Real", 3), "'Real'"),
    (answer("A", "x", "real", "real", 0), "got 0"),
    (answer("A", "x", "real", "real", 6), "got 6"),
    (answer("A", "x", "real", "real", 2.5), "got 2.5"),  # type: ignore[arg-type]
    (answer("A", "x", "real", "real", True), "got True"),  # type: ignore[arg-type]
    (answer("", "x", "real", "real", 3), "reader must be a non-empty string"),
    (answer("A", 7, "real", "real", 3), "got 7"),  # type: ignore[arg-type]
])
def test_bad_values_are_named(bad: ReaderAnswer, shown: str) -> None:
    good = answer("B", "y", "synthetic", "synthetic", 2)
    with pytest.raises(ValueError) as error:
        reader_study_summary([good, bad])
    assert shown in str(error.value)
    assert "\n" not in str(error.value)


def test_inconsistent_studies_are_rejected() -> None:
    with pytest.raises(ValueError, match="item 'x' is given both truths"):
        reader_study_summary([answer("A", "x", "real", "real", 1), answer("B", "x", "synthetic", "real", 1)])
    with pytest.raises(ValueError, match="reader 'A' answered item 'x' more than once"):
        reader_study_summary([answer("A", "x", "real", "real", 1), answer("A", "x", "real", "synthetic", 2)])
    with pytest.raises(ValueError, match="confidence_levels must be a positive integer, got 0"):
        reader_study_summary(SMALL_STUDY, confidence_levels=0)
