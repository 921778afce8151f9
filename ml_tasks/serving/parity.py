"""NaN-safe parity: two computations of the same numbers agree only when every value is finite and close.

``max(abs(a - b)) > tol`` is False for NaN, so a plain comparison passes NaN as parity.
"""

from __future__ import annotations

import numpy as np

from ml_tasks.core.errors import KilnError


def check_parity(got: np.ndarray, want: np.ndarray, tolerance: float, what: str) -> float:
    """Return the max difference, or raise naming ``what`` when it exceeds ``tolerance`` or is not finite."""
    got_a, want_a = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got_a.shape != want_a.shape:
        raise KilnError(f"{what}: shape {got_a.shape} != {want_a.shape}")
    bad = int((~np.isfinite(got_a)).sum() + (~np.isfinite(want_a)).sum())
    if bad:
        raise KilnError(f"{what}: {bad} values are NaN or infinite")
    diff = float(np.max(np.abs(got_a - want_a))) if got_a.size else 0.0
    if not diff <= tolerance:
        raise KilnError(f"{what}: differs by {diff:g} (> {tolerance:g})")
    return diff
