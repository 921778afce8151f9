"""NaN-safe parity: two computations of the same numbers agree only when every value is finite and close."""

from __future__ import annotations

import numpy as np

from ml_tasks.errors import KilnError


def max_abs_diff(got: np.ndarray, want: np.ndarray) -> float:
    """The largest |got - want|; ``inf`` when shapes differ or any value is not finite.

    ``max(abs(a - b)) > tol`` is False for NaN, so a plain comparison would pass NaN as parity.
    """
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got.shape != want.shape:
        return float("inf")
    if got.size == 0:
        return 0.0
    if not (np.isfinite(got).all() and np.isfinite(want).all()):
        return float("inf")
    return float(np.max(np.abs(got - want)))


def check_parity(got: np.ndarray, want: np.ndarray, tolerance: float, what: str) -> float:
    """Return the max difference, or raise naming ``what`` when it exceeds ``tolerance`` or is not finite."""
    got_a, want_a = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got_a.shape != want_a.shape:
        raise KilnError(f"{what}: shape {got_a.shape} != {want_a.shape}")
    bad = int((~np.isfinite(got_a)).sum() + (~np.isfinite(want_a)).sum())
    if bad:
        raise KilnError(f"{what}: {bad} values are NaN or infinite")
    diff = max_abs_diff(got_a, want_a)
    if not diff <= tolerance:
        raise KilnError(f"{what}: differs by {diff:g} (> {tolerance:g})")
    return diff
