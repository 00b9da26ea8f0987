"""Probability calibration fitted on held-out data.

A booster's raw output ranks leads well but its probabilities drift from observed
rates, and sales read "70 %" literally. Calibration maps the booster's margin to a
probability on data the booster never trained on. Both methods evaluate with a few
numpy operations, so one lead costs microseconds and the map stores as plain JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

Method = Literal["sigmoid", "isotonic"]


@dataclass(frozen=True)
class Calibrator:
    """Maps a booster's raw margin (log-odds) to a calibrated probability.

    ``sigmoid`` (Platt scaling) keeps the booster's ranking exactly, which matters
    when sales work leads in order; ``isotonic`` bends freely but creates ties, so it
    only suits large validation sets.
    """

    method: Method
    slope: float = 1.0
    intercept: float = 0.0
    knots_x: list[float] = field(default_factory=list)
    knots_y: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, margin: np.ndarray, y: np.ndarray, method: Method = "sigmoid") -> Calibrator:
        margin = np.asarray(margin, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        if len(np.unique(y)) < 2:
            raise ValueError("calibration needs both outcomes in the validation data")
        if method == "sigmoid":
            # A very weak penalty: this is a two-parameter fit on thousands of rows.
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(margin[:, None], y)
            slope = float(lr.coef_[0, 0])
            if slope <= 0:
                # A booster whose margin anti-correlates with outcomes on held-out data is
                # broken; flipping its ranking silently would hide that.
                raise ValueError(f"calibration slope {slope:.3f} <= 0: the booster does not rank")
            return cls("sigmoid", slope, float(lr.intercept_[0]))
        iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-6, y_max=1 - 1e-6)
        iso.fit(margin, y)
        return cls(
            "isotonic",
            knots_x=[float(v) for v in iso.X_thresholds_],
            knots_y=[float(v) for v in iso.y_thresholds_],
        )

    def __call__(self, margin: np.ndarray) -> np.ndarray:
        if self.method == "sigmoid":
            return 1.0 / (1.0 + np.exp(-(self.slope * margin + self.intercept)))
        return np.interp(margin, self.knots_x, self.knots_y)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "slope": self.slope,
            "intercept": self.intercept,
            "knots_x": self.knots_x,
            "knots_y": self.knots_y,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(**data)
