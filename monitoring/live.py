"""Live performance on matured scores: reliability, ECE, ROC-AUC, precision vs the promise.

Pure functions of arrays (probabilities as served, 0/1 labels from
:mod:`monitoring.labels`), so the service, the command line and the tests compute the
same numbers; the expected calibration error is the one training reports
(:func:`models.metrics.expected_calibration_error`, quantile bins).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from models.metrics import calibration_bins, expected_calibration_error
from models.reference import Promise
from monitoring.settings import MonitorSettings
from monitoring.states import State, above, below, worst


@dataclass(frozen=True)
class ReliabilityBin:
    """One point of the live reliability curve."""

    mean_predicted: float
    observed_rate: float
    count: int


@dataclass(frozen=True)
class StageLive:
    """One stage on the matured window: is the stated probability still true?"""

    stage: str
    rows: int
    positives: int
    mean_predicted: float | None
    observed_rate: float | None
    ece: float | None
    ece_state: State
    roc_auc: float | None
    roc_auc_trained: float | None
    auc_state: State
    threshold: float | None
    promised_precision: float | None
    live_precision: float | None
    flagged: int
    precision_state: State
    reliability: list[ReliabilityBin]

    @property
    def state(self) -> State:
        return worst([self.ece_state, self.auc_state, self.precision_state])

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["state"] = self.state
        return out

    def sentence(self) -> str:
        """The promise against the live figure, in words."""
        if self.promised_precision is None or self.live_precision is None:
            return f"{self.stage}: no threshold promise to compare"
        return (
            f"precision {self.promised_precision:.2f} at the {self.stage.upper()} threshold: "
            f"live {self.live_precision:.2f}"
        )


def stage_live(
    stage: str,
    y: np.ndarray,
    p: np.ndarray,
    promise: Promise | None,
    trained_auc: float | None,
    settings: MonitorSettings,
) -> StageLive:
    """Every live figure of one stage; states are ``unknown`` where rows are too few."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    known = ~np.isnan(p)
    y, p = y[known], p[known]
    n, positives = int(y.size), int(y.sum())
    enough = n >= settings.min_matured_rows
    both = 0 < positives < n
    ece = expected_calibration_error(y, p, settings.bins) if n else None
    auc = float(roc_auc_score(y, p)) if both else None
    reliability = _reliability(y, p, settings.bins) if n else []
    threshold = promise.threshold if promise else None
    flagged_mask = p >= threshold if threshold is not None else np.zeros(n, dtype=bool)
    flagged = int(flagged_mask.sum())
    live_precision = float(y[flagged_mask].mean()) if flagged else None
    ratio = None
    if promise is not None and live_precision is not None and promise.precision > 0:
        ratio = live_precision / promise.precision
    judge_auc = enough and positives >= settings.min_positives and auc is not None
    drop = trained_auc - auc if judge_auc and trained_auc is not None and auc else None
    return StageLive(
        stage=stage,
        rows=n,
        positives=positives,
        mean_predicted=float(p.mean()) if n else None,
        observed_rate=float(y.mean()) if n else None,
        ece=ece,
        ece_state=above(ece if enough else None, settings.ece_watch, settings.ece_act),
        roc_auc=auc,
        roc_auc_trained=trained_auc,
        auc_state=above(drop, settings.auc_drop_watch, settings.auc_drop_act),
        threshold=threshold,
        promised_precision=promise.precision if promise else None,
        live_precision=live_precision,
        flagged=flagged,
        precision_state=below(
            ratio if flagged >= settings.min_positives else None,
            settings.precision_ratio_watch,
            settings.precision_ratio_act,
        ),
        reliability=reliability,
    )


def _reliability(y: np.ndarray, p: np.ndarray, bins: int) -> list[ReliabilityBin]:
    b = calibration_bins(y, p, n_bins=bins)
    return [
        ReliabilityBin(float(m), float(o), int(c))
        for m, o, c in zip(b.mean_predicted, b.observed_rate, b.count, strict=True)
    ]
