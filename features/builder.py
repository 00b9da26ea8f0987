"""The feature builder: leads in, named numeric vectors out, same code online and offline.

It follows scikit-learn's transformer contract (``fit`` / ``transform`` /
``get_feature_names_out``) so it composes with the usual tools, and adds ``build``,
which also returns a :class:`BuildReport` of what was missing, unseen or clipped:
nothing is silently turned into something else.

Rules, stated once (they are the contract with the model):

* **categorical**: strings are normalised (:func:`features.spec.normalise_token`),
  aliases applied, then coded ``0..k-1`` in level order. A missing value is the
  explicit code ``k`` (``__missing__``); a value outside the levels is code ``k+1``
  (``__other__``) and reported, or refused when the field says ``unseen: error``.
  LightGBM would score NaN, an unseen code and a negative code all as "missing"
  without a word, so the builder, not the booster, owns these rules.
* **numeric**: float; missing stays NaN (the model's learnt missing branch) and is
  reported; out of bounds is clipped to the bound and reported, or refused.
* **boolean**: 1.0 / 0.0; missing stays NaN and is reported.
* **actions**, as of the cut-off (only actions at or before it count): per type and
  window the count (window ``w`` holds actions with age < ``w`` days), days since the
  last action of the type (the spec's ``recency_cap_days`` when never seen, and the
  cap for all), exponentially decayed count (half-life from the spec); over all types
  the distinct active days per window (a day is a whole 24 h before the cut-off),
  total count per window, and recent velocity (actions per day in the second window
  minus per day in the longest, so a burst reads positive). Unknown action types are
  ignored and reported.
* **lead age**: days from ``created_at`` to the cut-off, when the spec has it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from features.batch import (
    NAT,
    Column,
    FeatureError,
    LeadBatch,
    aggregated_columns,
    from_frames,
    from_records,
)
from features.one_lead import BatchPathError, OneLead
from features.spec import (
    BooleanField,
    CategoricalField,
    Direction,
    FeatureSpec,
    NumericField,
    field_missing_tokens,
    missing_numbers,
    normalise_token,
)

log = logging.getLogger(__name__)

DAY_NS = 86_400 * 10**9
MISSING_LEVEL = "__missing__"
OTHER_LEVEL = "__other__"
_LN2 = float(np.log(2.0))
_BOOL_TOKENS = {"true": 1.0, "yes": 1.0, "y": 1.0, "1": 1.0, "false": 0.0, "no": 0.0, "n": 0.0}
_BOOL_TOKENS.update({"0": 0.0, "1.0": 1.0, "0.0": 0.0})

FeatureKind = Literal[
    "categorical", "numeric", "boolean", "count", "recency", "decay", "activity", "velocity", "age"
]


@dataclass(frozen=True)
class FeatureInfo:
    """What one output column means, so reasons can be summed back to a business field."""

    name: str
    source: str  # the profile field or action type it comes from ("activity" for totals)
    kind: FeatureKind
    window_days: int | None = None
    monotone: int = 0  # +1 increasing, -1 decreasing, 0 free


@dataclass
class BuildReport:
    """What the builder had to do to the data, per field, so nothing passes unnoticed."""

    n_rows: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    unseen_rows: dict[str, np.ndarray] = field(default_factory=dict)
    unseen_values: dict[str, list[str]] = field(default_factory=dict)
    clipped_rows: dict[str, np.ndarray] = field(default_factory=dict)
    unknown_action_types: int = 0
    actions_after_cutoff: int = 0
    _by_row: dict[int, list[str]] | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """Counts only: safe to log or to attach to an MLflow run."""
        return {
            "rows": self.n_rows,
            "missing": {k: v for k, v in self.missing.items() if v},
            "unseen": {k: len(v) for k, v in self.unseen_rows.items() if len(v)},
            "clipped": {k: len(v) for k, v in self.clipped_rows.items() if len(v)},
            "unknown_action_types": self.unknown_action_types,
            "actions_after_cutoff": self.actions_after_cutoff,
        }

    def warnings_for(self, row: int) -> list[str]:
        """Plain-language warnings for one row; they name fields, never echo values."""
        if self._by_row is None:  # indexed once: asking row by row must not scan every field
            self._by_row = {}
            for name, rows in self.unseen_rows.items():
                warning = f"{name}: value not among the known levels, scored as '{OTHER_LEVEL}'"
                for r in rows.tolist():
                    self._by_row.setdefault(r, []).append(warning)
            for name, rows in self.clipped_rows.items():
                warning = f"{name}: value outside the allowed range, clipped to the bound"
                for r in rows.tolist():
                    self._by_row.setdefault(r, []).append(warning)
        return list(self._by_row.get(row, ()))


@dataclass(frozen=True)
class FeatureMatrix:
    values: np.ndarray
    names: list[str]
    report: BuildReport


class LeadFeatureBuilder(TransformerMixin, BaseEstimator):
    """Turn leads (tables or dicts) into the model's feature vectors, as the spec says.

    ``fit`` learns what the spec leaves to the data (levels of categorical fields that
    list none) and reference statistics of every feature (for drift checks and for
    explaining scores); ``transform`` never looks at labels or at other rows.
    """

    #: The one-lead encoder, derived from the fitted state on first use, never stored.
    _one: OneLead | None = None

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec

    # -- scikit-learn contract -------------------------------------------------------

    def fit(
        self,
        X: pd.DataFrame | Sequence[Mapping[str, Any]],
        y: Any = None,
        *,
        actions: pd.DataFrame | None = None,
        as_of: Any = None,
    ) -> LeadFeatureBuilder:
        self.fit_build(X, actions=actions, as_of=as_of)
        return self

    def fit_build(
        self,
        X: pd.DataFrame | Sequence[Mapping[str, Any]],
        *,
        actions: pd.DataFrame | None = None,
        as_of: Any = None,
    ) -> FeatureMatrix:
        """Fit, and return the training rows' features that fitting computed anyway."""
        batch = self._to_batch(X, actions, as_of)
        self.levels_ = {
            f.name: self._learn_levels(f, batch.columns.get(f.name, []))
            for f in self.spec.feature_fields
            if isinstance(f, CategoricalField)
        }
        self._index_levels()
        self.features_ = self._describe_features()
        matrix = self._encode(batch)
        self.reference_ = _reference_stats(matrix.values, self.features_)
        self.fit_report_ = matrix.report.summary()
        self.n_features_in_ = len(self.spec.feature_fields)
        return matrix

    def transform(
        self,
        X: pd.DataFrame | Sequence[Mapping[str, Any]],
        *,
        actions: pd.DataFrame | None = None,
        as_of: Any = None,
    ) -> np.ndarray:
        matrix = self.build(X, actions=actions, as_of=as_of)
        summary = matrix.report.summary()
        if summary["unseen"] or summary["clipped"] or summary["unknown_action_types"]:
            log.info("feature build adjusted values: %s", summary)
        return matrix.values

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        self._check_fitted()
        return np.array([f.name for f in self.features_], dtype=object)

    # -- richer entry points ---------------------------------------------------------

    def build(
        self,
        X: pd.DataFrame | Sequence[Mapping[str, Any]],
        *,
        actions: pd.DataFrame | None = None,
        as_of: Any = None,
    ) -> FeatureMatrix:
        """Features plus the report of what was missing, unseen, clipped or ignored."""
        self._check_fitted()
        if actions is None and as_of is None and isinstance(X, list) and len(X) == 1:
            return self.build_one(X[0])  # the API's single lead: the one-lead path
        return self._encode(self._to_batch(X, actions, as_of))

    def build_one(self, lead: Mapping[str, Any]) -> FeatureMatrix:
        """One lead given as a dict (the API's shape): the same vector as a batch, faster.

        :mod:`features.one_lead` encodes it in plain Python (no per-field numpy calls);
        a lead it does not handle goes through the batch path, with the same result.
        """
        self._check_fitted()
        report = BuildReport(n_rows=1)
        try:
            values = self._one_lead().encode(lead, report)
        except BatchPathError:
            return self._encode(from_records(self.spec, [lead]))
        return FeatureMatrix(np.array([values], dtype=np.float64), self._names, report)

    def _one_lead(self) -> OneLead:
        if self._one is None:
            self._one = OneLead(self)
        return self._one

    # -- the rules, for features.one_lead ------------------------------------------------

    def field_missing_tokens(self, name: str) -> frozenset[str]:
        """Spellings that mean "no value" for one field (the spec's and the field's own)."""
        return self._field_missing[name]

    def field_sentinels(self, name: str) -> tuple[float, ...]:
        """Numbers that mean "no value" for one field (-1, 9999, ...)."""
        return self._field_sentinels[name]

    def category_coder(self, f: CategoricalField) -> Callable[[Any, int], int]:
        """``code(value, row)``: the level code of one raw value (k missing, k+1 unseen)."""
        codes = self._level_code[f.name]
        k = len(codes)
        memo = _bounded(self._code_cache[f.name])
        missing_tokens = self._field_missing[f.name]

        def code_of(v: Any, row: int) -> int:
            if not isinstance(v, str):
                # Only strings are cached: NaN, None and pd.NA must never share a key
                # with a string that prints like them.
                return self._code_of_scalar(f, v, row, codes)
            code = memo.get(v)
            if code is None:
                token = _clean_token(v, f, missing_tokens)
                code = k if token is None else codes.get(token, k + 1)
                memo[v] = code
            return code

        return code_of

    def shown_token(self, f: CategoricalField, value: Any) -> str:
        """How an unseen value is reported: its canonical token, never the raw text."""
        return str(_clean_token(value, f, self._field_missing[f.name]))

    def action_type_code(self, t: Any) -> int:
        """The code of an action type spelling, -1 when the spec does not track it."""
        code = self._type_cache.get(t) if isinstance(t, str) else None
        if code is None:
            token = normalise_token(t) if isinstance(t, str) else ""
            code = self._type_code.get(token, -1)
            if isinstance(t, str):
                _bounded(self._type_cache)[t] = code
        return code

    def to_dict(self) -> dict[str, Any]:
        """Everything fit learnt, as JSON-safe data: a model is stored without pickles."""
        self._check_fitted()
        return {
            "format": 1,
            "spec": self.spec.model_dump(mode="json"),
            "levels": self.levels_,
            "reference": self.reference_,
            "fit_report": self.fit_report_,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeadFeatureBuilder:
        if data.get("format") != 1:
            raise ValueError(f"unsupported feature builder format: {data.get('format')!r}")
        builder = cls(FeatureSpec.model_validate(data["spec"]))
        builder.levels_ = {k: list(v) for k, v in data["levels"].items()}
        builder._index_levels()
        builder.features_ = builder._describe_features()
        builder.reference_ = dict(data["reference"])
        builder.fit_report_ = dict(data["fit_report"])
        builder.n_features_in_ = len(builder.spec.feature_fields)
        return builder

    @property
    def categorical_indices_(self) -> list[int]:
        return [i for i, f in enumerate(self.features_) if f.kind == "categorical"]

    @property
    def monotone_constraints_(self) -> list[int]:
        return [f.monotone for f in self.features_]

    def categories_of(self, name: str) -> list[str]:
        """Levels of a categorical feature in code order, including the two explicit codes."""
        return [*self.levels_[name], MISSING_LEVEL, OTHER_LEVEL]

    # -- internals -------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "features_"):
            raise RuntimeError("LeadFeatureBuilder is not fitted: call fit() first")

    def _to_batch(
        self, X: pd.DataFrame | Sequence[Mapping[str, Any]], actions: Any, as_of: Any
    ) -> LeadBatch:
        if isinstance(X, pd.DataFrame):
            return from_frames(self.spec, X, actions, as_of)
        if actions is not None:
            raise ValueError("lead dicts carry their own 'actions'; pass actions= with tables")
        records = [X] if isinstance(X, Mapping) else list(X)
        return from_records(self.spec, records, default_as_of=as_of)

    def _learn_levels(self, f: CategoricalField, values: Column) -> list[str]:
        if f.levels is not None:
            return list(f.levels)
        missing = self._missing_tokens
        tokens = pd.Series([_clean_token(v, f, missing) for v in values])
        counts = tokens.dropna().value_counts()
        kept = counts[counts >= f.min_count]
        # Frequency order, ties by name: deterministic across runs and platforms.
        return sorted(kept.index, key=lambda t: (-int(kept[t]), t))

    @property
    def _missing_tokens(self) -> frozenset[str]:
        return frozenset(normalise_token(t) for t in self.spec.missing_tokens)

    def _index_levels(self) -> None:
        """Derive the lookup tables and the per-spelling caches that keep one lead fast.

        A CRM sends the same few spellings again and again; caching raw spelling → code
        skips normalisation after the first time. Caches are bounded (cleared when full)
        and rebuilt after unpickling, never stored.
        """
        self._missing = self._missing_tokens
        # Per field: the spec's spellings of "no value" plus the field's own, and its
        # numeric sentinels; derived once here, since one lead's path must stay fast.
        self._field_missing = {f.name: field_missing_tokens(self.spec, f) for f in self.spec.fields}
        self._field_sentinels = {f.name: missing_numbers(self.spec, f) for f in self.spec.fields}
        self._level_code = {
            name: {lvl: i for i, lvl in enumerate(levels)} for name, levels in self.levels_.items()
        }
        self._code_cache: dict[str, dict[Any, int]] = {name: {} for name in self.levels_}
        self._type_code: dict[str, int] = {}
        self._type_cache: dict[Any, int] = {}
        self._one = None
        if self.spec.actions is not None:
            self._type_code = {t.name: i for i, t in enumerate(self.spec.actions.types)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Lookup tables are derived; rebuild them after unpickling instead of storing them.
        self.__dict__.update(state)
        if hasattr(self, "levels_"):
            self._index_levels()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        derived_names = ("_missing", "_level_code", "_code_cache", "_type_code", "_type_cache")
        for derived in (*derived_names, "_one"):
            state.pop(derived, None)
        return state

    def _describe_features(self) -> list[FeatureInfo]:
        infos: list[FeatureInfo] = []
        for f in self.spec.feature_fields:
            kind: FeatureKind = f.kind
            mono = 0 if isinstance(f, CategoricalField) else _sign(f.direction)
            infos.append(FeatureInfo(f.name, f.name, kind, monotone=mono))
        acts = self.spec.actions
        if acts is not None:
            for t in acts.types:
                up = _sign(t.direction)
                infos += [
                    FeatureInfo(f"{t.name}_count_{w}d", t.name, "count", w, up)
                    for w in acts.windows_days
                ]
                infos.append(FeatureInfo(f"{t.name}_days_since_last", t.name, "recency", None, -up))
                infos.append(FeatureInfo(f"{t.name}_decayed", t.name, "decay", None, up))
            # Velocity rises with an action inside the second window, so adding a *recent*
            # action moves every activity feature the same way.
            act = _sign(acts.activity_direction)
            infos += [
                FeatureInfo(f"active_days_{w}d", "activity", "activity", w, act)
                for w in acts.windows_days
            ]
            infos += [
                FeatureInfo(f"actions_count_{w}d", "activity", "count", w, act)
                for w in acts.windows_days
            ]
            if len(acts.windows_days) > 1:
                infos.append(FeatureInfo("recent_velocity", "activity", "velocity", None, act))
        if self.spec.created_at_column:
            infos.append(FeatureInfo("lead_age_days", "lead_age", "age"))
        names = [i.name for i in infos]
        assert names[: len(self.spec.feature_fields)] == [f.name for f in self.spec.feature_fields]
        if acts is not None:
            assert names[len(self.spec.feature_fields) :][: len(aggregated_columns(self.spec))] == (
                aggregated_columns(self.spec)
            )
        return infos

    def _encode(self, batch: LeadBatch) -> FeatureMatrix:
        report = BuildReport(n_rows=batch.n)
        blocks = [self._encode_field(f, batch, report) for f in self.spec.feature_fields]
        if self.spec.actions is not None:
            if batch.has_events:
                blocks.append(self._action_features(batch, report))
            else:
                blocks.append(self._aggregated_features(batch))
        if self.spec.created_at_column:
            blocks.append(_lead_age(batch))
        values = np.column_stack(blocks) if blocks else np.empty((batch.n, 0))
        return FeatureMatrix(values.astype(np.float64, copy=False), list(self._names), report)

    @property
    def _names(self) -> list[str]:
        return [f.name for f in self.features_]

    def _encode_field(self, f: Any, batch: LeadBatch, report: BuildReport) -> np.ndarray:
        if f.name not in batch.columns:
            # A missing column in a table is the loader's error; in a dict it is a missing value.
            values: Column = [None] * batch.n
        else:
            values = batch.columns[f.name]
        if isinstance(f, CategoricalField):
            return self._encode_categorical(f, values, report)
        missing = self._field_missing[f.name]
        if isinstance(f, NumericField):
            return _encode_numeric(f, values, report, missing, self._field_sentinels[f.name])
        if isinstance(f, BooleanField):
            return _encode_boolean(f, values, report, missing)
        raise TypeError(f"field '{f.name}' of kind {f.kind} cannot be a feature")

    def _encode_categorical(
        self, f: CategoricalField, values: Column, report: BuildReport
    ) -> np.ndarray:
        k = len(self._level_code[f.name])
        missing_tokens = self._field_missing[f.name]
        out = _map_distinct(values, self.category_coder(f))
        report.missing[f.name] = int(np.count_nonzero(out == k))
        unseen = np.flatnonzero(out == k + 1)
        if unseen.size:
            if f.unseen == "error":
                raise FeatureError(f.name, unseen, "value is not one of the known levels")
            report.unseen_rows[f.name] = unseen
            raw = {values[int(i)] for i in unseen[:100]}
            report.unseen_values[f.name] = sorted(
                {str(_clean_token(v, f, missing_tokens)) for v in raw}
            )[:5]
        return out

    def _code_of_scalar(
        self, f: CategoricalField, v: Any, row: int, codes: Mapping[str, int]
    ) -> int:
        if _is_missing(v):
            return len(codes)
        if not isinstance(v, int | float | np.integer | np.floating | bool):
            raise FeatureError(f.name, [row], "value is not a single category")
        token = _clean_token(v, f, self._field_missing[f.name])
        return len(codes) if token is None else codes.get(token, len(codes) + 1)

    def _action_features(self, batch: LeadBatch, report: BuildReport) -> np.ndarray:
        acts = self.spec.actions
        assert acts is not None
        n, n_types = batch.n, len(acts.types)
        windows = np.asarray(acts.windows_days, dtype=np.float64)
        n_win = len(windows)
        type_code = self._type_codes(batch.event_type)
        age = (batch.as_of_ns[batch.event_row] - batch.event_ns) / DAY_NS
        known = type_code >= 0
        report.unknown_action_types = int(np.count_nonzero(~known))
        in_past = age >= 0
        report.actions_after_cutoff = int(np.count_nonzero(known & ~in_past))
        keep = known & in_past
        row, typ, age = batch.event_row[keep], type_code[keep], age[keep]
        cell = row * n_types + typ

        # Output laid out per lead as [type][count per window..., recency, decay] and
        # filled in place: events arrive grouped by lead, so every bincount below walks
        # memory in order (an index by window first would jump and be 4x slower).
        size = n * n_types
        per_type = np.empty((n, n_types, n_win + 2))
        for j, w in enumerate(windows):
            per_type[:, :, j] = np.bincount(cell[age < w], minlength=size).reshape(n, n_types)
        last = np.full(size, acts.recency_cap_days)
        np.minimum.at(last, cell, age)
        per_type[:, :, n_win] = last.reshape(n, n_types)
        weights = np.exp(age * (-_LN2 / acts.half_life_days))
        decayed = np.bincount(cell, weights=weights, minlength=size)
        per_type[:, :, n_win + 1] = decayed.reshape(n, n_types)
        totals = per_type[:, :, :n_win].sum(axis=1)
        active = _active_days(row, age, n, acts.windows_days)
        blocks = [per_type.reshape(n, n_types * (n_win + 2)), active, totals]
        if n_win > 1:
            velocity = totals[:, 1] / windows[1] - totals[:, -1] / windows[-1]
            blocks.append(velocity[:, None])
        return np.concatenate(blocks, axis=1)

    def _type_codes(self, raw: Column) -> np.ndarray:
        """Map action type strings to codes (-1 unknown), once per distinct spelling."""
        return _map_distinct(raw, lambda t, row: self.action_type_code(t)).astype(np.int64)

    def _aggregated_features(self, batch: LeadBatch) -> np.ndarray:
        """Pre-aggregated tables carry the action features as columns under their names."""
        names = aggregated_columns(self.spec)
        absent = [c for c in names if c not in batch.columns]
        if absent:
            raise FeatureError(
                absent[0],
                [],
                f"no actions were given and {len(absent)} pre-aggregated action columns are "
                "absent; pass an actions table or the aggregated columns",
            )
        out = np.column_stack([np.asarray(batch.columns[c], dtype=np.float64) for c in names])
        # Counts, days and decayed sums cannot be negative; velocity (recent rate minus
        # long-run rate) is negative whenever activity slows down.
        signed = np.array([n == "recent_velocity" for n in names])
        negative = np.flatnonzero(((out < 0) & ~signed).any(axis=1))
        if negative.size:
            col = names[int(np.flatnonzero((out[negative[0]] < 0) & ~signed)[0])]
            raise FeatureError(col, negative, "action aggregates cannot be negative")
        return out


def action_aggregates(
    spec: FeatureSpec, leads: pd.DataFrame, actions: pd.DataFrame, as_of: Any = None
) -> np.ndarray:
    """The pre-aggregated action columns (:func:`aggregated_columns` order) from events.

    Computed by the very code :meth:`LeadFeatureBuilder.build` runs on events, so a table
    aggregated elsewhere (per group of leads on Spark, training rows too) and then scored
    as pre-aggregated gives the builder's own features. Action features learn nothing in
    ``fit``, so no fitted builder is needed. ``leads`` are canonical (the loaders' output),
    one row per lead and cut-off; ``as_of`` as for ``build`` (or an ``as_of`` column).
    """
    if spec.actions is None:
        raise ValueError(f"spec '{spec.name}' declares no actions table")
    builder = LeadFeatureBuilder(spec)
    builder._type_code = {t.name: i for i, t in enumerate(spec.actions.types)}
    builder._type_cache = {}
    batch = from_frames(spec, leads, actions, as_of)
    return builder._action_features(batch, BuildReport(n_rows=batch.n))


_CACHE_LIMIT = 50_000
#: From this many values on, distinct values are found by pandas' C hash table first.
_FACTORIZE_FROM = 512


def _map_distinct(values: Column, code_of: Callable[[Any, int], int]) -> np.ndarray:
    """``code_of(value, row)`` once per distinct value, as a float array.

    A table column has a handful of distinct spellings among a million rows, so it is
    factorised in C and each distinct value coded once; one lead's few values go
    through the same ``code_of`` in a plain loop. Either way the codes are identical.
    If a distinct value is refused, the loop runs instead so the error names its rows.
    """
    if isinstance(values, np.ndarray) and len(values) >= _FACTORIZE_FROM:
        try:
            index, uniques = pd.factorize(values, use_na_sentinel=True)
            lookup = np.array([code_of(u, -1) for u in uniques] + [code_of(None, -1)], float)
        except (TypeError, FeatureError):
            pass  # unhashable or refused values: the loop below reports the rows
        else:
            return lookup[index]
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        out[i] = code_of(v, i)
    return out


def _bounded(cache: dict[Any, int]) -> dict[Any, int]:
    """Keep a spelling cache from growing without end on free-form input."""
    if len(cache) > _CACHE_LIMIT:
        cache.clear()
    return cache


def _sign(direction: Direction | None) -> int:
    return {Direction.INCREASING: 1, Direction.DECREASING: -1, None: 0}[direction]


def _is_missing(value: Any) -> bool:
    """None, NaN, NaT and pd.NA: every spelling of "no value" a table or a dict can hold."""
    return value is None or (not isinstance(value, str | list | dict) and bool(pd.isna(value)))


def _clean_token(value: Any, f: CategoricalField, missing_tokens: frozenset[str]) -> str | None:
    """Raw value → canonical token, or None when it means "no value"."""
    if _is_missing(value):
        return None
    token = normalise_token(str(value))
    if token in missing_tokens:
        return None
    return f.aliases.get(token, token)


def _encode_numeric(
    f: NumericField,
    values: Column,
    report: BuildReport,
    missing_tokens: frozenset[str],
    sentinels: tuple[float, ...] = (),
) -> np.ndarray:
    if not (isinstance(values, np.ndarray) and values.dtype.kind in "fiu"):
        booleans = [i for i, v in enumerate(values) if isinstance(v, bool | np.bool_)]
        if booleans:
            raise FeatureError(f.name, booleans, "value is a yes/no answer, not a number")
        values = [_numeric_value(v, missing_tokens) for v in values]
    try:
        out = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        bad = [i for i, v in enumerate(values) if not _is_number(v)]
        raise FeatureError(f.name, bad, "value is not a number") from None
    out[np.isinf(out)] = np.nan  # an infinite count or revenue is a broken export, not data
    if sentinels:  # a spec's numeric "no value" (-1, 9999) is missing, not a number
        out[np.isin(out, sentinels)] = np.nan
    missing = np.isnan(out)
    report.missing[f.name] = int(np.count_nonzero(missing))
    outside = np.flatnonzero(~missing & ((out < f.min) | (out > f.max)))
    if outside.size:
        if f.out_of_bounds == "error":
            raise FeatureError(f.name, outside, f"value outside [{f.min:g}, {f.max:g}] {f.unit}")
        np.clip(out, f.min, f.max, out=out, where=~missing)
        report.clipped_rows[f.name] = outside
    return out


def _numeric_value(v: Any, missing_tokens: frozenset[str]) -> Any:
    """Missing spellings become None (NaN); anything else goes to float() unchanged."""
    if isinstance(v, str):
        return None if normalise_token(v) in missing_tokens else v
    return None if _is_missing(v) else v


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return v is None
    return True


def _encode_boolean(
    f: BooleanField, values: Column, report: BuildReport, missing_tokens: frozenset[str]
) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        out = values.astype(np.float64, copy=True)
        bad = np.flatnonzero(~np.isnan(out) & (out != 0.0) & (out != 1.0))
    else:
        out = np.empty(len(values), dtype=np.float64)
        bad_rows: list[int] = []
        for i, v in enumerate(values):
            parsed = bool_value(v, missing_tokens)
            if parsed is None:
                bad_rows.append(i)
                parsed = np.nan
            out[i] = parsed
        bad = np.asarray(bad_rows, dtype=np.int64)
    if bad.size:
        raise FeatureError(f.name, bad, "value is not a yes/no answer")
    report.missing[f.name] = int(np.count_nonzero(np.isnan(out)))
    return out


def bool_value(v: Any, missing_tokens: frozenset[str]) -> float | None:
    """1.0/0.0, NaN for "no value", None for something that is not a boolean at all."""
    if isinstance(v, list | dict):
        return None
    if _is_missing(v):
        return np.nan
    if isinstance(v, bool | np.bool_):
        return float(v)
    if isinstance(v, int | float | np.integer | np.floating) and v in (0, 1):
        return float(v)
    if isinstance(v, str):
        token = normalise_token(v)
        if token in missing_tokens:
            return np.nan
        return _BOOL_TOKENS.get(token)
    return None


def _active_days(row: np.ndarray, age: np.ndarray, n: int, windows: list[int]) -> np.ndarray:
    """Distinct days with any action, per window; one bincount over (lead, day)."""
    horizon = windows[-1]
    day = age.astype(np.int64)
    inside = day < horizon
    present = np.bincount(row[inside] * horizon + day[inside], minlength=n * horizon) > 0
    by_lead = present.reshape(n, horizon)
    return np.column_stack([np.count_nonzero(by_lead[:, :w], axis=1) for w in windows]).astype(
        np.float64
    )


def _lead_age(batch: LeadBatch) -> np.ndarray:
    out = np.full((batch.n, 1), np.nan)
    if batch.created_ns is not None:
        known = (batch.created_ns != NAT) & (batch.as_of_ns != NAT)
        out[known, 0] = (batch.as_of_ns[known] - batch.created_ns[known]) / DAY_NS
    return out


def _reference_stats(
    values: np.ndarray, features: list[FeatureInfo]
) -> dict[str, dict[str, float]]:
    """Per-feature reference statistics from the training data, for drift and explanations."""
    stats: dict[str, dict[str, float]] = {}
    for j, info in enumerate(features):
        col = values[:, j]
        finite = col[~np.isnan(col)]
        stats[info.name] = {
            "missing_rate": float(1 - finite.size / max(col.size, 1)),
            "mean": float(finite.mean()) if finite.size else float("nan"),
            "p50": float(np.median(finite)) if finite.size else float("nan"),
            "p90": float(np.quantile(finite, 0.9)) if finite.size else float("nan"),
        }
    return stats
