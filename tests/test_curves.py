"""Loss curves: smoothing bridges the gaps of a sparsely logged loss but stops where a loss stops (a phase ended)."""

from __future__ import annotations

import numpy as np

from synthmed.viz.curves import _smooth


def test_a_loss_of_an_earlier_phase_is_not_drawn_after_its_last_value() -> None:
    values = np.array([1.0, 1.0, np.nan, np.nan])  # e.g. loss_d, logged in the gan phase only
    out = _smooth(values, 0.5)
    assert np.allclose(out[:2], 1.0) and np.isnan(out[2:]).all()


def test_gaps_between_logged_values_are_bridged_and_later_phase_losses_start_late() -> None:
    sparse = _smooth(np.array([2.0, np.nan, 4.0]), 0.5)
    assert np.allclose(sparse, [2.0, 2.0, 3.0])
    late = _smooth(np.array([np.nan, np.nan, 1.0, 3.0]), 0.5)  # e.g. loss_e, logged in the encoder phase only
    assert np.isnan(late[:2]).all() and np.allclose(late[2:], [1.0, 2.0])
