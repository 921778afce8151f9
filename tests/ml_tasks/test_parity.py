"""Parity checks fail on NaN and infinity instead of passing them (``nan > tol`` is False)."""

from __future__ import annotations

import numpy as np
import pytest

from ml_tasks.core.errors import KilnError
from ml_tasks.serving.parity import check_parity


def test_close_values_pass_and_report_the_difference():
    assert check_parity(np.array([0.1, 0.2]), np.array([0.1, 0.2 + 1e-9]), 1e-6, "x") == pytest.approx(1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_on_either_side_fails(bad):
    with pytest.raises(KilnError, match="scores: 1 values are NaN or infinite"):
        check_parity(np.array([0.1, bad]), np.array([0.1, 0.2]), 1e-6, "scores")
    with pytest.raises(KilnError, match="scores: 1 values are NaN or infinite"):
        check_parity(np.array([0.1, 0.2]), np.array([bad, 0.2]), 1e-6, "scores")


def test_a_shape_mismatch_or_a_large_difference_fails():
    with pytest.raises(KilnError, match=r"shape \(2,\) != \(3,\)"):
        check_parity(np.zeros(2), np.zeros(3), 1e-6, "x")
    with pytest.raises(KilnError, match="differs by 0.1"):
        check_parity(np.array([0.1]), np.array([0.2]), 1e-6, "x")
