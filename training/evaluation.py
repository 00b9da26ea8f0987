"""Pure evaluation metrics for one scored stage, independent of the model class.

Every function takes the true 0/1 outcomes and predicted probabilities as plain
arrays, so the same code grades the LightGBM model, the logistic baseline and any
oracle. Nothing here fits, loads or logs anything.

Why these metrics: a lead score is used two ways. Sales works the list top-down, so
ranking quality matters (ROC-AUC, PR-AUC, lift, cumulative gains). The number is also
read as "chance this lead becomes an MQL/SQL", so calibration matters too (log loss,
Brier score, expected calibration error). Reporting both keeps a well-ranked but
badly calibrated model from passing unnoticed, and vice versa.

Ties in the score are broken *stably* (original row order) wherever a ranking is
needed, so results are deterministic for a given input order.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, roc_auc_score

from models.metrics import (
    CalibrationBins,
    FloatArray,
    IntArray,
    calibration_bins,
    expected_calibration_error,
    validate_inputs,
)

__all__ = [
    "CalibrationBins",
    "FloatArray",
    "IntArray",
    "StageMetrics",
    "calibration_bins",
    "cumulative_gains",
    "expected_calibration_error",
    "lift_at",
    "oracle_share",
    "stage_metrics",
    "threshold_stats",
    "validate_inputs",
]

#: Probabilities are clipped to [EPS, 1 - EPS] for log loss so a confident miss costs a
#: large but finite amount instead of infinity.
LOG_LOSS_EPS = 1e-15


def _rank_desc(p: FloatArray) -> IntArray:
    """Indices ordering p from highest to lowest; ties keep their original order."""
    return np.argsort(-p, kind="stable").astype(np.int64)


# --------------------------------------------------------------------------- ranking


def _top_k(n: int, fraction: float) -> int:
    """Number of leads in the top ``fraction``: rounded up, at least one.

    Rounding guards against float noise such as 0.07 * 100 = 7.000000000000001.
    """
    return max(1, math.ceil(round(fraction * n, 9)))


def lift_at(y_true: npt.ArrayLike, p: npt.ArrayLike, fraction: float = 0.10) -> float:
    """Positive rate among the top ``fraction`` of leads by score, over the overall rate.

    A lift of 3 at 10 % means working the top tenth finds conversions three times as
    often as working leads at random. The top slice has ``ceil(fraction * n)`` leads;
    ties at its edge are broken stably. NaN when there are no positives (undefined).
    The maximum possible value is ``min(1 / base_rate, 1 / fraction)``.
    """
    y, p_arr = validate_inputs(y_true, p)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    base_rate = float(y.mean())
    if base_rate == 0.0:
        return math.nan
    k = _top_k(len(y), fraction)
    top_rate = float(y[_rank_desc(p_arr)[:k]].mean())
    return top_rate / base_rate


def cumulative_gains(y_true: npt.ArrayLike, p: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Share of leads worked (x) against share of all positives captured (y).

    Leads are worked from the highest score down (ties stably). Both arrays have
    ``n + 1`` points and start at 0 so the curve is drawn from the origin; both end at
    1. Raises ValueError when there are no positives, because "share captured" is then
    undefined.
    """
    y, p_arr = validate_inputs(y_true, p)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("cumulative gains need at least one positive outcome in y_true")
    captured = np.concatenate([[0], np.cumsum(y[_rank_desc(p_arr)])])
    x = np.arange(len(y) + 1, dtype=np.float64) / len(y)
    return x, captured.astype(np.float64) / n_pos


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class ThresholdStats:
    """What happens if every lead with ``p >= threshold`` is flagged."""

    threshold: float
    precision: float
    recall: float
    volume: int
    volume_share: float


def threshold_stats(y_true: npt.ArrayLike, p: npt.ArrayLike, threshold: float) -> ThresholdStats:
    """Precision, recall and volume of the leads flagged by ``p >= threshold``.

    Precision is 0.0 when nothing is flagged (no flagged lead converts, and callers
    comparing against a target should see "not met" rather than NaN). Recall is NaN
    when there are no positives at all, since it is genuinely undefined then.
    """
    y, p_arr = validate_inputs(y_true, p)
    if math.isnan(threshold):
        raise ValueError("threshold must not be NaN")
    flagged = p_arr >= threshold
    volume = int(flagged.sum())
    tp = int(y[flagged].sum())
    n_pos = int(y.sum())
    return ThresholdStats(
        threshold=float(threshold),
        precision=tp / volume if volume else 0.0,
        recall=tp / n_pos if n_pos else math.nan,
        volume=volume,
        volume_share=volume / len(y),
    )


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class StageMetrics:
    """The standard metric set for one stage (e.g. MQL) on one split."""

    roc_auc: float
    pr_auc: float
    log_loss: float
    brier: float
    ece: float
    lift_at_10: float
    base_rate: float
    n: int
    n_positive: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{prefix + name: value}`` mapping, e.g. for MLflow ``log_metrics``."""
        return {f"{prefix}{key}": float(value) for key, value in asdict(self).items()}


def _log_loss(y: IntArray, p: FloatArray) -> float:
    q = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def stage_metrics(y_true: npt.ArrayLike, p: npt.ArrayLike) -> StageMetrics:
    """Compute every metric in :class:`StageMetrics` for one stage.

    ROC-AUC and PR-AUC are NaN (not an exception) when only one class is present, so a
    small split with no SQLs still produces a report instead of crashing training.
    Lift is NaN when there are no positives.
    """
    y, p_arr = validate_inputs(y_true, p)
    both_classes = 0 < int(y.sum()) < len(y)
    roc_auc = float(roc_auc_score(y, p_arr)) if both_classes else math.nan
    pr_auc = float(average_precision_score(y, p_arr)) if both_classes else math.nan
    return StageMetrics(
        roc_auc=roc_auc,
        pr_auc=pr_auc,
        log_loss=_log_loss(y, p_arr),
        brier=float(np.mean((p_arr - y) ** 2)),
        ece=expected_calibration_error(y, p_arr),
        lift_at_10=lift_at(y, p_arr, 0.10),
        base_rate=float(y.mean()),
        n=len(y),
        n_positive=int(y.sum()),
    )


def oracle_share(model_auc: float, oracle_auc: float) -> float:
    """Model ROC-AUC as a plain fraction of the oracle's: ``model_auc / oracle_auc``.

    The oracle is a model given information the real one cannot have (e.g. after-
    contact fields), so it bounds what the data can support. A plain ratio is easy to
    read ("the model reaches 93 % of the oracle") and needs no explanation. Note it
    flatters weak models: a random model (AUC 0.5) against an oracle of 0.9 still
    scores 0.56. If the above-chance share is wanted instead, compute
    ``(model_auc - 0.5) / (oracle_auc - 0.5)`` explicitly.

    Returns NaN when either AUC is NaN or the oracle AUC is not positive.
    """
    if math.isnan(model_auc) or math.isnan(oracle_auc) or oracle_auc <= 0.0:
        return math.nan
    return model_auc / oracle_auc
