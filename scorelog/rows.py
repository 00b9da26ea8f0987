"""The rows of the scoring log and the vocabulary they are checked against.

A :class:`ScoreRow` or :class:`OutcomeRow` refuses a value the database would refuse
(too long for its column, a naive time, a reason outside the vocabulary) when it is
built, so one bad request never reaches the group commit it would share with others.
The writer and the queries are in :mod:`scorelog.store`.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase

from scorelog.tables import LeadLatest, Outcome, Score

# What POST /v1/outcomes accepts; the store keeps whatever it is given.
OUTCOME_KINDS = frozenset(
    {"stage_reached", "contacted", "qualified", "disqualified", "won", "lost"}
)
#: Why sales rejected a lead: the one vocabulary of the API, the board and training.
RejectionReason = Literal["not_a_fit", "bad_timing", "wrong_contact", "duplicate", "spam"]
REJECTION_REASONS: tuple[str, ...] = get_args(RejectionReason)
#: The outcomes a rejection reason may come with.
REASONED_OUTCOMES = frozenset({"disqualified", "lost"})


def _text_limits(model: type[DeclarativeBase]) -> dict[str, int]:
    """Column name → VARCHAR length, so the checks below cannot drift from the schema."""
    return {
        column.name: column.type.length
        for column in model.__table__.columns
        if isinstance(column.type, String) and column.type.length
    }


_SCORE_LIMITS = _text_limits(Score)
_OUTCOME_LIMITS = _text_limits(Outcome)


def _check_text(row: object, limits: Mapping[str, int], nullable: frozenset[str]) -> None:
    """PostgreSQL rejects an over-long value (failing the whole group); SQLite would keep it."""
    for name, limit in limits.items():
        value = getattr(row, name, None)
        if value is None and name in nullable:
            continue
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, not {type(value).__name__}")
        if len(value) > limit:
            raise ValueError(f"{name} is {len(value)} characters long; at most {limit}")


def _check_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, not {value!r}")


class OutcomeConflictError(ValueError):
    """An idempotency key came back with a different outcome than the one stored."""

    def __init__(self, key: str) -> None:
        super().__init__("this idempotency key was already used for a different outcome")
        self.key = key


@dataclass(frozen=True)
class ScoreRow:
    """One lead's score as returned to the caller: one row of ``scores``.

    Checked and normalised on construction (numpy numbers become ``int``/``float``), so a
    row that the database would refuse fails its own request, not the commit group.
    """

    request_id: str
    lead_id: str
    scored_at: datetime
    model_name: str
    model_version: str
    probabilities: dict[str, float]
    score: int
    grade: str
    category: str
    reasons: dict[str, Any]
    warnings: list[str]
    acquisition_source: str | None
    spec_version: str | None = None
    policy_version: str | None = None
    input: bytes | None = None
    """The packed model input (:func:`scorelog.inputs.pack_input`); None keeps none."""
    display: Mapping[str, str] | None = None
    """The lead's display fields (name, company, ...): kept apart from ``scores`` by a
    listener (``scorelog.display``), never in the log itself."""

    def __post_init__(self) -> None:
        _check_text(
            self, _SCORE_LIMITS, frozenset({"acquisition_source", "spec_version", "policy_version"})
        )
        if self.input is not None and not isinstance(self.input, bytes):
            raise TypeError(f"input must be bytes, not {type(self.input).__name__}")
        _check_aware(self.scored_at, "scored_at")
        score = operator.index(self.score)
        if not 0 <= score <= 100:
            raise ValueError(f"score must be within 0-100, not {score}")
        # Frozen, so normalise through object.__setattr__ (the dataclass-documented way).
        object.__setattr__(self, "score", score)
        probabilities = {str(k): float(v) for k, v in self.probabilities.items()}
        object.__setattr__(self, "probabilities", probabilities)
        object.__setattr__(self, "warnings", [str(w) for w in self.warnings])
        json.dumps(self.reasons)  # TypeError now rather than inside someone else's commit


@dataclass(frozen=True)
class OutcomeRow:
    """What really happened to a lead; ``idempotency_key`` makes a retried call harmless."""

    lead_id: str
    outcome: str
    stage: str | None
    occurred_at: datetime
    note: str | None
    idempotency_key: str
    reason: str | None = None
    """Why sales rejected the lead: one of :data:`REJECTION_REASONS`, with
    :data:`REASONED_OUTCOMES` only."""

    def __post_init__(self) -> None:
        _check_text(self, _OUTCOME_LIMITS, frozenset({"stage", "note", "reason"}))
        _check_aware(self.occurred_at, "occurred_at")
        if self.reason is not None:
            if self.reason not in REJECTION_REASONS:
                raise ValueError(f"reason must be one of {', '.join(REJECTION_REASONS)}")
            if self.outcome not in REASONED_OUTCOMES:
                raise ValueError("a reason goes with a disqualified or lost outcome only")


@dataclass(frozen=True)
class RankedLead:
    """A lead's latest score, as the sales board lists it."""

    lead_id: str
    score: int
    grade: str
    category: str
    acquisition_source: str | None
    scored_at: datetime
    model_version: str


#: The ``lead_latest`` columns a :class:`RankedLead` is built from, in its field order.
RANKED_COLUMNS = (
    LeadLatest.lead_id,
    LeadLatest.score,
    LeadLatest.grade,
    LeadLatest.category,
    LeadLatest.acquisition_source,
    LeadLatest.scored_at,
    LeadLatest.model_version,
)
