"""One columnar shape for every way a lead arrives.

Training reads two tables, batch scoring reads a file, the API receives one JSON
object. Each is turned into a :class:`LeadBatch` (plain numpy arrays and lists, no
pandas) and from then on a single code path computes the features. That is how an
online vector and an offline vector for the same lead are guaranteed identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from features.spec import BooleanField, FeatureSpec, action_output_names

Column = Sequence[Any] | np.ndarray
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
NAT = np.iinfo(np.int64).min  # numpy's NaT as int64, used for "no timestamp"

#: Keys of a lead dict that are not profile fields.
ACTIONS_KEY = "actions"
AS_OF_KEY = "as_of"
ACTION_TYPE_KEY = "type"
ACTION_TIME_KEY = "at"


class FeatureError(ValueError):
    """A lead cannot be turned into features; names the field and the rows, never the value."""

    def __init__(self, field: str, rows: Sequence[int] | np.ndarray, problem: str) -> None:
        self.field = field
        self.rows = [int(r) for r in rows]
        self.problem = problem
        shown = ", ".join(str(r) for r in self.rows[:5])
        more = f" and {len(self.rows) - 5} more" if len(self.rows) > 5 else ""
        super().__init__(f"field '{field}': {problem} (rows {shown}{more})")


@dataclass
class LeadBatch:
    """Leads as columns plus their actions as flat arrays.

    ``event_row`` says which lead (row) each action belongs to, so one lead with
    several snapshots simply appears as several rows sharing copies of its actions.
    Timestamps are int64 nanoseconds since the epoch (UTC); ``NAT`` marks none.
    """

    n: int
    columns: Mapping[str, Column]
    as_of_ns: np.ndarray
    created_ns: np.ndarray | None
    event_row: np.ndarray
    event_type: Sequence[Any] | np.ndarray
    event_ns: np.ndarray
    has_events: bool


def to_ns(value: Any, *, ceil: bool = False) -> int:
    """Convert one timestamp (datetime, ISO string, pandas Timestamp) to UTC nanoseconds.

    Naive timestamps are taken as UTC: CRMs export UTC far more often than local time,
    and guessing a zone would silently shift every recency feature. Precision is one
    microsecond on every path (Python's datetime has no finer unit), so a table and a
    dict of the same lead always agree. Cut-offs round down and actions (``ceil``) round
    up, so an action even a nanosecond after its cut-off can never count.
    """
    if value is None:
        return NAT
    if isinstance(value, str):
        # datetime truncates digits past the microsecond, which would move a late action
        # onto its cut-off; pandas keeps them (and is 10x slower, so only when needed).
        value = pd.Timestamp(value) if _sub_micro(value) else datetime.fromisoformat(value)
    if isinstance(value, pd.Timestamp):
        if value is pd.NaT:
            return NAT
        ts = value if value.tzinfo else value.tz_localize("UTC")
        return _to_micro(int(ts.value), ceil)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return ((dt - _EPOCH) // _MICRO) * 1000
    raise TypeError(f"not a timestamp: {type(value).__name__}")


def _sub_micro(text: str) -> bool:
    """Whether an ISO timestamp has more than six fractional digits."""
    dot = text.find(".", 19)
    if dot < 0:
        return False
    end = dot + 1
    while end < len(text) and text[end].isdigit():
        end += 1
    return end - dot - 1 > 6


def _to_micro(ns: Any, ceil: bool) -> Any:
    return -(-ns // 1000) * 1000 if ceil else ns // 1000 * 1000


def series_to_ns(values: Any, *, ceil: bool = False) -> np.ndarray:
    """Vectorised :func:`to_ns` for a column; missing values become ``NAT``."""
    parsed = pd.to_datetime(pd.Series(values), utc=True, format="ISO8601")
    ns = parsed.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return np.where(ns == NAT, NAT, _to_micro(ns, ceil))


def stamp(value: Any, field: str, row: int, *, ceil: bool = False) -> int:
    """:func:`to_ns` for one value of a lead dict; a bad value names its field and row."""
    try:
        return to_ns(value, ceil=ceil)
    except (TypeError, ValueError):
        raise FeatureError(field, [row], "not an ISO-8601 timestamp") from None


def _as_of_array(as_of: Any, n: int, leads: pd.DataFrame | None) -> np.ndarray:
    """Resolve the as-of time per row: an explicit value, an ``as_of`` column, or now."""
    if as_of is None and leads is not None and AS_OF_KEY in leads.columns:
        return series_to_ns(leads[AS_OF_KEY])
    if as_of is None:
        return np.full(n, to_ns(datetime.now(UTC)), dtype=np.int64)
    if isinstance(as_of, pd.Series | np.ndarray | list):
        arr = series_to_ns(as_of)
        if len(arr) != n:
            raise ValueError(f"as_of has {len(arr)} values for {n} leads")
        return arr
    return np.full(n, to_ns(as_of), dtype=np.int64)


def from_frames(
    spec: FeatureSpec,
    leads: pd.DataFrame,
    actions: pd.DataFrame | None = None,
    as_of: Any = None,
) -> LeadBatch:
    """Batch shape: a leads table (canonical column names) and an optional actions table.

    A lead id may appear on several rows (snapshots at different ``as_of`` times); each
    row then receives its own copy of the lead's actions and the cut-off filters them.
    """
    n = len(leads)
    wanted = [f.name for f in spec.feature_fields] + aggregated_columns(spec)
    columns: dict[str, Column] = {c: leads[c].to_numpy() for c in wanted if c in leads.columns}
    created = None
    if spec.created_at_column and spec.created_at_column in leads.columns:
        created = series_to_ns(leads[spec.created_at_column])
    if actions is None or spec.actions is None:
        empty = np.zeros(0, dtype=np.int64)
        return LeadBatch(
            n, columns, _as_of_array(as_of, n, leads), created, empty, [], empty, False
        )
    rows, action_pos = _rows_of_actions(leads[spec.id_column], actions["lead_id"])
    return LeadBatch(
        n=n,
        columns=columns,
        as_of_ns=_as_of_array(as_of, n, leads),
        created_ns=created,
        event_row=rows,
        event_type=actions["action_type"].to_numpy()[action_pos],
        event_ns=series_to_ns(actions["occurred_at"], ceil=True).take(action_pos),
        has_events=True,
    )


def _rows_of_actions(lead_ids: pd.Series, action_ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Pair every action with every row of its lead, keeping the actions' original order.

    Returns (row index, action index) arrays. Actions of leads absent from the table are
    dropped here; the loaders refuse such files before this point.
    """
    codes, uniques = pd.factorize(lead_ids)
    order = np.argsort(codes, kind="stable")
    rows_per_lead = np.bincount(codes, minlength=len(uniques))
    starts = np.concatenate(([0], np.cumsum(rows_per_lead)[:-1]))
    action_codes = pd.Index(uniques).get_indexer(action_ids)
    keep = np.flatnonzero(action_codes >= 0)
    kept_codes = action_codes[keep]
    reps = rows_per_lead[kept_codes]
    action_pos = np.repeat(keep, reps)
    first = np.repeat(starts[kept_codes], reps)
    offset = np.arange(len(action_pos)) - np.repeat(np.cumsum(reps) - reps, reps)
    rows = order[first + offset]
    if np.all(reps == 1):
        return rows, action_pos
    # Several snapshots per lead: group by row so each row's actions keep their order.
    regroup = np.lexsort((action_pos, rows))
    return rows[regroup], action_pos[regroup]


def from_records(
    spec: FeatureSpec, records: Sequence[Mapping[str, Any]], default_as_of: Any = None
) -> LeadBatch:
    """Online shape: leads as dicts, each with its own ``actions`` list.

    A lead dict carries its profile fields by canonical name, an optional ``as_of``
    (default: ``default_as_of``, else now) and ``actions`` as
    ``[{"type": ..., "at": ...}]``, or instead every pre-aggregated action column.
    Omitted profile fields are missing values, reported like any other.
    """
    n = len(records)
    names = [f.name for f in spec.feature_fields]
    pre_aggregated = _pre_aggregated(spec, records)
    if pre_aggregated:
        names += aggregated_columns(spec)
    columns: dict[str, Column] = {name: [r.get(name) for r in records] for name in names}
    now = None
    as_of = np.empty(n, dtype=np.int64)
    for i, r in enumerate(records):
        value = r.get(AS_OF_KEY, default_as_of)
        if value is None:
            now = now if now is not None else to_ns(datetime.now(UTC))
            as_of[i] = now
        else:
            as_of[i] = stamp(value, AS_OF_KEY, i)
    created = None
    if spec.created_at_column:
        key = spec.created_at_column
        created = np.fromiter(
            (stamp(r.get(key), key, i) for i, r in enumerate(records)), np.int64, count=n
        )
    has_events = spec.actions is not None and not pre_aggregated
    rows: list[int] = []
    types: list[Any] = []
    stamps: list[int] = []
    if has_events:
        for i, r in enumerate(records):
            for action in r.get(ACTIONS_KEY) or ():
                rows.append(i)
                types.append(action[ACTION_TYPE_KEY])
                stamps.append(stamp(action[ACTION_TIME_KEY], ACTIONS_KEY, i, ceil=True))
    return LeadBatch(
        n=n,
        columns=columns,
        as_of_ns=as_of,
        created_ns=created,
        event_row=np.array(rows, dtype=np.int64),
        event_type=types,
        event_ns=np.array(stamps, dtype=np.int64),
        has_events=has_events,
    )


def _pre_aggregated(spec: FeatureSpec, records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the dicts carry aggregates instead of actions; refuses a mix of both shapes.

    Half an aggregate set would score the absent half as missing, and a batch mixing
    shapes would silently drop some leads' actions: both are refused by name.
    """
    aggregated = _aggregated_set(spec)
    shapes = [not aggregated.isdisjoint(r) for r in records]
    if not any(shapes):
        return False
    for i, r in enumerate(records):
        if ACTIONS_KEY in r:
            raise FeatureError(ACTIONS_KEY, [i], "a lead carries either actions or aggregates")
        absent = aggregated.difference(r)
        if absent:
            raise FeatureError(
                min(absent), [i], f"{len(absent)} pre-aggregated action columns are absent"
            )
    return True


_AGGREGATED: dict[int, tuple[FeatureSpec, frozenset[str]]] = {}


def _aggregated_set(spec: FeatureSpec) -> frozenset[str]:
    """Cached set of aggregated column names; one lead must not rebuild it per call."""
    hit = _AGGREGATED.get(id(spec))
    if hit is None or hit[0] is not spec:
        hit = (spec, frozenset(aggregated_columns(spec)))
        _AGGREGATED[id(spec)] = hit
    return hit[1]


def aggregated_columns(spec: FeatureSpec) -> list[str]:
    """Names of the action features a pre-aggregated table must carry instead of events."""
    return [n for n in action_output_names(spec) if n != "lead_age_days"]


def frames_to_records(
    spec: FeatureSpec,
    leads: pd.DataFrame,
    actions: pd.DataFrame | None = None,
    as_of: Any = None,
) -> list[dict[str, Any]]:
    """The inverse of :func:`from_records`: table rows as the API's lead dicts.

    Used for input examples, golden rows and the online/offline equality test, so the
    dict shape is defined next to the code that reads it.
    """
    names = [spec.id_column] + [f.name for f in spec.feature_fields]
    if spec.created_at_column:
        names.append(spec.created_at_column)
    if actions is None:
        names += [c for c in aggregated_columns(spec) if c in leads.columns]
    as_of_ns = _as_of_array(as_of, len(leads), leads)
    grouped: dict[Any, list[dict[str, str]]] = {}
    if actions is not None and spec.actions is not None:
        stamps = series_to_ns(actions["occurred_at"])
        for lead, kind, ns in zip(actions["lead_id"], actions["action_type"], stamps, strict=True):
            grouped.setdefault(lead, []).append({ACTION_TYPE_KEY: kind, ACTION_TIME_KEY: _iso(ns)})
    present = [c for c in names if c in leads.columns]
    booleans = {f.name for f in spec.feature_fields if isinstance(f, BooleanField)}
    records = []
    for i, row in enumerate(leads[present].itertuples(index=False)):
        record = {k: _plain(v) for k, v in zip(present, row, strict=True)}
        for name in booleans.intersection(record):
            if record[name] is not None:
                record[name] = bool(record[name])
        record[AS_OF_KEY] = _iso(int(as_of_ns[i]))
        if actions is not None and spec.actions is not None:
            record[ACTIONS_KEY] = grouped.get(record[spec.id_column], [])
        records.append(record)
    return records


def _iso(ns: int) -> str:
    """UTC ISO-8601 with a Z; second precision when there is nothing finer."""
    ts = pd.Timestamp(ns, unit="ns", tz="UTC")
    text = ts.isoformat().replace("+00:00", "Z")
    return text


def _plain(value: Any) -> Any:
    """numpy scalars and NaN/NaT → JSON-friendly Python values (None for missing)."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return _iso(int(value.value))
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
