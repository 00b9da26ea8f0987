"""Score-change events: found and written inside the transaction that stores the scores.

The group-commit writer (:class:`~scorelog.store.ScoreLog`) calls
:meth:`ChangeEvents.before_latest` with the rows of a commit group after inserting them
into ``scores`` and before ``lead_latest`` is updated. At that moment ``lead_latest``
still holds each lead's previous score, so comparing is one indexed read per group (not
per request), and the event rows commit or roll back with the scores: an acknowledged
score that changed a lead's category always has its event, and an event never describes
a score that was not stored. That is the transactional outbox; delivering the events
(webhooks) reads them afterwards, at its own pace, off the request path.

What makes an event (its ``types``, several at once when several hold):

* ``lead.created``: the lead's first score;
* ``lead.category_changed`` / ``lead.grade_changed``;
* ``lead.score_changed``: the score moved by at least ``min_score_change`` points
  (0, the default, turns this kind off).

A re-score that changes none of these writes nothing. A score older than the lead's
newest (a late arrival) changes nothing either: it never becomes the lead's state.

Each event carries ``before`` and ``after`` (score, grade, category, score id, time,
model version) and the reasons whose effect changed most between the two scores, in
words: "demo requests: 2 in the last 7 days (latest 1 day ago): new since the last
score".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from scorelog.event_tables import ScoreEvent
from scorelog.rows import ScoreRow
from scorelog.tables import LeadLatest, Score

log = logging.getLogger(__name__)

CREATED = "lead.created"
CATEGORY_CHANGED = "lead.category_changed"
GRADE_CHANGED = "lead.grade_changed"
SCORE_CHANGED = "lead.score_changed"
#: Every event type, in the order an event lists them (most telling first).
EVENT_TYPES: tuple[str, ...] = (CATEGORY_CHANGED, GRADE_CHANGED, SCORE_CHANGED, CREATED)
#: How many changed reasons an event carries.
CHANGED_REASONS = 3
_GRADE_RANK = {"A": 0, "B": 1, "C": 2, "D": 3}
# SQLite allows 32,766 bound parameters per statement; stay far below it.
_IN_CHUNK = 500


@dataclass(frozen=True)
class LeadState:
    """What an event says a lead was (or became)."""

    score_id: int
    score: int
    grade: str
    category: str
    scored_at: datetime
    model_version: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "score_id": self.score_id,
            "score": self.score,
            "grade": self.grade,
            "category": self.category,
            "scored_at": self.scored_at.isoformat(),
            "model_version": self.model_version,
        }


@dataclass(frozen=True)
class Event:
    """One stored event, as the API and the webhook payload show it."""

    id: int
    lead_id: str
    occurred_at: datetime
    types: list[str]
    direction: str
    before: dict[str, Any] | None
    after: dict[str, Any]
    reasons: list[dict[str, Any]]

    @property
    def type(self) -> str:
        """The most telling of the event's types (the Standard Webhooks ``type``)."""
        return self.types[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "lead_id": self.lead_id,
            "occurred_at": self.occurred_at.isoformat(),
            "types": self.types,
            "direction": self.direction,
            "before": self.before,
            "after": self.after,
            "reasons": self.reasons,
        }


def change_types(before: LeadState | None, after: LeadState, min_score_change: int) -> list[str]:
    """The event types this transition makes (empty: nobody needs to hear about it)."""
    if before is None:
        return [CREATED]
    types = []
    if before.category != after.category:
        types.append(CATEGORY_CHANGED)
    if before.grade != after.grade:
        types.append(GRADE_CHANGED)
    if min_score_change and abs(after.score - before.score) >= min_score_change:
        types.append(SCORE_CHANGED)
    return types


def direction(before: LeadState | None, after: LeadState) -> str:
    """'up', 'down' or 'same': by score, then by grade (A is best)."""
    if before is None:
        return "new"
    if after.score != before.score:
        return "up" if after.score > before.score else "down"
    rank_before = _GRADE_RANK.get(before.grade, 9)
    rank_after = _GRADE_RANK.get(after.grade, 9)
    if rank_after != rank_before:
        return "up" if rank_after < rank_before else "down"
    return "same"


def reason_changes(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], limit: int = CHANGED_REASONS
) -> list[dict[str, Any]]:
    """The reasons whose effect changed most between two scores, said in words.

    For a first score (``before`` None) they are its strongest reasons as they are.
    Reasons are compared by field; a reason absent from one side had an effect too small
    to be listed there (taken as 0). Stored reasons come from whichever model version
    wrote them, so malformed entries are skipped rather than trusted.
    """
    old, new = _effects(before or {}), _effects(after)
    if before is None:  # a first score: its strongest reasons, nothing to compare with
        ranked = sorted(new.items(), key=lambda item: -abs(item[1][0]))[:limit]
        return [
            {"field": name, "text": text, "effect_before": 0.0, "effect_after": round(effect, 4)}
            for name, (effect, text) in ranked
        ]
    changes: list[tuple[float, dict[str, Any]]] = []
    for name in dict.fromkeys([*new, *old]):
        was, now = old.get(name), new.get(name)
        effect_before = was[0] if was else 0.0
        effect_after = now[0] if now else 0.0
        delta = effect_after - effect_before
        if abs(delta) < 1e-9:
            continue
        text = (now or was or (0.0, name))[1]
        change = {
            "field": name,
            "text": f"{text}: {_how(was, now, delta)}",
            "effect_before": round(effect_before, 4),
            "effect_after": round(effect_after, 4),
        }
        changes.append((abs(delta), change))
    changes.sort(key=lambda c: -c[0])  # stable: equal changes keep the newer reasons first
    return [change for _, change in changes[:limit]]


def _how(was: tuple[float, str] | None, now: tuple[float, str] | None, delta: float) -> str:
    if was is None:
        return "new since the last score"
    if now is None:
        return "no longer among the reasons"
    if (was[0] > 0) != (now[0] > 0):
        return "now counts for the lead" if now[0] > 0 else "now counts against the lead"
    return "counts more than before" if abs(now[0]) > abs(was[0]) else "counts less than before"


def _effects(reasons: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
    out: dict[str, tuple[float, str]] = {}
    for kind in ("positive", "negative"):
        items = reasons.get(kind) if isinstance(reasons, Mapping) else None
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, Mapping):
                continue
            field, effect, text = item.get("field"), item.get("effect"), item.get("text")
            if isinstance(field, str) and isinstance(effect, int | float) and isinstance(text, str):
                out.setdefault(field, (float(effect), text))
    return out


class ChangeEvents:
    """The scoring log's write listener that turns score changes into outbox events.

    ``on_commit`` callbacks run after a commit that wrote events (the delivery worker's
    wake-up, so a change reaches a receiver in milliseconds instead of a poll interval).
    """

    def __init__(
        self,
        *,
        min_score_change: int = 0,
        on_commit: Sequence[Callable[[], None]] = (),
    ) -> None:
        if not 0 <= min_score_change <= 100:
            raise ValueError("min_score_change must be within 0-100")
        self.min_score_change = min_score_change
        self._on_commit = list(on_commit)
        self._wrote = False
        self.events_written = 0

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._on_commit.append(callback)

    def before_latest(self, connection: Connection, rows: Sequence[tuple[ScoreRow, int]]) -> None:
        """Write the events of ``rows`` (inserted into ``scores``, not yet in lead_latest)."""
        state = _latest_states(connection, sorted({row.lead_id for row, _ in rows}))
        found: list[tuple[str, LeadState | None, LeadState, ScoreRow, list[str]]] = []
        for row, score_id in sorted(rows, key=lambda r: (r[0].scored_at, r[1])):
            after = _state_of(row, score_id)
            before = state.get(row.lead_id)
            if before is not None and (after.scored_at, score_id) <= (
                before.scored_at,
                before.score_id,
            ):
                continue  # a late arrival: it does not become the lead's state
            state[row.lead_id] = after
            types = change_types(before, after, self.min_score_change)
            if types:
                found.append((row.lead_id, before, after, row, types))
        if not found:
            return
        reasons_of = _stored_reasons(
            connection, [b.score_id for _, b, _, _, _ in found if b is not None]
        )
        reasons_of.update({after.score_id: row.reasons for _, _, after, row, _ in found})
        values = [
            {
                "lead_id": lead_id,
                "score_id": after.score_id,
                "occurred_at": after.scored_at,
                "types": [t for t in EVENT_TYPES if t in types],
                "direction": direction(before, after),
                "before": before.to_dict() if before else None,
                "after": after.to_dict(),
                "reasons": reason_changes(
                    reasons_of.get(before.score_id) if before else None, row.reasons
                ),
                "fanned_out": False,
            }
            for lead_id, before, after, row, types in found
        ]
        connection.execute(insert(ScoreEvent), values)
        self.events_written += len(values)
        self._wrote = True

    def committed(self) -> None:
        """After COMMIT: wake whoever delivers events, if this commit wrote any."""
        if not self._wrote:
            return
        self._wrote = False
        for callback in self._on_commit:
            try:
                callback()
            except Exception:  # a listener's bug must not fail the writer's requests
                log.exception("an event listener failed")

    def rolled_back(self) -> None:
        self._wrote = False


def _state_of(row: ScoreRow, score_id: int) -> LeadState:
    return LeadState(score_id, row.score, row.grade, row.category, row.scored_at, row.model_version)


def _latest_states(connection: Connection, leads: list[str]) -> dict[str, LeadState]:
    states: dict[str, LeadState] = {}
    t = LeadLatest
    for chunk in _chunks(leads):
        query = select(
            t.lead_id, t.score_id, t.score, t.grade, t.category, t.scored_at, t.model_version
        ).where(t.lead_id.in_(chunk))
        for lead_id, *values in connection.execute(query):
            states[lead_id] = LeadState(*values)
    return states


def _stored_reasons(connection: Connection, score_ids: list[int]) -> dict[int, Any]:
    found: dict[int, Any] = {}
    for chunk in _chunks(score_ids):
        query = select(Score.id, Score.reasons).where(Score.id.in_(chunk))
        found.update({score_id: reasons for score_id, reasons in connection.execute(query)})
    return found


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


# --------------------------------------------------------------------------- reading


def _event(row: Any) -> Event:
    return Event(
        id=row.id,
        lead_id=row.lead_id,
        occurred_at=row.occurred_at,
        types=list(row.types),
        direction=row.direction,
        before=row.before,
        after=row.after,
        reasons=list(row.reasons),
    )


_EVENT_COLUMNS = [
    ScoreEvent.id,
    ScoreEvent.lead_id,
    ScoreEvent.occurred_at,
    ScoreEvent.types,
    ScoreEvent.direction,
    ScoreEvent.before,
    ScoreEvent.after,
    ScoreEvent.reasons,
]


def lead_events(engine: Engine, lead_id: str, limit: int = 50) -> list[Event]:
    """A lead's events, oldest first (ids increase with time)."""
    query = (
        select(*_EVENT_COLUMNS)
        .where(ScoreEvent.lead_id == lead_id)
        .order_by(ScoreEvent.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        return [_event(r) for r in connection.execute(query)][::-1]


def events_since(engine: Engine, since: datetime, limit: int = 10_000) -> list[Event]:
    """Events that happened at or after ``since``, oldest first (at most ``limit``)."""
    query = (
        select(*_EVENT_COLUMNS)
        .where(ScoreEvent.occurred_at >= since)
        .order_by(ScoreEvent.occurred_at, ScoreEvent.id)
        .limit(limit)
    )
    with engine.connect() as connection:
        return [_event(r) for r in connection.execute(query)]


def events_by_id(connection: Connection, ids: Sequence[int]) -> dict[int, Event]:
    """These events by id (on the caller's connection, e.g. inside its transaction)."""
    found: dict[int, Event] = {}
    for chunk in _chunks(list(ids)):
        query = select(*_EVENT_COLUMNS).where(ScoreEvent.id.in_(chunk))
        found.update({r.id: _event(r) for r in connection.execute(query)})
    return found
