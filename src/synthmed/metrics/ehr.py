"""Evaluation of synthetic patient records (medGAN-style EHR: rows = patients, columns = diagnosis / drug codes).

Values are binary (0 / 1) or counts (>= 0). The metrics follow the families synthcity groups them in (Qian et al.
2023, "Synthcity: facilitating innovative use cases of synthetic data in different data modalities"):

* **fidelity** (synthcity's "statistical" family):
  :func:`dimension_wise_probability`, each code's prevalence in the real and synthetic records (medGAN, Choi et
  al. 2017, "Generating Multi-label Discrete Patient Records using Generative Adversarial Networks", sec. 4:
  dimension-wise probability), and :func:`cooccurrence_difference`, how far apart the code-by-code correlation
  matrices are (pairs of codes, which prevalences alone cannot see).
* **utility** (synthcity's "performance" family, train on synthetic, test on real):
  :func:`dimension_wise_prediction` (medGAN sec. 4: dimension-wise prediction), one logistic regression per
  frequent code predicting it from all other codes, trained on real and on synthetic records, tested on real.
* **privacy**: :func:`membership_inference` (medGAN's presence disclosure: is this patient in the training set?),
  :func:`attribute_disclosure` (medGAN's attribute disclosure: knowing some codes of a patient, what do the
  synthetic records reveal about the rest?), :func:`distance_to_closest_record` and :func:`copy_rate` (synthcity
  files these two, nearest-neighbour distance and common-rows proportion, under "sanity"; they sit here because
  both are memorisation checks and need the same held-out baseline).

Conventions (one for every function here):

* Inputs are (N, D) arrays sharing their D columns, finite and >= 0; anything else is a one-line ``ValueError``.
* A record set is **binary** when every value is 0 or 1, otherwise **counts**. Fidelity, utility and the
  unknown codes of attribute disclosure look at presence (value > 0) only, which binarises counts.
* Distances between records are L1: for binary records that is the Hamming distance (the number of codes that
  differ). They are computed in chunks of rows (a matrix product for binary records, ``torch.cdist(p=1)`` for
  counts), never as an N x M x D tensor.
* Held-out records are real patients the generator never saw: they give each privacy metric its baseline
  (what the synthetic data reveal about anyone from the population, as opposed to about training patients).
* Every result carries its sample counts; undefined values are None (with a ``note``), never NaN or infinity, and
  every number is a plain Python int or float, so :func:`evaluate_records` is strict JSON.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from scipy import sparse

from synthmed.metrics.classification import roc_auc

__all__ = [
    "DEFAULT_KNOWN_TOP",
    "attribute_disclosure",
    "closest_distance",
    "code_correlation",
    "cooccurrence_difference",
    "copy_rate",
    "dimension_wise_prediction",
    "dimension_wise_probability",
    "distance_to_closest_record",
    "evaluate_records",
    "membership_inference",
]

#: medGAN's attacker knows the 256 most frequent codes; with few codes at most half are known (see
#: :func:`attribute_disclosure`).
DEFAULT_KNOWN_TOP = 256
#: Distance chunks hold at most this many query x reference entries (32 MiB of float64).
_CHUNK_ENTRIES = 1 << 22
#: Logistic regressions are fitted on a sparse matrix when fewer than this share of the values are present.
_SPARSE_BELOW = 0.1
BINARISED = ("presence only: a code counts as present in a record when its value is > 0, so count records are "
             "binarised for this metric")


# --- inputs and outputs --------------------------------------------------------------------------------------------
def _records(values: Any, name: str) -> np.ndarray:
    """``values`` as a C-contiguous float64 (N, D) array, refused (one line) when empty, non-finite or negative."""
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (patients, codes); got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); it needs at least one record and one code")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    if (array < 0).any():
        raise ValueError(f"{name} holds {int((array < 0).sum())} negative value(s); records are binary or counts")
    # + 0.0 turns -0.0 into 0.0, so identical records have identical bytes (copy_rate compares bytes).
    return np.ascontiguousarray(array + 0.0)


def _checked(**named: Any) -> list[np.ndarray]:
    """Each named input through :func:`_records`, refused when their numbers of columns differ."""
    arrays = [_records(values, name) for name, values in named.items()]
    widths = {name: a.shape[1] for name, a in zip(named, arrays, strict=True)}
    if len(set(widths.values())) > 1:
        listed = ", ".join(f"{name} has {d}" for name, d in widths.items())
        raise ValueError(f"record sets must share their columns (codes); {listed}")
    return arrays


def _is_binary(*arrays: np.ndarray) -> bool:
    return all(bool(np.isin(a, (0.0, 1.0)).all()) for a in arrays)


def _kind(*arrays: np.ndarray) -> tuple[str, str]:
    """("binary", "hamming") or ("counts", "l1")."""
    return ("binary", "hamming") if _is_binary(*arrays) else ("counts", "l1")


def _float(value: float | np.floating) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    """``value`` as strict JSON: numpy scalars and arrays as Python numbers and lists, NaN / infinity as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _subsample(records: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows drawn without replacement, kept in their order (all rows when ``n`` is their number)."""
    return records[np.sort(rng.choice(records.shape[0], size=n, replace=False))]


def _present(records: np.ndarray) -> np.ndarray:
    return (records > 0).astype(np.float64)


# --- distances ------------------------------------------------------------------------------------------------------
def _distance_chunks(query: np.ndarray, reference: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, L1 distances (c, n_reference)) for consecutive chunks of c query rows.

    Binary sets use Hamming = |q| + |r| - 2 q.r, one matrix product per chunk; in float32 it is exact (every
    term is an integer below 2**24 for fewer than 16 M codes) and twice as fast as float64. Counts use
    ``torch.cdist(p=1)``, which loops over pairs without an N x M x D intermediate.
    """
    chunk = max(1, _CHUNK_ENTRIES // max(reference.shape[0], 1))
    binary = _is_binary(query, reference)
    dtype = torch.float32 if binary else torch.float64
    ref = torch.from_numpy(reference).to(dtype)
    ref_ones = ref.sum(1)
    for start in range(0, query.shape[0], chunk):
        q = torch.from_numpy(query[start:start + chunk]).to(dtype)
        if binary:
            d = torch.addmm(ref_ones.unsqueeze(0), q, ref.T, beta=1.0, alpha=-2.0).add_(q.sum(1, keepdim=True))
        else:
            d = torch.cdist(q, ref, p=1.0)
        yield start, d.to(torch.float64).numpy()


def closest_distance(query: Any, reference: Any) -> np.ndarray:
    """For each query record, the L1 distance (Hamming for binary records) to its closest reference record.

    Args:
        query: (N, D) records.
        reference: (M, D) records with the same columns.

    Returns:
        (N,) float64 distances; 0 means an exact copy.
    """
    query, reference = _checked(query=query, reference=reference)
    out = np.empty(query.shape[0])
    for start, d in _distance_chunks(query, reference):
        out[start:start + d.shape[0]] = d.min(axis=1)
    return out


def _nearest(query: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each query row's k nearest reference rows; ties go to the lower reference index."""
    out = np.empty((query.shape[0], k), dtype=np.int64)
    for start, d in _distance_chunks(query, reference):
        # argmin returns the first minimum, as the stable sort does, in one pass.
        best = d.argmin(axis=1)[:, None] if k == 1 else np.argsort(d, axis=1, kind="stable")[:, :k]
        out[start:start + d.shape[0]] = best
    return out


# --- fidelity -------------------------------------------------------------------------------------------------------
def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r of two vectors; None when either is constant (r is 0 / 0) or shorter than 2."""
    da, db = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(da @ da) * float(db @ db))
    return None if a.size < 2 or denominator == 0.0 else _float(np.clip(da @ db / denominator, -1.0, 1.0))


def dimension_wise_probability(real: Any, synthetic: Any) -> dict[str, Any]:
    """Each code's prevalence in real and synthetic records, and how well they agree (medGAN sec. 4).

    Prevalence is the share of records in which the code is present (value > 0): count records are binarised
    for this metric only, and their per-code mean values are reported beside it.

    Args:
        real: (N, D) real records (binary or counts).
        synthetic: (M, D) synthetic records with the same columns.

    Returns:
        ``pearson_r`` between the real and synthetic prevalences (None, with a ``note``, when either is constant),
        ``rmse`` and ``max_abs_difference`` of the prevalences, ``prevalence_real`` / ``prevalence_synthetic``
        (lists, one value per code), ``mean_value_real`` / ``mean_value_synthetic`` and
        ``mean_value_pearson_r`` (counts only; None for binary records, where the mean is the prevalence),
        ``values`` (binary / counts), ``binarised``, ``n_real``, ``n_synthetic``, ``n_codes``.
    """
    real, synthetic = _checked(real=real, synthetic=synthetic)
    p_real, p_synth = _present(real).mean(0), _present(synthetic).mean(0)
    values, _ = _kind(real, synthetic)
    out: dict[str, Any] = {
        "pearson_r": _pearson(p_real, p_synth),
        "rmse": float(np.sqrt(np.mean((p_real - p_synth) ** 2))),
        "max_abs_difference": float(np.abs(p_real - p_synth).max()),
        "prevalence_real": p_real.tolist(), "prevalence_synthetic": p_synth.tolist(),
        "mean_value_real": None, "mean_value_synthetic": None, "mean_value_pearson_r": None,
        "values": values, "binarised": BINARISED,
        "n_real": int(real.shape[0]), "n_synthetic": int(synthetic.shape[0]), "n_codes": int(real.shape[1]),
    }
    if values == "counts":
        m_real, m_synth = real.mean(0), synthetic.mean(0)
        out.update(mean_value_real=m_real.tolist(), mean_value_synthetic=m_synth.tolist(),
                   mean_value_pearson_r=_pearson(m_real, m_synth))
    if out["pearson_r"] is None:
        out["note"] = "pearson_r undefined: the real or the synthetic prevalences are all equal (or one code only)"
    return out


def code_correlation(records: Any) -> tuple[np.ndarray, int]:
    """Code-by-code Pearson correlation of binarised records (presence, value > 0).

    A code that is constant in these records (never or always present) has no correlation (0 / 0); it is set to
    0 with every code, itself included, so the matrices of two sets stay comparable entry by entry.

    Args:
        records: (N, D) records.

    Returns:
        The (D, D) float64 correlation matrix and the number of constant codes.
    """
    present = _present(_records(records, "records"))
    centred = present - present.mean(0)
    covariance = centred.T @ centred / present.shape[0]
    sd = np.sqrt(np.diag(covariance))
    varying = sd > 0  # exact: a constant column centres to exact zeros
    scale = np.where(varying, sd, 1.0)
    corr = np.clip(covariance / np.outer(scale, scale), -1.0, 1.0)
    corr[~varying, :] = 0.0
    corr[:, ~varying] = 0.0
    return corr, int((~varying).sum())


def cooccurrence_difference(real: Any, synthetic: Any) -> dict[str, Any]:
    """Mean and largest absolute difference between the code-by-code correlations of real and synthetic records.

    Both sets are binarised (presence); each matrix is :func:`code_correlation` (constant codes: correlation 0
    with everything) and the D (D - 1) / 2 pairs above the diagonal are compared.

    Args:
        real: (N, D) real records.
        synthetic: (M, D) synthetic records with the same columns.

    Returns:
        ``mean_abs_difference``, ``max_abs_difference`` (None, with a ``note``, for a single code),
        ``constant_codes_real``, ``constant_codes_synthetic``, ``n_pairs``, ``binarised``, ``n_real``,
        ``n_synthetic``, ``n_codes``.
    """
    real, synthetic = _checked(real=real, synthetic=synthetic)
    corr_real, constant_real = code_correlation(real)
    corr_synth, constant_synth = code_correlation(synthetic)
    upper = np.triu_indices(real.shape[1], k=1)
    difference = np.abs(corr_real[upper] - corr_synth[upper])
    out: dict[str, Any] = {
        "mean_abs_difference": float(difference.mean()) if difference.size else None,
        "max_abs_difference": float(difference.max()) if difference.size else None,
        "constant_codes_real": constant_real, "constant_codes_synthetic": constant_synth,
        "n_pairs": int(difference.size), "binarised": BINARISED,
        "n_real": int(real.shape[0]), "n_synthetic": int(synthetic.shape[0]), "n_codes": int(real.shape[1]),
    }
    if not difference.size:
        out["note"] = "undefined: a single code has no pairs"
    return out


# --- utility --------------------------------------------------------------------------------------------------------
def _f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    """2 TP / (2 TP + FP + FN); the callers' test labels always hold positives, so it is defined."""
    tp = int((predicted & truth).sum())
    return 2.0 * tp / (2.0 * tp + int((predicted & ~truth).sum()) + int((~predicted & truth).sum()))


def _fit_predict(features: np.ndarray, labels: np.ndarray, test: np.ndarray, *, seed: int,
                 max_iter: int) -> tuple[np.ndarray, bool, bool]:
    """(test predictions, degenerate, converged) of a logistic regression; one-class labels predict that class."""
    if labels.min() == labels.max():
        return np.full(test.shape[0], bool(labels[0])), True, True
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if features.mean() < _SPARSE_BELOW:
        # Records are mostly zeros: lbfgs reaches the same optimum about 3x faster on a sparse matrix.
        features, test = sparse.csr_matrix(features), sparse.csr_matrix(test)
    model = LogisticRegression(max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        # Counted instead (``not_converged``): one warning per code would bury the report.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features, labels)
    return model.predict(test).astype(bool), False, bool(np.all(model.n_iter_ < max_iter))


def _eligible_codes(prevalence: np.ndarray, test: np.ndarray, top_k: int, min_positives: int
                    ) -> tuple[list[int], list[int]]:
    """(evaluated, skipped) codes among the ``top_k`` of highest ``prevalence`` (ties: lower index first)."""
    top = np.argsort(-prevalence, kind="stable")[:top_k]
    positives = test.sum(0)
    ok = (positives[top] >= min_positives) & (test.shape[0] - positives[top] >= min_positives)
    return top[ok].tolist(), top[~ok].tolist()


def _predict_codes(arms: dict[str, np.ndarray], test: np.ndarray, codes: list[int], *, seed: int, max_iter: int
                   ) -> tuple[dict[str, list[float]], dict[str, list[int]], int]:
    """Per arm (training set) the test F1 of each code, the degenerate codes, and the fits that did not converge."""
    f1: dict[str, list[float]] = {arm: [] for arm in arms}
    degenerate: dict[str, list[int]] = {arm: [] for arm in arms}
    not_converged = 0
    for code in codes:
        truth, test_features = test[:, code] > 0, np.delete(test, code, axis=1)
        for arm, data in arms.items():
            predicted, is_degenerate, converged = _fit_predict(np.delete(data, code, axis=1), data[:, code] > 0,
                                                               test_features, seed=seed, max_iter=max_iter)
            f1[arm].append(_f1(predicted, truth))
            degenerate[arm] += [code] if is_degenerate else []
            not_converged += 0 if converged else 1
    return f1, degenerate, not_converged


def dimension_wise_prediction(train_real: Any, synthetic: Any, test_real: Any, *, top_k: int = 50, seed: int = 0,
                              min_positives: int = 5, max_rows: int = 5000, max_iter: int = 300
                              ) -> dict[str, Any]:
    """Predict each frequent code from all other codes, trained on real or on synthetic records (medGAN sec. 4).

    For each of the ``top_k`` codes most prevalent in ``train_real`` that has at least ``min_positives``
    positive and negative records in ``test_real`` (the others are listed in ``skipped_codes``), a logistic
    regression (scikit-learn, L2, C = 1, lbfgs, ``max_iter``, no class weights, ``random_state=seed``) learns the
    code's presence from the presence of all other codes: once on ``train_real`` and once on ``synthetic``, each
    with the same number of rows (the larger set, and both beyond ``max_rows``, sub-sampled with ``seed``), and is
    scored by F1 on ``test_real``. When a training set's labels are all one class the "model" predicts that class
    (its F1 still counts) and the code is listed in ``degenerate_real`` / ``degenerate_synthetic``.

    Args:
        train_real: (N, D) real training records.
        synthetic: (M, D) synthetic records.
        test_real: (T, D) real records neither model saw (a held-out split).
        top_k: How many of the most prevalent codes to try.
        seed: Seed of the sub-sampling and the models.
        min_positives: Fewest positive (and negative) test records for a code's F1 to count.
        max_rows: Most training rows of each model (for speed).
        max_iter: Iterations of lbfgs; fits that stop there are counted in ``not_converged``.

    Returns:
        ``mean_f1_real``, ``mean_f1_synthetic``, ``mean_abs_f1_gap`` (None, with a ``note``, when no code
        qualifies), per code (lists, in order of prevalence) ``codes`` (column indices), ``f1_real``,
        ``f1_synthetic``, ``f1_gap`` (synthetic - real), ``prevalence_train``, ``test_positives``; and
        ``skipped_codes``, ``degenerate_real``, ``degenerate_synthetic``, ``not_converged``, ``n_codes``,
        ``n_train_real`` / ``n_train_synthetic`` (rows each model was fitted on), ``n_real_available``,
        ``n_synthetic_available``, ``n_test``, ``binarised``.
    """
    train_real, synthetic, test_real = _checked(train_real=train_real, synthetic=synthetic, test_real=test_real)
    if train_real.shape[1] < 2:
        raise ValueError("dimension-wise prediction needs at least 2 codes (one to predict, others to predict from)")
    if top_k < 1 or min_positives < 1 or max_rows < 1:
        raise ValueError(f"top_k, min_positives and max_rows must be >= 1 (got {top_k}, {min_positives}, {max_rows})")
    rng = np.random.default_rng(seed)
    n_rows = min(train_real.shape[0], synthetic.shape[0], max_rows)
    arms = {"real": _present(_subsample(train_real, n_rows, rng)),
            "synthetic": _present(_subsample(synthetic, n_rows, rng))}
    test, prevalence = _present(test_real), _present(train_real).mean(0)
    codes, skipped = _eligible_codes(prevalence, test, top_k, min_positives)
    f1, degenerate, not_converged = _predict_codes(arms, test, codes, seed=seed, max_iter=max_iter)
    gap = np.asarray(f1["synthetic"]) - np.asarray(f1["real"])
    out: dict[str, Any] = {
        "mean_f1_real": _float(np.mean(f1["real"])) if codes else None,
        "mean_f1_synthetic": _float(np.mean(f1["synthetic"])) if codes else None,
        "mean_abs_f1_gap": _float(np.abs(gap).mean()) if codes else None,
        "codes": codes, "f1_real": f1["real"], "f1_synthetic": f1["synthetic"], "f1_gap": gap.tolist(),
        "prevalence_train": prevalence[codes].tolist(), "test_positives": test.sum(0)[codes].astype(int).tolist(),
        "skipped_codes": skipped, "degenerate_real": degenerate["real"],
        "degenerate_synthetic": degenerate["synthetic"], "not_converged": not_converged, "n_codes": len(codes),
        "n_train_real": n_rows, "n_train_synthetic": n_rows, "n_real_available": int(train_real.shape[0]),
        "n_synthetic_available": int(synthetic.shape[0]), "n_test": int(test_real.shape[0]), "binarised": BINARISED,
    }
    if not codes:
        out["note"] = (f"undefined: none of the {len(skipped)} most prevalent codes has {min_positives} positive and "
                       f"{min_positives} negative test records")
    return out


# --- privacy --------------------------------------------------------------------------------------------------------
def _attack_size(requested: int | None, train: np.ndarray, holdout: np.ndarray, name: str) -> int:
    available = min(train.shape[0], holdout.shape[0])
    n = available if requested is None else int(requested)
    if not 1 <= n <= available:
        raise ValueError(f"{name}={n} must be between 1 and min(len(train), len(holdout)) = {available}")
    return n


def _decisions(tp: int, fp: int, n_members: int, n_non_members: int) -> dict[str, Any]:
    """Accuracy, precision and recall of calling ``tp + fp`` records members; precision None when none is."""
    return {"accuracy": (tp + n_non_members - fp) / (n_members + n_non_members),
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / n_members}


def _best_threshold(member_d: np.ndarray, other_d: np.ndarray) -> dict[str, Any]:
    """The distance t (a record is called a member when its distance <= t) of the highest accuracy, over every
    distinct distance; ties go to the smallest t (the fewest records called members)."""
    candidates = np.unique(np.r_[member_d, other_d])
    tp = np.searchsorted(np.sort(member_d), candidates, side="right")
    fp = np.searchsorted(np.sort(other_d), candidates, side="right")
    accuracy = (tp + other_d.size - fp) / (member_d.size + other_d.size)
    best = int(np.argmax(accuracy))  # the first maximum: the smallest distance
    return {"distance": float(candidates[best]),
            **_decisions(int(tp[best]), int(fp[best]), member_d.size, other_d.size)}


def membership_inference(train: Any, holdout: Any, synthetic: Any, *, attacker_records: int | None = None,
                         seed: int = 0) -> dict[str, Any]:
    """Presence disclosure (medGAN): can an attacker tell training patients from others by their distance to the
    closest synthetic record?

    The attacker holds ``attacker_records`` training records (members) and as many held-out records (non-members),
    each drawn with ``seed``; a record's score is minus its distance (Hamming / L1) to the closest synthetic
    record. 0.5 AUC is no leak; a generator that copies its training records scores near 1.

    Args:
        train: (N, D) records the generator was trained on.
        holdout: (H, D) real records it never saw.
        synthetic: (M, D) synthetic records.
        attacker_records: Records of each group; default min(N, H).
        seed: Seed of the draws.

    Returns:
        ``auc`` (ties count one half, as scikit-learn's ``roc_auc_score``), ``best_threshold`` (``distance``,
        ``accuracy``, ``precision``, ``recall`` of "member when distance <= distance", the threshold of the best
        accuracy chosen on these same records: optimistic), ``exact_match`` (the same for distance 0, i.e. "member
        when a synthetic record equals it"), ``median_distance_members`` / ``median_distance_non_members``,
        ``n_members``, ``n_non_members``, ``n_synthetic``, ``distance`` (hamming / l1).
    """
    train, holdout, synthetic = _checked(train=train, holdout=holdout, synthetic=synthetic)
    n = _attack_size(attacker_records, train, holdout, "attacker_records")
    rng = np.random.default_rng(seed)
    member_d = closest_distance(_subsample(train, n, rng), synthetic)
    other_d = closest_distance(_subsample(holdout, n, rng), synthetic)
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    exact = _decisions(int((member_d == 0).sum()), int((other_d == 0).sum()), n, n)
    return {"auc": roc_auc(-np.r_[member_d, other_d], is_member), "best_threshold": _best_threshold(member_d, other_d),
            "exact_match": exact, "median_distance_members": float(np.median(member_d)),
            "median_distance_non_members": float(np.median(other_d)), "n_members": n, "n_non_members": n,
            "n_synthetic": int(synthetic.shape[0]), "distance": _kind(train, holdout, synthetic)[1]}


def _known_codes(known_codes: Sequence[int] | None, known_top: int | None, real: np.ndarray) -> np.ndarray:
    """Sorted column indices the attacker knows: given, or the ``known_top`` most prevalent in ``real``."""
    d = real.shape[1]
    if known_codes is not None:
        known = np.unique(np.asarray(known_codes, dtype=np.int64))
        if known.size == 0 or known.min() < 0 or known.max() >= d:
            raise ValueError(f"known_codes must be column indices in [0, {d}); got {list(known_codes)[:8]}")
    else:
        top = min(DEFAULT_KNOWN_TOP, d // 2) if known_top is None else int(known_top)
        if not 1 <= top < d:
            raise ValueError(f"known_top={top} must be between 1 and the number of codes - 1 ({d - 1})")
        known = np.sort(np.argsort(-_present(real).mean(0), kind="stable")[:top])
    if known.size >= d:
        raise ValueError("the attacker must not know every code: nothing would be left to disclose")
    return known


def _disclosure(patients: np.ndarray, synthetic: np.ndarray, known: np.ndarray, unknown: np.ndarray, k: int
                ) -> dict[str, Any]:
    """Micro precision / recall / F1 of guessing the unknown codes of ``patients`` from their k nearest
    synthetic records on the known codes (majority vote; a tie of an even k counts as present)."""
    nearest = _nearest(patients[:, known], synthetic[:, known], k)
    votes = (synthetic[:, unknown] > 0)[nearest].mean(axis=1)  # (patients, k, unknown) -> (patients, unknown)
    predicted, truth = votes >= 0.5, patients[:, unknown] > 0
    tp, fp, fn = int((predicted & truth).sum()), int((predicted & ~truth).sum()), int((~predicted & truth).sum())
    return {"precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "f1": 2.0 * tp / (2 * tp + fp + fn) if tp + fp + fn else None, "true_positives": tp,
            "false_positives": fp, "false_negatives": fn, "n_patients": int(patients.shape[0])}


def attribute_disclosure(train: Any, holdout: Any, synthetic: Any, *, known_codes: Sequence[int] | None = None,
                         known_top: int | None = None, k: int = 1, attacked: int | None = None, seed: int = 0
                         ) -> dict[str, Any]:
    """Attribute disclosure (medGAN): knowing some codes of a patient, how well do the synthetic records reveal the
    rest?

    The attacker knows each attacked patient's values on the known codes: ``known_codes`` when given, else the
    ``known_top`` codes most prevalent among the real records (train and holdout pooled: the population's common
    codes, fixed whatever the generator). The default is medGAN's 256, at most half the codes
    (min(256, D // 2)) so that small vocabularies keep codes to disclose. The attacker finds the ``k`` synthetic
    records nearest on the known codes (Hamming / L1; ties broken in a random order fixed by ``seed``) and
    predicts each unknown code present when at least half of them have it. Scores are micro precision, recall
    and F1 over every (patient, unknown code) pair. Training patients give the risk; held-out patients, whom the
    generator never saw, give the baseline (what the synthetic data say about anyone from the population):
    ``f1_gap`` = train - holdout is the disclosure attributable to training on them.

    Args:
        train: (N, D) records the generator was trained on.
        holdout: (H, D) real records it never saw.
        synthetic: (M, D) synthetic records.
        known_codes: Column indices the attacker knows (overrides ``known_top``).
        known_top: How many of the most prevalent codes the attacker knows; default min(256, D // 2).
        k: Nearest synthetic records that vote.
        attacked: Patients attacked in each group; default min(N, H), drawn with ``seed``.
        seed: Seed of the draws and of the tie order.

    Returns:
        ``train`` and ``holdout`` (each ``precision``, ``recall``, ``f1``, ``true_positives``,
        ``false_positives``, ``false_negatives``, ``n_patients``; a value is None when its denominator is 0),
        ``f1_gap`` (None when either F1 is), ``known_codes`` (indices), ``n_known``, ``n_unknown``, ``k``,
        ``n_synthetic``, ``distance``, ``binarised`` (the unknown codes are scored on presence).
    """
    train, holdout, synthetic = _checked(train=train, holdout=holdout, synthetic=synthetic)
    if not 1 <= k <= synthetic.shape[0]:
        raise ValueError(f"k={k} must be between 1 and the number of synthetic records ({synthetic.shape[0]})")
    known = _known_codes(known_codes, known_top, np.vstack([train, holdout]))
    unknown = np.setdiff1d(np.arange(train.shape[1]), known)
    n = _attack_size(attacked, train, holdout, "attacked")
    rng = np.random.default_rng(seed)
    # Ties between equally near synthetic records go to the lower index: a seeded shuffle makes that random.
    shuffled = synthetic[rng.permutation(synthetic.shape[0])]
    risk = _disclosure(_subsample(train, n, rng), shuffled, known, unknown, k)
    baseline = _disclosure(_subsample(holdout, n, rng), shuffled, known, unknown, k)
    gap = None if risk["f1"] is None or baseline["f1"] is None else risk["f1"] - baseline["f1"]
    return {"train": risk, "holdout": baseline, "f1_gap": gap, "known_codes": known.tolist(),
            "n_known": int(known.size), "n_unknown": int(unknown.size), "k": int(k),
            "n_synthetic": int(synthetic.shape[0]), "distance": _kind(train, holdout, synthetic)[1],
            "binarised": BINARISED}


def _closest_with_ties(query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query record: the distance to its closest reference record and how many reference records lie at it."""
    closest, ties = np.empty(query.shape[0]), np.empty(query.shape[0], dtype=np.int64)
    for start, d in _distance_chunks(query, reference):
        low = d.min(axis=1)
        closest[start:start + d.shape[0]] = low
        ties[start:start + d.shape[0]] = (d == low[:, None]).sum(axis=1)
    return closest, ties


def distance_to_closest_record(train: Any, holdout: Any, synthetic: Any, *, seed: int = 0) -> dict[str, Any]:
    """Distance to closest record (DCR): is the real record nearest to each synthetic one a training record?

    Against all N training and all H held-out records: for each synthetic record, its nearest real record is a
    training record with probability ``c_train / (c_train + c_holdout)``, where the c are the numbers of training
    and held-out records at the smallest distance (1 or 0 without ties). For a record drawn from the population
    the generator learnt from, not copied, every real record is equally likely to be the nearest, so
    ``closer_to_train_share`` is then about ``expected_share`` = N / (N + H); a generator that copies training
    records pushes it to 1. (Sub-sampling both to one size would drop most copies' originals from the training
    reference whenever N > H.) The baseline is the held-out records' own distance to their closest training record:
    what a new real patient's DCR looks like.

    Args:
        train: (N, D) records the generator was trained on.
        holdout: (H, D) real records it never saw.
        synthetic: (M, D) synthetic records.
        seed: Unused (kept so every privacy metric takes a seed); the measure uses every record.

    Returns:
        ``median_to_train``, ``median_to_holdout`` (of the synthetic records), ``percentile_5_to_train``,
        ``percentile_5_to_holdout``, ``closer_to_train_share``, ``expected_share``,
        ``baseline_median_holdout_to_train``, ``baseline_percentile_5_holdout_to_train``, ``n_train``,
        ``n_holdout``, ``n_synthetic``, ``distance``.
    """
    train, holdout, synthetic = _checked(train=train, holdout=holdout, synthetic=synthetic)
    to_train, train_ties = _closest_with_ties(synthetic, train)
    to_holdout, holdout_ties = _closest_with_ties(synthetic, holdout)
    tied = train_ties / (train_ties + holdout_ties)
    share = np.where(to_train < to_holdout, 1.0, np.where(to_train > to_holdout, 0.0, tied))
    baseline = closest_distance(holdout, train)
    n, h = train.shape[0], holdout.shape[0]
    return {
        "median_to_train": float(np.median(to_train)), "median_to_holdout": float(np.median(to_holdout)),
        "percentile_5_to_train": float(np.percentile(to_train, 5)),
        "percentile_5_to_holdout": float(np.percentile(to_holdout, 5)),
        "closer_to_train_share": float(share.mean()), "expected_share": n / (n + h),
        "baseline_median_holdout_to_train": float(np.median(baseline)),
        "baseline_percentile_5_holdout_to_train": float(np.percentile(baseline, 5)),
        "n_train": int(n), "n_holdout": int(h), "n_synthetic": int(synthetic.shape[0]),
        "distance": _kind(train, holdout, synthetic)[1],
    }


def _row_keys(records: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in records]


def copy_rate(train: Any, holdout: Any, synthetic: Any) -> dict[str, Any]:
    """Share of synthetic records identical to a training record, against the held-out baseline.

    Small binary records repeat naturally (two patients with only the same common code are identical), so the
    held-out records' own rate of being identical to some training record is the baseline: a synthetic copy rate
    well above it means copying.

    Args:
        train: (N, D) records the generator was trained on.
        holdout: (H, D) real records it never saw.
        synthetic: (M, D) synthetic records.

    Returns:
        ``copy_rate``, ``baseline_holdout_copy_rate``, ``unique_within_synthetic`` (share of synthetic records
        that occur once in the synthetic set), ``n_synthetic_copies``, ``n_holdout_copies``,
        ``n_unique_synthetic``, ``n_train``, ``n_holdout``, ``n_synthetic``.
    """
    train, holdout, synthetic = _checked(train=train, holdout=holdout, synthetic=synthetic)
    seen = set(_row_keys(train))
    synthetic_copies = sum(key in seen for key in _row_keys(synthetic))
    holdout_copies = sum(key in seen for key in _row_keys(holdout))
    _, inverse, counts = np.unique(synthetic, axis=0, return_inverse=True, return_counts=True)
    unique = int((counts[inverse.ravel()] == 1).sum())
    m, h = synthetic.shape[0], holdout.shape[0]
    return {"copy_rate": synthetic_copies / m, "baseline_holdout_copy_rate": holdout_copies / h,
            "unique_within_synthetic": unique / m, "n_synthetic_copies": int(synthetic_copies),
            "n_holdout_copies": int(holdout_copies), "n_unique_synthetic": unique, "n_train": int(train.shape[0]),
            "n_holdout": int(h), "n_synthetic": int(m)}


# --- everything -----------------------------------------------------------------------------------------------------
def _names(codes: list[int], columns: list[str]) -> list[str]:
    return [columns[c] for c in codes]


def evaluate_records(train: Any, holdout: Any, synthetic: Any, *, columns: Sequence[str], seed: int = 0,
                     top_k: int = 50, min_positives: int = 5, max_rows: int = 5000, max_iter: int = 300,
                     known_top: int | None = None, k: int = 1, attacked: int | None = None) -> dict[str, Any]:
    """Every metric of this module on one generator's records, as one strict-JSON document.

    Roles: fidelity compares ``synthetic`` with ``train`` (what the generator learnt from); dimension-wise
    prediction trains on ``train`` or ``synthetic`` and tests on ``holdout``; the privacy metrics use ``train`` as
    members and ``holdout`` as the non-member baseline.

    Args:
        train: (N, D) records the generator was trained on.
        holdout: (H, D) real records it never saw.
        synthetic: (M, D) synthetic records.
        columns: The D code names, in column order.
        seed: Seed of every draw.
        top_k: Codes of dimension-wise prediction.
        min_positives: Fewest positive (and negative) held-out records for a code to be predicted.
        max_rows: Most training rows of each prediction model.
        max_iter: lbfgs iterations of each prediction model.
        known_top: Codes the attribute-disclosure attacker knows; default min(256, D // 2).
        k: Nearest synthetic records voting in attribute disclosure.
        attacked: Patients of each group in the privacy attacks; default min(N, H).

    Returns:
        ``{"counts": {train, holdout, synthetic, codes}, "fidelity": {dimension_wise_probability,
        cooccurrence_difference}, "utility": {dimension_wise_prediction}, "privacy": {membership_inference,
        attribute_disclosure, distance_to_closest_record, copy_rate}, "settings": {...}}``; code indices are
        paired with their names (``code_names``, ``known_code_names``).
    """
    train, holdout, synthetic = _checked(train=train, holdout=holdout, synthetic=synthetic)
    names = [str(c) for c in columns]
    if len(names) != train.shape[1]:
        raise ValueError(f"{len(names)} column names for {train.shape[1]} columns")
    prediction = dimension_wise_prediction(train, synthetic, holdout, top_k=top_k, seed=seed,
                                           min_positives=min_positives, max_rows=max_rows, max_iter=max_iter)
    prediction["code_names"] = _names(prediction["codes"], names)
    disclosure = attribute_disclosure(train, holdout, synthetic, known_top=known_top, k=k, attacked=attacked,
                                      seed=seed)
    disclosure["known_code_names"] = _names(disclosure["known_codes"], names)
    values, distance = _kind(train, holdout, synthetic)
    document = {
        "counts": {"train": int(train.shape[0]), "holdout": int(holdout.shape[0]),
                   "synthetic": int(synthetic.shape[0]), "codes": len(names)},
        "fidelity": {"dimension_wise_probability": dimension_wise_probability(train, synthetic),
                     "cooccurrence_difference": cooccurrence_difference(train, synthetic)},
        "utility": {"dimension_wise_prediction": prediction},
        "privacy": {"membership_inference": membership_inference(train, holdout, synthetic, attacker_records=attacked,
                                                                 seed=seed),
                    "attribute_disclosure": disclosure,
                    "distance_to_closest_record": distance_to_closest_record(train, holdout, synthetic, seed=seed),
                    "copy_rate": copy_rate(train, holdout, synthetic)},
        "settings": {"seed": seed, "top_k": top_k, "min_positives": min_positives, "max_rows": max_rows,
                     "max_iter": max_iter, "known_top": disclosure["n_known"], "k": k,
                     "attacked": disclosure["train"]["n_patients"], "values": values, "distance": distance,
                     "columns": names,
                     "roles": "fidelity: synthetic vs train; utility: trained on train or synthetic, tested on "
                              "holdout; privacy: train records are members, holdout records the baseline"},
    }
    return _plain(document)
