"""Population stability index: how far a live distribution moved from the reference.

``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` over the reference's bins, with ``e_i`` the
training share and ``a_i`` the live share of bin ``i``. It is symmetric in the two shares,
zero when they agree, and reads on a fixed scale (see ``MonitorSettings``). An empty bin
would make it infinite, so shares are floored at ``FLOOR`` (a common convention): a level
seen in 3 % of live leads and never in training then counts as a large, finite shift.
"""

from __future__ import annotations

import numpy as np

from models.reference import BinnedDistribution

FLOOR = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI between two share (or count) vectors over the same bins."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or e.size == 0:
        raise ValueError(f"PSI needs two vectors over the same bins, got {e.shape} and {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("PSI needs at least one value on each side")
    e = np.maximum(e / e.sum(), FLOOR)
    a = np.maximum(a / a.sum(), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_against(reference: BinnedDistribution, values: np.ndarray) -> tuple[float, np.ndarray]:
    """PSI of live ``values`` against a stored reference, and the live counts per bin."""
    counts = reference.counts(values)
    return psi(np.asarray(reference.shares), counts), counts
