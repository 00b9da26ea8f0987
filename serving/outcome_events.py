"""Recording an outcome once: what counts as "the same event" when a call is retried.

The store refuses an idempotency key that comes back with a different outcome
(:class:`~scorelog.store.OutcomeConflictError`). The API is more precise about what
"different" means: the note is a comment on the event, not part of it (the derived key
leaves it out for that reason), so a retry that only corrects the note is the same
event, already recorded, not a conflict. The stored event, not the retried one, is
what the caller is told about.
"""

from __future__ import annotations

from scorelog.store import OutcomeConflictError, OutcomeRow, ScoreLog


def stored_event(log: ScoreLog, row: OutcomeRow) -> OutcomeRow | None:
    """The outcome stored under ``row``'s idempotency key for the same lead, if any."""
    for stored in log.outcomes(row.lead_id):
        if stored.idempotency_key == row.idempotency_key:
            return stored
    return None


def same_event(a: OutcomeRow, b: OutcomeRow) -> bool:
    """Everything but the note (and the time it was recorded) is the event."""
    return (a.lead_id, a.outcome, a.stage, a.occurred_at) == (
        b.lead_id,
        b.outcome,
        b.stage,
        b.occurred_at,
    )


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
