"""Reasons a salesperson can read: SHAP contributions summed per business field, in words.

LightGBM computes exact SHAP values for its own trees (``pred_contrib=True``) at a
cost close to a prediction, so every score can carry its reasons. A model has dozens
of columns per business fact (a count per window, recency, decay for the pricing
page), so contributions are first summed back to the field or action type they come
from; the sentence then quotes the lead's own values ("3 pricing page visits in the
last 7 days").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.builder import MISSING_LEVEL, OTHER_LEVEL, FeatureInfo, LeadFeatureBuilder
from features.spec import ActionType, BooleanField, CategoricalField, NumericField

#: Contributions smaller than this (in log-odds) are noise, not a reason.
MIN_EFFECT = 0.02


@dataclass(frozen=True)
class Reason:
    field: str
    effect: float  # contribution to the log-odds of the stage that explains the lead
    text: str

    def to_dict(self) -> dict[str, Any]:
        # Written out: dataclasses.asdict deep-copies and cost 5 µs a reason (measured:
        # 60 ms of a 1,000-lead batch's answer and log rows).
        return {"field": self.field, "effect": self.effect, "text": self.text}


class ReasonWriter:
    """Sums per-feature SHAP values to sources and phrases the strongest of them."""

    def __init__(self, builder: LeadFeatureBuilder) -> None:
        self.builder = builder
        self.features: list[FeatureInfo] = builder.features_
        self.sources: list[str] = list(dict.fromkeys(f.source for f in self.features))
        index = {s: i for i, s in enumerate(self.sources)}
        self.grouping = np.zeros((len(self.features), len(self.sources)))
        for j, f in enumerate(self.features):
            self.grouping[j, index[f.source]] = 1.0
        self.column = {f.name: j for j, f in enumerate(self.features)}
        spec = builder.spec
        self.fields = {f.name: f for f in spec.feature_fields}
        self.action_types: dict[str, ActionType] = (
            {t.name: t for t in spec.actions.types} if spec.actions else {}
        )
        self.windows: list[int] = spec.actions.windows_days if spec.actions else []
        self.cap = spec.actions.recency_cap_days if spec.actions else math.inf

    def by_source(self, contrib: np.ndarray) -> np.ndarray:
        """(n, features [+ bias]) SHAP values → (n, sources)."""
        return contrib[:, : len(self.features)] @ self.grouping

    def top(self, x: np.ndarray, source_effects: np.ndarray, k: int = 3) -> dict[str, list[Reason]]:
        """The k strongest positive and negative reasons for one lead's feature row."""
        order = np.argsort(-source_effects, kind="stable")
        return self._top(x, source_effects, order.tolist(), k)

    def top_many(
        self, X: np.ndarray, effects: np.ndarray, k: int = 3
    ) -> list[dict[str, list[Reason]]]:
        """:meth:`top` for every row, the ranking done in one numpy call for all of them."""
        orders = np.argsort(-effects, axis=1, kind="stable").tolist()
        return [self._top(x, e, order, k) for x, e, order in zip(X, effects, orders, strict=True)]

    def _top(
        self, x: np.ndarray, source_effects: np.ndarray, order: list[int], k: int
    ) -> dict[str, list[Reason]]:
        effects = source_effects.tolist()
        positive = [i for i in order[:k] if effects[i] > MIN_EFFECT]
        negative = [i for i in order[::-1][:k] if effects[i] < -MIN_EFFECT]
        return {
            "positive": [self._reason(i, x, effects) for i in positive],
            "negative": [self._reason(i, x, effects) for i in negative],
        }

    def _reason(self, i: int, x: np.ndarray, effects: list[float]) -> Reason:
        source = self.sources[i]
        return Reason(source, round(effects[i], 4), self.phrase(source, x))

    def phrase(self, source: str, x: np.ndarray) -> str:
        if source in self.fields:
            return self._field_phrase(source, x)
        if source in self.action_types:
            return self._action_phrase(self.action_types[source], x)
        if source == "activity":
            days = self._value(f"active_days_{self.windows[-1]}d", x)
            return f"active on {_count(days, 'day')} in the last {_count(self.windows[-1], 'day')}"
        if source == "lead_age":
            return f"became a lead {_ago(self._value('lead_age_days', x))}"
        return source.replace("_", " ")

    def _value(self, name: str, x: np.ndarray) -> float:
        return float(x[self.column[name]])

    def _field_phrase(self, name: str, x: np.ndarray) -> str:
        f = self.fields[name]
        label = f.name.replace("_", " ")
        value = self._value(name, x)
        if isinstance(f, CategoricalField):
            level = self.builder.categories_of(name)[int(value)]
            if level == MISSING_LEVEL:
                return f"{label} not given"
            if level == OTHER_LEVEL:
                return f"{label} is an uncommon value"
            shown = level.replace("_", " ")
            return f.phrase.format(value=shown) if f.phrase else f"{label}: {shown}"
        if math.isnan(value):
            return f"{label} not given"
        if isinstance(f, BooleanField):
            if value >= 0.5:
                return f.phrase or f"{label}: yes"
            return f.phrase_false or f"{label}: no"
        assert isinstance(f, NumericField)
        shown = f"{value:,.0f}" if f.integer or abs(value) >= 100 else f"{value:,.2f}"
        return f.phrase.format(value=shown) if f.phrase else f"{label} of {shown} {f.unit}"

    def _action_phrase(self, t: ActionType, x: np.ndarray) -> str:
        counts = [self._value(f"{t.name}_count_{w}d", x) for w in self.windows]
        ago = self._value(f"{t.name}_days_since_last", x)
        for w, c in zip(self.windows, counts, strict=True):
            if c > 0:
                return f"{t.phrase}: {_int(c)} in the last {_period(w)} (latest {_ago(ago)})"
        if ago < self.cap:
            return f"no {t.phrase} in the last {_period(self.windows[-1])} (latest {_ago(ago)})"
        return f"no {t.phrase} yet"


def _int(v: float) -> str:
    return "unknown" if math.isnan(v) else f"{round(v):,}"


def _count(n: float, unit: str) -> str:
    # NaN reaches here from a pre-aggregated table with an empty activity cell.
    return f"{_int(n)} {unit}" if not math.isnan(n) and round(n) == 1 else f"{_int(n)} {unit}s"


def _period(days: int) -> str:
    return "day" if days == 1 else f"{days} days"


def _ago(days: float) -> str:
    if math.isnan(days):
        return "at an unknown time"
    if days < 1:
        return "today"
    if days < 2:
        return "yesterday"
    return f"{int(days)} days ago"
