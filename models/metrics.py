"""Calibration metrics shared by training (held-out evaluation) and monitoring (live).

Moved here from ``training.evaluation`` so the service's monitoring can compute the very
same expected calibration error as training without importing ``training``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def validate_inputs(y_true: npt.ArrayLike, p: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
    """Check outcomes and probabilities and return them as clean 1-D arrays.

    Raises ValueError naming the problem, because a silently mis-shaped or NaN-laden
    array yields plausible-looking but meaningless metrics.
    """
    y_arr = np.asarray(y_true)
    p_arr = np.asarray(p)
    if y_arr.ndim != 1 or p_arr.ndim != 1:
        raise ValueError(
            f"y_true and p must be 1-D arrays; got shapes {y_arr.shape} and {p_arr.shape}"
        )
    if y_arr.shape[0] != p_arr.shape[0]:
        raise ValueError(
            f"y_true and p must have the same length; got {y_arr.shape[0]} and {p_arr.shape[0]}"
        )
    if y_arr.shape[0] == 0:
        raise ValueError("y_true and p are empty; at least one lead is needed")
    try:
        p_float = p_arr.astype(np.float64)
        y_float = y_arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y_true and p must be numeric: {exc}") from exc
    if np.isnan(p_float).any():
        raise ValueError(f"p contains {int(np.isnan(p_float).sum())} NaN value(s)")
    if np.isnan(y_float).any():
        raise ValueError(f"y_true contains {int(np.isnan(y_float).sum())} NaN value(s)")
    if (p_float < 0.0).any() or (p_float > 1.0).any():
        raise ValueError(
            f"p must be probabilities within [0, 1]; got min {p_float.min()!r}, "
            f"max {p_float.max()!r}"
        )
    bad = ~np.isin(y_float, (0.0, 1.0))
    if bad.any():
        examples = sorted({float(v) for v in y_float[bad][:5]})
        raise ValueError(f"y_true must contain only 0 and 1; found e.g. {examples}")
    return y_float.astype(np.int64), p_float


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationBins:
    """Per-bin summary behind the ECE and the reliability plot.

    Only non-empty bins are listed, each with its own ``lower``/``upper`` bounds, so
    callers never divide by an empty bin's zero count.
    """

    lower: FloatArray
    upper: FloatArray
    mean_predicted: FloatArray
    observed_rate: FloatArray
    count: IntArray


def _bin_edges(p: FloatArray, n_bins: int, strategy: Literal["uniform", "quantile"]) -> FloatArray:
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
        # Tied scores collapse quantiles; duplicate edges would make empty, zero-width bins.
        return np.unique(edges)
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def calibration_bins(
    y_true: npt.ArrayLike,
    p: npt.ArrayLike,
    n_bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "quantile",
) -> CalibrationBins:
    """Group leads into score bins and compare mean prediction with the observed rate.

    ``quantile`` bins hold roughly equal numbers of leads, which is the better default
    for skewed lead scores: uniform bins leave the high-score bins nearly empty and
    their observed rates noisy.
    """
    y, p_arr = validate_inputs(y_true, p)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    edges = _bin_edges(p_arr, n_bins, strategy)
    # Inner edges only: everything below the first inner edge is bin 0, and the top
    # edge is inclusive so p == 1.0 (or the max score) lands in the last bin.
    idx = np.searchsorted(edges[1:-1], p_arr, side="right")
    n_edges = max(len(edges) - 1, 1)
    count = np.bincount(idx, minlength=n_edges)
    sum_p = np.bincount(idx, weights=p_arr, minlength=n_edges)
    sum_y = np.bincount(idx, weights=y.astype(np.float64), minlength=n_edges)
    keep = count > 0
    if len(edges) >= 2:
        lower, upper = edges[:-1], edges[1:]
    else:  # every score identical: one degenerate bin
        lower = upper = np.array([p_arr[0]])
    return CalibrationBins(
        lower=np.asarray(lower[keep], dtype=np.float64),
        upper=np.asarray(upper[keep], dtype=np.float64),
        mean_predicted=sum_p[keep] / count[keep],
        observed_rate=sum_y[keep] / count[keep],
        count=count[keep].astype(np.int64),
    )


def expected_calibration_error(
    y_true: npt.ArrayLike,
    p: npt.ArrayLike,
    n_bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "quantile",
) -> float:
    """Lead-weighted mean of |observed rate - mean predicted probability| over bins.

    Reads as "on average, the stated probability is off by this many points", which
    is what a salesperson reading "32 % chance" cares about.
    """
    bins = calibration_bins(y_true, p, n_bins=n_bins, strategy=strategy)
    weights = bins.count / bins.count.sum()
    return float(np.sum(weights * np.abs(bins.observed_rate - bins.mean_predicted)))
