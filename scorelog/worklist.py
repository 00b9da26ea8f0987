"""What sales should work on: uncontacted leads by score, and what moved since yesterday.

* :func:`uncontacted` walks ``lead_latest`` in rank order (its index) and skips leads with
  any contact outcome (a point lookup each in the outcomes' lead index), so filling a
  day's capacity of a few hundred leads costs the same with 1 M leads as with 1,000;
* :func:`movements` reads the events of a period (their time index) and folds each lead's
  into one movement: where it started, where it ended, why.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Exists, exists, select

from scorelog.events import CREATED, Event, events_since
from scorelog.rows import RANKED_COLUMNS, RankedLead
from scorelog.tables import LeadLatest, Outcome, ScoreInput

#: Outcomes that mean someone already talked to the lead (or it is decided).
CONTACT_OUTCOMES = ("contacted", "qualified", "disqualified", "won", "lost")
#: Outcomes that close a lead: it is not re-scored, and no longer worked.
CLOSED_OUTCOMES = ("won", "lost", "disqualified")


def _has_outcome(kinds: Sequence[str]) -> Exists:
    return exists().where(Outcome.lead_id == LeadLatest.lead_id, Outcome.outcome.in_(kinds))


def uncontacted(engine: Engine, limit: int) -> list[RankedLead]:
    """The best ``limit`` leads nobody has contacted yet, highest score first."""
    query = (
        select(*RANKED_COLUMNS)
        .where(~_has_outcome(CONTACT_OUTCOMES))
        .order_by(LeadLatest.score.desc(), LeadLatest.lead_id)
        .limit(limit)
    )
    with engine.connect() as connection:
        return [RankedLead(*row) for row in connection.execute(query)]


def assign(leads: Sequence[RankedLead], capacities: dict[str, int]) -> dict[str, list[RankedLead]]:
    """Deal the leads out in rank order, one per rep in turn, until each rep is full.

    Dealing (rather than the first rep taking the top 15) gives every rep a fair share of
    the best leads; a rep whose capacity is reached is skipped.
    """
    lists: dict[str, list[RankedLead]] = {rep: [] for rep in capacities}
    open_reps = [rep for rep, capacity in capacities.items() if capacity > 0]
    turn = 0
    for lead in leads:
        if not open_reps:
            break
        rep = open_reps[turn % len(open_reps)]
        lists[rep].append(lead)
        if len(lists[rep]) >= capacities[rep]:
            open_reps.remove(rep)
        else:
            turn += 1
    return lists


@dataclass(frozen=True)
class Movement:
    """One lead's change over a period: first state before it, last state after it."""

    lead_id: str
    before: dict[str, Any] | None
    after: dict[str, Any]
    reasons: list[dict[str, Any]]
    new: bool

    @property
    def change(self) -> int:
        return int(self.after["score"]) - (int(self.before["score"]) if self.before else 0)


def movements(
    engine: Engine, since: datetime, limit: int = 20
) -> tuple[list[Movement], list[Movement]]:
    """(new or rising, cooling) since ``since``: the best new or risen leads first, and the
    leads that fell furthest first."""
    folded: dict[str, list[Event]] = {}
    for event in events_since(engine, since):
        folded.setdefault(event.lead_id, []).append(event)
    rising, cooling = [], []
    for lead_id, events in folded.items():
        first, last = events[0], events[-1]
        moved = Movement(lead_id, first.before, last.after, last.reasons, CREATED in first.types)
        if moved.new or _better(moved.before, moved.after):
            rising.append(moved)
        elif moved.before is not None and _better(moved.after, moved.before):
            cooling.append(moved)
    rising.sort(key=lambda m: (-int(m.after["score"]), m.lead_id))
    cooling.sort(key=lambda m: (m.change, m.lead_id))
    return rising[:limit], cooling[:limit]


_GRADE = {"A": 0, "B": 1, "C": 2, "D": 3}


def _better(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """A higher score, or the same score with a better grade."""
    if old is None:
        return True
    if new["score"] != old["score"]:
        return bool(new["score"] > old["score"])
    return _GRADE.get(new["grade"], 9) < _GRADE.get(old["grade"], 9)


@dataclass(frozen=True)
class OpenLead:
    """A lead not yet won, lost or disqualified: its latest score and the input scored."""

    lead_id: str
    score: int
    grade: str
    category: str
    acquisition_source: str | None
    packed: bytes | None  # None: the input was never stored, or retention pruned it


def iter_open_leads(engine: Engine, batch_size: int = 5000) -> Iterator[list[OpenLead]]:
    """Every open lead, in lead id order, ``batch_size`` at a time (keyset pages)."""
    closed = _has_outcome(CLOSED_OUTCOMES)
    after = ""
    while True:
        query = (
            select(
                LeadLatest.lead_id,
                LeadLatest.score,
                LeadLatest.grade,
                LeadLatest.category,
                LeadLatest.acquisition_source,
                ScoreInput.packed,
            )
            .outerjoin(ScoreInput, ScoreInput.score_id == LeadLatest.score_id)
            .where(~closed, LeadLatest.lead_id > after)
            .order_by(LeadLatest.lead_id)
            .limit(batch_size)
        )
        with engine.connect() as connection:
            page = [OpenLead(*row) for row in connection.execute(query)]
        if not page:
            return
        yield page
        after = page[-1].lead_id
