"""Train / validation / test splits that do not leak.

Rules this module enforces:

* **Patient-level splits.** Slices or images of one patient are strongly correlated; if one patient sits in
  both train and test, every test score is optimistic. :func:`patient_split` never puts a patient in two
  splits. Use it whenever patient ids exist.
* **Determinism.** A split depends only on the data's ids/labels and ``seed``, never on file order or
  global random state, so a run can be reproduced and its checkpoints evaluated on the same held-out data.
* **Test data must never reach a GAN.** The generator and discriminator train on ``train`` only (``val``
  may steer early stopping or model selection). ``test`` is touched once, for the final evaluation
  (FID, downstream classifiers, memorisation checks). A GAN that has seen test images can reproduce them,
  which makes the privacy and fidelity numbers meaningless.
"""

from __future__ import annotations

import numpy as np

from synthmed.errors import ConfigError

__all__ = ["SPLITS", "patient_split", "random_split", "stratified_patient_split", "stratified_split"]

SPLITS = ("train", "val", "test")


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ConfigError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be >= 0 "
            "and sum to less than 1"
        )


def _counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of ``n`` units go to val and test: rounded, but at least one for a non-zero fraction
    when there are enough units to keep train non-empty (small sets would otherwise get an empty val)."""
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if test_fraction > 0 and n_test == 0 and n >= 3:
        n_test = 1
    if val_fraction > 0 and n_val == 0 and n >= 3:
        n_val = 1
    while n_val + n_test >= n and (n_val or n_test):  # keep at least one unit for training
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def patient_split(
    patients: np.ndarray | list[str],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Split sample indices so that every patient falls in exactly one of train / val / test.

    Fractions count patients, not samples. Returns ``{"train": idx, "val": idx, "test": idx}`` with sorted
    int64 indices into ``patients``; the result depends only on the set of ids and ``seed``.
    """
    _check_fractions(val_fraction, test_fraction)
    ids = np.asarray(patients).astype(str)
    unique, inverse = np.unique(ids, return_inverse=True)  # sorted: independent of row order
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val, n_test = _counts(len(unique), val_fraction, test_fraction)
    assignment = np.zeros(len(unique), dtype=np.int64)  # 0 train, 1 val, 2 test
    assignment[order[:n_test]] = 2
    assignment[order[n_test : n_test + n_val]] = 1
    per_sample = assignment[inverse.reshape(-1)]
    return {name: np.flatnonzero(per_sample == code) for code, name in enumerate(SPLITS)}


def stratified_patient_split(
    patients: np.ndarray | list[str],
    labels: np.ndarray | list[int],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """:func:`patient_split` that keeps each class's share of patients in train / val / test.

    A patient counts for the class most of its samples have (ties: the lowest label); within each class its
    patients are split as :func:`stratified_split` splits samples (classes of fewer than 3 patients stay in
    train). Every patient still falls in exactly one split; the result depends only on the ids, labels and
    ``seed``.
    """
    _check_fractions(val_fraction, test_fraction)
    ids = np.asarray(patients).astype(str).reshape(-1)
    classes, label_index = np.unique(np.asarray(labels).reshape(-1), return_inverse=True)
    if len(label_index) != len(ids):
        raise ValueError(f"{len(label_index)} labels for {len(ids)} patient ids")
    unique, inverse = np.unique(ids, return_inverse=True)  # sorted: independent of row order
    inverse = inverse.reshape(-1)
    votes = np.bincount(inverse * len(classes) + label_index.reshape(-1), minlength=len(unique) * len(classes))
    patient_class = votes.reshape(len(unique), len(classes)).argmax(axis=1)  # first maximum: lowest label on ties
    by_patient = stratified_split(patient_class, val_fraction, test_fraction, seed)
    assignment = np.zeros(len(unique), dtype=np.int64)  # 0 train, 1 val, 2 test
    assignment[by_patient["val"]] = 1
    assignment[by_patient["test"]] = 2
    per_sample = assignment[inverse]
    return {name: np.flatnonzero(per_sample == code) for code, name in enumerate(SPLITS)}


def stratified_split(
    labels: np.ndarray | list[int],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Split sample indices keeping each class's proportion in train / val / test (for data without
    patient ids). Classes too small to split (fewer than 3 samples) stay in train."""
    _check_fractions(val_fraction, test_fraction)
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        members = members[rng.permutation(len(members))]
        n_val, n_test = _counts(len(members), val_fraction, test_fraction)
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    return {
        name: np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, dtype=np.int64)
        for name, chunks in parts.items()
    }


def random_split(
    n: int, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, np.ndarray]:
    """Seeded random split of ``n`` samples without labels or patients."""
    return stratified_split(np.zeros(n, dtype=np.int64), val_fraction, test_fraction, seed)
