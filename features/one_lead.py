"""One lead's feature vector in plain Python: the API's hot path, same numbers as a batch.

The batch path (:mod:`features.batch` then ``LeadFeatureBuilder._encode``) is built for
a million rows: columns, bincounts, a report per field. For one lead its fixed cost
(some forty numpy calls on arrays of one element) was most of the 110 µs a vector took.
This module walks one lead dict once, field by field and action by action, with the
builder's own lookup tables and rules, and does its arithmetic the way numpy does it
(``float(ns) / DAY_NS``, one ``np.exp`` over the lead's ages, sums in event order), so
the vector is bit-identical to the batch path's: ``tests/data/test_builder.py`` checks
1,000 sample leads, and the one-lead tests check the report and every refusal.

What it does not handle it hands back (:class:`BatchPathError`): pre-aggregated action
columns, values of unexpected types (strings for numbers, lists, numpy scalars), and
timestamps whose differences overflow 64-bit nanoseconds; the batch path then encodes
the lead as before, with the same result and the same errors.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import numpy as np

from features.batch import (
    ACTION_TIME_KEY,
    ACTION_TYPE_KEY,
    ACTIONS_KEY,
    AS_OF_KEY,
    NAT,
    FeatureError,
    aggregated_columns,
    stamp,
    to_ns,
)
from features.spec import BooleanField, CategoricalField, NumericField

if TYPE_CHECKING:
    from features.builder import BuildReport, LeadFeatureBuilder

DAY_NS = 86_400 * 10**9
_DAY = float(DAY_NS)
_INT64 = (-(2**63), 2**63)
_PLAIN = (int, float)


class BatchPathError(Exception):
    """This lead is left to the batch path (see the module docstring)."""


class OneLead:
    """The per-spec plan for encoding one lead dict, derived once from a fitted builder."""

    def __init__(self, builder: LeadFeatureBuilder) -> None:
        self.builder = builder
        spec = builder.spec
        self.spec = spec
        self.aggregated = frozenset(aggregated_columns(spec)) if spec.actions else frozenset()
        self.created_key = spec.created_at_column
        acts = spec.actions
        self.n_types = len(acts.types) if acts else 0
        self.windows = [float(w) for w in acts.windows_days] if acts else []
        self.window_days = list(acts.windows_days) if acts else []
        self.cap = float(acts.recency_cap_days) if acts else 0.0
        self.rate = (-float(np.log(2.0)) / acts.half_life_days) if acts else 0.0
        self.encoders: list[Callable[[Any, BuildReport], float]] = [
            self._encoder(f) for f in spec.feature_fields
        ]

    def encode(self, lead: Mapping[str, Any], report: BuildReport) -> list[float]:
        """The lead's vector as a list; raises FeatureError as the batch path would."""
        if self.spec.actions is None or not self.aggregated.isdisjoint(lead):
            raise BatchPathError
        as_of_value = lead.get(AS_OF_KEY)
        as_of = (
            to_ns(datetime.now(UTC)) if as_of_value is None else stamp(as_of_value, AS_OF_KEY, 0)
        )
        created = NAT
        if self.created_key:
            created = stamp(lead.get(self.created_key), self.created_key, 0)
        events = [
            (a[ACTION_TYPE_KEY], stamp(a[ACTION_TIME_KEY], ACTIONS_KEY, 0, ceil=True))
            for a in lead.get(ACTIONS_KEY) or ()
        ]
        values = [
            encode(lead.get(f.name), report)
            for f, encode in zip(self.spec.feature_fields, self.encoders, strict=True)
        ]
        values += self._actions(as_of, events, report)
        if self.created_key:
            values.append(_days(as_of, created) if NAT not in (as_of, created) else math.nan)
        return values

    # -- profile fields ------------------------------------------------------------------

    def _encoder(self, f: Any) -> Callable[[Any, BuildReport], float]:
        if isinstance(f, CategoricalField):
            return self._categorical(f)
        missing = self.builder.field_missing_tokens(f.name)
        if isinstance(f, NumericField):
            return _numeric(f, self.builder.field_sentinels(f.name))
        if isinstance(f, BooleanField):
            return _boolean(f, missing)
        raise TypeError(f"field '{f.name}' of kind {f.kind} cannot be a feature")

    def _categorical(self, f: CategoricalField) -> Callable[[Any, BuildReport], float]:
        code_of = self.builder.category_coder(f)
        k = len(self.builder.levels_[f.name])

        def encode(value: Any, report: BuildReport) -> float:
            if value is not None and not isinstance(value, str | float | int):
                raise BatchPathError
            code = code_of(value, 0)
            report.missing[f.name] = int(code == k)
            if code == k + 1:
                if f.unseen == "error":
                    raise FeatureError(f.name, [0], "value is not one of the known levels")
                report.unseen_rows[f.name] = np.array([0])
                report.unseen_values[f.name] = [self.builder.shown_token(f, value)]
            return float(code)

        return encode

    # -- actions -------------------------------------------------------------------------

    def _actions(
        self, as_of: int, events: list[tuple[Any, int]], report: BuildReport
    ) -> list[float]:
        type_code = self.builder.action_type_code
        kept_type: list[int] = []
        kept_age: list[float] = []
        unknown = late = 0
        for kind, at in events:
            code = type_code(kind)
            if at == NAT:
                raise BatchPathError  # the batch path's int64 arithmetic would wrap
            age = _days(as_of, at)
            if code < 0:
                unknown += 1
            elif age < 0:
                late += 1
            else:
                kept_type.append(code)
                kept_age.append(age)
        report.unknown_action_types = unknown
        report.actions_after_cutoff = late
        n_win = len(self.windows)
        # first[t][j]: actions of type t whose shortest window is j (counts are cumulative).
        first = [[0] * (n_win + 1) for _ in range(self.n_types)]
        last = [self.cap] * self.n_types
        decayed = [0.0] * self.n_types
        weights = np.exp(np.array(kept_age) * self.rate).tolist() if kept_age else []
        for code, age, weight in zip(kept_type, kept_age, weights, strict=True):
            first[code][bisect_right(self.windows, age)] += 1
            if age < last[code]:
                last[code] = age
            decayed[code] += weight
        out: list[float] = []
        totals = [0] * n_win
        for t in range(self.n_types):
            counts = list(accumulate(first[t][:n_win]))
            totals = [a + b for a, b in zip(totals, counts, strict=True)]
            out += [float(c) for c in counts]
            out += (last[t], decayed[t])
        horizon = self.window_days[-1]
        days = {int(age) for age in kept_age if int(age) < horizon}
        out += [float(sum(1 for d in days if d < w)) for w in self.window_days]
        out += [float(c) for c in totals]
        if n_win > 1:
            out.append(float(totals[1]) / self.windows[1] - float(totals[-1]) / self.windows[-1])
        return out


def _days(later: int, earlier: int) -> float:
    """(later - earlier) / DAY_NS as numpy computes it on int64 arrays."""
    diff = later - earlier
    if not _INT64[0] <= diff < _INT64[1]:
        raise BatchPathError  # numpy would wrap around here; the batch path says what it says
    return float(diff) / _DAY


def _numeric(f: NumericField, sentinels: tuple[float, ...]) -> Callable[[Any, BuildReport], float]:
    def encode(value: Any, report: BuildReport) -> float:
        if isinstance(value, bool):
            raise FeatureError(f.name, [0], "value is a yes/no answer, not a number")
        if value is None:
            out = math.nan
        elif type(value) in _PLAIN:
            out = float(value)
        else:
            raise BatchPathError  # strings, numpy scalars: the batch path's conversions
        if math.isinf(out) or out in sentinels:
            out = math.nan
        missing = math.isnan(out)
        report.missing[f.name] = int(missing)
        if not missing and (out < f.min or out > f.max):
            if f.out_of_bounds == "error":
                raise FeatureError(f.name, [0], f"value outside [{f.min:g}, {f.max:g}] {f.unit}")
            out = min(max(out, f.min), f.max)
            report.clipped_rows[f.name] = np.array([0])
        return out

    return encode


def _boolean(f: BooleanField, missing: frozenset[str]) -> Callable[[Any, BuildReport], float]:
    from features.builder import bool_value

    def encode(value: Any, report: BuildReport) -> float:
        parsed = bool_value(value, missing)
        if parsed is None:
            raise FeatureError(f.name, [0], "value is not a yes/no answer")
        out = float(parsed)
        report.missing[f.name] = int(math.isnan(out))
        return out

    return encode
