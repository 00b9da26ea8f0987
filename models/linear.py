"""A logistic-regression head stored as plain numbers, to blend with (or replace) LightGBM.

On small tables whose signal is close to additive, a regularised logistic regression
ranks as well as boosted trees or better, and a blend of the two log-odds often beats
both; ``leadscore tune`` decides per data set. This head works on the builder's matrix
like the booster does:

* a categorical column (integer codes) gets one weight per code seen at least
  ``MIN_LEVEL_ROWS`` times in training; other codes weigh 0;
* a numeric column is imputed with its training median (plus a weight for "was
  missing"), compressed with a signed log (counts and revenues are heavy-tailed) and
  standardised.

It is saved as JSON numbers (no pickle) and explains itself like a tree model does:
each column's contribution is its term minus that term's training mean, and the
leftover is the expected margin, so contributions add up to the margin (as LightGBM's
``pred_contrib`` do) and the reasons code treats both heads alike. A monotone
constraint from the spec is kept by clipping a weight of the wrong sign to zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

MIN_LEVEL_ROWS = 5


@dataclass
class LinearHead:
    """Weights per column; ``categorical[j]`` maps code -> weight, numeric columns use
    ``median``/``center``/``scale``/``weight``/``missing_weight``; ``means`` are each
    column's mean term on the training rows."""

    intercept: float
    categorical: dict[int, dict[int, float]]
    median: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    missing_weight: np.ndarray
    means: np.ndarray

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        *,
        categorical: list[int],
        monotone: list[int] | None = None,
        c: float = 0.5,
        seed: int = 0,
    ) -> LinearHead:
        d = X.shape[1]
        is_cat = np.zeros(d, dtype=bool)
        is_cat[categorical] = True
        levels = {j: _frequent_codes(X[:, j]) for j in categorical}
        median = np.zeros(d)
        numeric = np.flatnonzero(~is_cat)
        for j in numeric:
            present = X[~np.isnan(X[:, j]), j]
            median[j] = float(np.median(present)) if present.size else 0.0
        z = _signed_log1p(np.where(np.isnan(X), median, X))
        center = np.where(is_cat, 0.0, z.mean(axis=0))
        scale = np.where(is_cat, 1.0, z.std(axis=0))
        scale[scale == 0] = 1.0
        design, layout = _design(X, z, center, scale, numeric, levels)
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        model.fit(design, y)
        coef = model.coef_[0]
        weight, missing_weight = np.zeros(d), np.zeros(d)
        cat_weights: dict[int, dict[int, float]] = {}
        for kind, column, code, k in layout:
            if kind == "numeric":
                weight[column] = coef[k]
            elif kind == "missing":
                missing_weight[column] = coef[k]
            else:
                cat_weights.setdefault(column, {})[code] = float(coef[k])
        for column in categorical:
            cat_weights.setdefault(column, {})
        if monotone is not None:
            sign = np.asarray(monotone, dtype=float)
            weight = np.where(sign * weight < 0, 0.0, weight)
        head = cls(
            float(model.intercept_[0]), cat_weights, median, center, scale, weight,
            missing_weight, np.zeros(d),
        )  # fmt: skip
        head.means = head.terms(X).mean(axis=0)
        return head

    def terms(self, X: np.ndarray) -> np.ndarray:
        """(n, d): each column's additive share of the margin (before centring)."""
        out = np.zeros(X.shape, dtype=np.float64)
        missing = np.isnan(X)
        z = (_signed_log1p(np.where(missing, self.median, X)) - self.center) / self.scale
        out[:] = z * self.weight + missing * self.missing_weight
        for j, weights in self.categorical.items():
            codes = X[:, j]
            column = np.zeros(len(X))
            for code, w in weights.items():
                column[codes == code] = w
            out[:, j] = column
        return out

    def margin(self, X: np.ndarray) -> np.ndarray:
        return self.intercept + self.terms(X).sum(axis=1)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(n, d + 1) like LightGBM's ``pred_contrib``: centred terms, then the expected margin."""
        centred = self.terms(X) - self.means
        bias = np.full((len(X), 1), self.intercept + float(self.means.sum()))
        return np.hstack([centred, bias])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "intercept": self.intercept,
            "categorical": {
                str(j): {str(c): w for c, w in m.items()} for j, m in self.categorical.items()
            },
            **{
                key: getattr(self, key).tolist()
                for key in ("median", "center", "scale", "weight", "missing_weight", "means")
            },
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearHead:
        if data.get("format") != 1:
            raise ValueError(f"unsupported linear head format: {data.get('format')!r}")
        arrays = {
            key: np.asarray(data[key], dtype=np.float64)
            for key in ("median", "center", "scale", "weight", "missing_weight", "means")
        }
        categorical = {
            int(j): {int(c): float(w) for c, w in m.items()} for j, m in data["categorical"].items()
        }
        return cls(float(data["intercept"]), categorical, **arrays)


def _frequent_codes(codes: np.ndarray) -> list[int]:
    values, counts = np.unique(codes[~np.isnan(codes)], return_counts=True)
    return [int(v) for v, c in zip(values, counts, strict=True) if c >= MIN_LEVEL_ROWS]


def _design(
    X: np.ndarray,
    z: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    numeric: np.ndarray,
    levels: dict[int, list[int]],
) -> tuple[np.ndarray, list[tuple[str, int, int, int]]]:
    """The training design matrix and, per design column, what it stands for."""
    columns: list[np.ndarray] = []
    layout: list[tuple[str, int, int, int]] = []
    for j in (int(v) for v in numeric):
        columns.append((z[:, j] - center[j]) / scale[j])
        layout.append(("numeric", j, 0, len(layout)))
        missing = np.isnan(X[:, j])
        if missing.any():
            columns.append(missing.astype(np.float64))
            layout.append(("missing", j, 0, len(layout)))
    for j, codes in levels.items():
        for code in codes:
            columns.append((X[:, j] == code).astype(np.float64))
            layout.append(("level", j, code, len(layout)))
    design = np.column_stack(columns) if columns else np.zeros((len(X), 1))
    return design, layout


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))
