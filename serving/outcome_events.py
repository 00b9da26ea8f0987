"""Recording an outcome once: what counts as "the same event" when a call is retried.

The store refuses an idempotency key that comes back with a different outcome
(:class:`~scorelog.rows.OutcomeConflictError`). The API is more precise about what
"different" means: the note is a comment on the event, not part of it (the derived key
leaves it out for that reason), so a retry that only corrects the note is the same
event, already recorded, not a conflict. The stored event, not the retried one, is
what the caller is told about.
"""

from __future__ import annotations

from datetime import datetime

from scorelog.history import lead_first_score
from scorelog.rows import OutcomeConflictError, OutcomeRow
from scorelog.store import ScoreLog


def stored_event(log: ScoreLog, row: OutcomeRow) -> OutcomeRow | None:
    """The outcome stored under ``row``'s idempotency key for the same lead, if any."""
    for stored in log.outcomes(row.lead_id):
        if stored.idempotency_key == row.idempotency_key:
            return stored
    return None


def same_event(a: OutcomeRow, b: OutcomeRow) -> bool:
    """Everything but the note (and the time it was recorded) is the event.

    The rejection reason is part of it: it decides how the outcome is used as a label.
    """
    return (a.lead_id, a.outcome, a.stage, a.occurred_at, a.reason) == (
        b.lead_id,
        b.outcome,
        b.stage,
        b.occurred_at,
        b.reason,
    )


class BeforeLeadCreatedError(ValueError):
    """The outcome is dated before the lead existed (its ``created_at`` as scored)."""


def check_timeline(log: ScoreLog, row: OutcomeRow, created_at_key: str | None) -> bool:
    """Whether the lead was ever scored; raises :class:`BeforeLeadCreatedError` when the
    outcome is dated before the lead's creation time as its first stored input says.

    An outcome for a lead never scored, or dated before its first score, is kept: the
    CRM's events and its scoring calls arrive in any order (a lead can be qualified
    before anyone asked for its score, a score can be retried after a 503), and training
    from the log only ever joins outcomes that come *after* a score, so such an outcome
    can neither leak into nor be lost from the labels. An outcome before the lead was
    created is a different matter: no real event can be, so it is refused.
    Blocking: call it from a thread.
    """
    first = lead_first_score(log.engine, row.lead_id)
    if first is None:
        return False
    created = (first.record or {}).get(created_at_key) if created_at_key else None
    if isinstance(created, datetime) and row.occurred_at < created:
        raise BeforeLeadCreatedError(row.lead_id)
    return True


def record(log: ScoreLog, row: OutcomeRow) -> bool:
    """Store ``row``; False when this event was already recorded (even with another note).

    Raises :class:`OutcomeConflictError` when its key names a different event.
    Blocking: call it from a thread.
    """
    try:
        return log.record_outcome(row)
    except OutcomeConflictError:
        stored = stored_event(log, row)
        if stored is not None and same_event(stored, row):
            return False
        raise
