"""Statistics of a visual Turing test: clinicians shown real and GAN-made images say which is which.

Each answer is one reader's call on one image (``real`` or ``synthetic``) with a confidence from 1 (guessing) to
``K`` (certain). :func:`reader_study_summary` turns a list of answers into a strict-JSON dict. For the study as a
whole (``pooled``) and for each reader:

* ``accuracy``: the fraction of images called correctly. 0.5 (``chance``) means the reader could not tell
  synthetic from real images; well above 0.5 means they could. ``accuracy_ci`` is the exact Clopper-Pearson 95%
  interval (Clopper & Pearson 1934), conservative (it covers at least 95%) and valid for small studies.
* ``sensitivity``: of the synthetic images, the fraction called synthetic (how often a fake is caught);
  ``specificity``: of the real images, the fraction called real. Accuracy mixes the two in the study's proportion
  of synthetic images; when that is not one half, a reader who always answers the majority class scores above 0.5.
* ``binomial_p``: exact two-sided binomial test of the number correct against chance (p = 0.5). A large p does not
  show the images are indistinguishable, only that this study could not tell; read it with ``accuracy_ci``.
* ``auc``: ROC AUC of detecting synthetic images with the confidence-signed score (+confidence when answered
  synthetic, -confidence when answered real): the probability that a random synthetic image scores above a random
  real one, ties counting one half (Mann-Whitney). It uses the confidences, so it separates a reader who is right
  when sure from one who is right by luck. 0.5 is chance.

Over the study:

* ``fleiss_kappa``: agreement between readers on their answers (not on correctness) over the images every reader
  answered (Fleiss 1971). 1 is full agreement, 0 is what chance gives with the same answer rates; readers who agree
  that an image is real although it is synthetic agree all the same.
* ``calibration``: the accuracy at each confidence level (pooled over readers). Calibrated readers are more often
  right when more confident; accuracy near 0.5 at every level means the confidences carry no information.

GAN Turing tests in radiology reported in this way include Kazuhiro et al. 2018 (brain MRI) and Korkinof et al.
2021 (mammograms).

References:
    Fleiss, J. L. (1971). Measuring nominal scale agreement among many raters. Psychological Bulletin 76(5),
    378-382.
    Clopper, C. J., Pearson, E. S. (1934). The use of confidence or fiducial limits illustrated in the case of the
    binomial. Biometrika 26(4), 404-413.
    Kazuhiro, K., et al. (2018). Generative adversarial networks for the creation of realistic artificial brain
    magnetic resonance images. Tomography 4(4), 159-163.
    Korkinof, D., et al. (2021). Perceived realism of high-resolution generative adversarial network-derived
    synthetic mammograms. Radiology: Artificial Intelligence 3(2), e190181.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta, binomtest, rankdata

REAL = "real"
SYNTHETIC = "synthetic"
LABELS = (REAL, SYNTHETIC)
CHANCE = 0.5
NAMED_ITEMS = 20  # the kappa note lists the shared items when there are at most this many


@dataclass(frozen=True)
class ReaderAnswer:
    """One reader's answer on one image."""

    reader: str  # reader name or id
    item: str  # image id: the same image shown to several readers has the same id
    truth: str  # 'real' | 'synthetic'
    answer: str  # 'real' | 'synthetic'
    confidence: int  # 1..confidence_levels


# --- small pure helpers ------------------------------------------------------------------------------------------
def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval of a binomial proportion ``k / n``.

    The bounds are beta quantiles: ``lo = Beta(alpha/2; k, n-k+1)`` (0 when k = 0) and
    ``hi = Beta(1-alpha/2; k+1, n-k)`` (1 when k = n), with ``alpha = 1 - level``.

    Args:
        k: number of successes, 0 <= k <= n.
        n: number of trials, at least 1.
        level: coverage of the interval, in (0, 1).
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"clopper_pearson needs n >= 1 trials, got {n!r}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k <= n:
        raise ValueError(f"clopper_pearson needs 0 <= k <= n = {n}, got k = {k!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"clopper_pearson level must be in (0, 1), got {level!r}")
    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2.0, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - alpha / 2.0, k + 1, n - k))
    return low, high


def fleiss_kappa(counts: np.ndarray | Sequence[Sequence[int]]) -> dict[str, Any]:
    """Fleiss' kappa (Fleiss 1971) of an (items, categories) table of how many raters put each item in each category.

    ``p_observed`` is the mean over items of the fraction of rater pairs that agree; ``p_expected`` is the sum of
    squared overall category proportions (the agreement of raters answering at random with those proportions);
    ``kappa = (p_observed - p_expected) / (1 - p_expected)``, None when ``p_expected`` is 1 (every rating in one
    category, where kappa is 0/0).

    Args:
        counts: (items, categories) non-negative integer counts; every row sums to the same number of raters (>= 2).

    Returns:
        ``{"kappa", "n_items", "n_readers", "p_observed", "p_expected"}``.
    """
    table = np.asarray(counts)
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
        raise ValueError(f"fleiss_kappa needs an (items, categories) table, got shape {table.shape}")
    if not np.issubdtype(table.dtype, np.integer) or (table < 0).any():
        raise ValueError("fleiss_kappa needs non-negative integer counts")
    raters = table.sum(axis=1)
    if (raters != raters[0]).any():
        raise ValueError(f"fleiss_kappa needs the same number of raters for every item, got {sorted(set(raters))}")
    n_raters = int(raters[0])
    if n_raters < 2:
        raise ValueError(f"fleiss_kappa needs at least 2 raters per item, got {n_raters}")
    table = table.astype(np.float64)
    per_item = ((table**2).sum(axis=1) - n_raters) / (n_raters * (n_raters - 1))
    p_observed = float(per_item.mean())
    column_totals = table.sum(axis=0)
    p_expected = float(((column_totals / column_totals.sum()) ** 2).sum())
    # p_expected is 1 exactly when one category holds every rating; testing that on the counts avoids float noise.
    one_category = int(np.count_nonzero(column_totals)) == 1
    kappa = None if one_category else (p_observed - p_expected) / (1.0 - p_expected)
    return {"kappa": kappa, "n_items": int(table.shape[0]), "n_readers": n_raters,
            "p_observed": p_observed, "p_expected": p_expected}


def signed_confidence_auc(called_synthetic: Sequence[bool], confidence: Sequence[int],
                          is_synthetic: Sequence[bool]) -> float | None:
    """ROC AUC of detecting synthetic images with the confidence-signed score; None when one class is absent.

    The score is ``+confidence`` for an answer "synthetic" and ``-confidence`` for "real", so "certainly synthetic"
    ranks highest and "certainly real" lowest. The AUC is the fraction of (synthetic, real) pairs in which the
    synthetic image scores higher, ties counting one half (the Mann-Whitney U statistic over ``n_pos * n_neg``).

    Args:
        called_synthetic: (N,) whether each answer was "synthetic".
        confidence: (N,) confidence of each answer (positive integers).
        is_synthetic: (N,) whether each image was synthetic.
    """
    called = np.asarray(called_synthetic, dtype=bool)
    sure = np.asarray(confidence, dtype=np.float64)
    positives = np.asarray(is_synthetic, dtype=bool)
    if not called.shape == sure.shape == positives.shape or called.ndim != 1:
        raise ValueError(f"signed_confidence_auc needs three (N,) sequences, got shapes {called.shape}, "
                         f"{sure.shape}, {positives.shape}")
    n_pos = int(positives.sum())
    n_neg = int(positives.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    scores = np.where(called, sure, -sure)
    ranks = rankdata(scores, method="average")  # tied scores share their mean rank: each tied pair counts 1/2
    u_statistic = float(ranks[positives].sum()) - n_pos * (n_pos + 1) / 2.0
    return u_statistic / (n_pos * n_neg)


# --- input checks ------------------------------------------------------------------------------------------------
def _check_levels(confidence_levels: int) -> None:
    if isinstance(confidence_levels, bool) or not isinstance(confidence_levels, int) or confidence_levels < 1:
        raise ValueError(f"confidence_levels must be a positive integer, got {confidence_levels!r}")


def _check_answer(answer: ReaderAnswer, confidence_levels: int) -> None:
    for field in ("reader", "item"):
        value = getattr(answer, field)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{field} must be a non-empty string, got {value!r}")
    for field in ("truth", "answer"):
        value = getattr(answer, field)
        if value not in LABELS:
            raise ValueError(f"{field} must be 'real' or 'synthetic', got {value!r} (reader {answer.reader!r}, "
                             f"item {answer.item!r})")
    level = answer.confidence
    if isinstance(level, bool) or not isinstance(level, int | np.integer) or not 1 <= level <= confidence_levels:
        raise ValueError(f"confidence must be an integer from 1 to {confidence_levels}, got {level!r} "
                         f"(reader {answer.reader!r}, item {answer.item!r})")


def _check_consistent(answers: Sequence[ReaderAnswer]) -> None:
    """One truth per image, one answer per reader and image: kappa and the item count rely on both."""
    truths: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for answer in answers:
        if truths.setdefault(answer.item, answer.truth) != answer.truth:
            raise ValueError(f"item {answer.item!r} is given both truths 'real' and 'synthetic'")
        if (answer.reader, answer.item) in seen:
            raise ValueError(f"reader {answer.reader!r} answered item {answer.item!r} more than once")
        seen.add((answer.reader, answer.item))


# --- summaries ---------------------------------------------------------------------------------------------------
def natural_key(name: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key that reads runs of digits as numbers and ignores case: "reader 2" before "reader 10".

    ``re.split`` with a group puts text at even and digits at odd places, so like is always compared with like;
    the name itself breaks ties ("reader 02" and "reader 2", "Ann" and "ann").

    Args:
        name: A reader's name.
    """
    parts = re.split(r"([0-9]+)", name)
    return tuple(int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)), name


def _proportion(k: int, n: int) -> tuple[float | None, list[float] | None]:
    """``k / n`` and its Clopper-Pearson interval, both None when there is nothing to count."""
    if n == 0:
        return None, None
    return k / n, list(clopper_pearson(k, n))


def _group_summary(answers: Sequence[ReaderAnswer]) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity, binomial test and AUC of one group of answers (a reader or all)."""
    correct = sum(a.answer == a.truth for a in answers)
    synthetic = [a for a in answers if a.truth == SYNTHETIC]
    real = [a for a in answers if a.truth == REAL]
    caught = sum(a.answer == SYNTHETIC for a in synthetic)
    passed = sum(a.answer == REAL for a in real)
    accuracy, accuracy_ci = _proportion(correct, len(answers))
    sensitivity, sensitivity_ci = _proportion(caught, len(synthetic))
    specificity, specificity_ci = _proportion(passed, len(real))
    p_value = min(1.0, float(binomtest(correct, len(answers), CHANCE, alternative="two-sided").pvalue))
    auc = signed_confidence_auc([a.answer == SYNTHETIC for a in answers], [int(a.confidence) for a in answers],
                                [a.truth == SYNTHETIC for a in answers])
    return {"n": len(answers), "n_synthetic": len(synthetic), "n_real": len(real), "correct": correct,
            "accuracy": accuracy, "accuracy_ci": accuracy_ci,
            "sensitivity": sensitivity, "sensitivity_ci": sensitivity_ci,
            "specificity": specificity, "specificity_ci": specificity_ci,
            "binomial_p": p_value, "auc": auc}


def _calibration(answers: Sequence[ReaderAnswer], confidence_levels: int) -> list[dict[str, Any]]:
    rows = []
    for level in range(1, confidence_levels + 1):
        at_level = [a for a in answers if a.confidence == level]
        accuracy, interval = _proportion(sum(a.answer == a.truth for a in at_level), len(at_level))
        rows.append({"confidence": level, "n": len(at_level), "accuracy": accuracy, "ci": interval})
    return rows


def _shared_items(answers: Sequence[ReaderAnswer], readers: list[str]) -> list[str]:
    """The items answered by every reader, sorted."""
    readers_of: dict[str, set[str]] = defaultdict(set)
    for answer in answers:
        readers_of[answer.item].add(answer.reader)
    return sorted(item for item, who in readers_of.items() if len(who) == len(readers))


def _kappa(answers: Sequence[ReaderAnswer], readers: list[str], shared: list[str]) -> dict[str, Any] | None:
    if len(readers) < 2 or not shared:
        return None
    row_of = {item: row for row, item in enumerate(shared)}
    counts = np.zeros((len(shared), len(LABELS)), dtype=np.int64)
    for answer in answers:
        if answer.item in row_of:
            counts[row_of[answer.item], LABELS.index(answer.answer)] += 1
    return fleiss_kappa(counts)


def _notes(answers: Sequence[ReaderAnswer], readers: list[str], n_items: int, shared: list[str],
           kappa: dict[str, Any] | None) -> list[str]:
    n_synthetic = sum(a.truth == SYNTHETIC for a in answers)
    notes = [
        "Intervals are exact Clopper-Pearson 95% intervals (conservative: they cover at least 95%).",
        "The pooled accuracy, its interval and its binomial test treat every answer as independent, but readers "
        "see the same images and each reader answers many: the pooled interval is too narrow and its p-value "
        "optimistic (too small). Per-reader tests treat that reader's images as independent.",
        "AUC scores each answer +confidence when called synthetic and -confidence when called real; synthetic "
        "images are the positives; ties count one half; None when a group has only one kind of image.",
        "Calibration pools the answers of all readers at each confidence level; readers may use the scale "
        "differently.",
    ]
    if 2 * n_synthetic != len(answers):
        majority = max(n_synthetic, len(answers) - n_synthetic) / len(answers)
        notes.append(f"{n_synthetic} of {len(answers)} answers are on synthetic images: a reader who always gave "
                     f"the majority answer would score {majority:.3f}, not 0.5; compare sensitivity and specificity.")
    if len(readers) < 2:
        notes.append("Fleiss' kappa needs at least 2 readers: None.")
    elif not shared:
        notes.append(f"No item was answered by all {len(readers)} readers: Fleiss' kappa is None.")
    else:
        left_out = n_items - len(shared)
        # Name the items while the list stays readable; beyond that the count says enough.
        named = f" ({', '.join(shared)})" if len(shared) <= NAMED_ITEMS else ""
        notes.append(f"Fleiss' kappa measures agreement on the answer (real/synthetic), not on correctness, over "
                     f"the {len(shared)} of {n_items} items answered by all {len(readers)} readers{named}"
                     + (f"; the other {left_out} answered by fewer readers are left out." if left_out else "."))
        if kappa is not None and kappa["kappa"] is None:
            notes.append("Every reader gave the same answer on every shared item: kappa is 0/0, None.")
    return notes


def reader_study_summary(answers: Sequence[ReaderAnswer], confidence_levels: int = 5) -> dict[str, Any]:
    """Summarise a visual Turing test: accuracy, sensitivity, specificity, AUC, agreement and calibration.

    See the module docstring for what each number means. The result is strict JSON: undefined values are None.

    Args:
        answers: one :class:`ReaderAnswer` per (reader, image); an image keeps one id (and one truth) across
            readers, and no reader answers an image twice.
        confidence_levels: the number K of confidence levels; confidences run from 1 to K.

    Returns:
        ``n_answers``, ``n_readers``, ``n_items``, ``chance``, ``pooled`` and ``readers`` (one per reader, sorted by
        name with numbers by value: "reader 2" before "reader 10"), ``fleiss_kappa``, ``calibration`` (one entry per
        level 1..K) and ``notes``.

    Raises:
        ValueError: no answers, a truth or answer other than 'real'/'synthetic', a confidence outside 1..K, an
            image with two truths, or a reader answering an image twice.
    """
    _check_levels(confidence_levels)
    answers = list(answers)
    if not answers:
        raise ValueError("reader study has no answers")
    for answer in answers:
        _check_answer(answer, confidence_levels)
    _check_consistent(answers)
    readers = sorted({a.reader for a in answers}, key=natural_key)
    n_items = len({a.item for a in answers})
    shared = _shared_items(answers, readers)
    kappa = _kappa(answers, readers, shared)
    per_reader = [{"reader": name, **_group_summary([a for a in answers if a.reader == name])} for name in readers]
    return {
        "n_answers": len(answers), "n_readers": len(readers), "n_items": n_items, "chance": CHANCE,
        "pooled": _group_summary(answers), "readers": per_reader, "fleiss_kappa": kappa,
        "calibration": _calibration(answers, confidence_levels),
        "notes": _notes(answers, readers, n_items, shared, kappa),
    }
