"""Retention of stored inputs: old inputs go, their scores and all outcomes stay.

A score's input is what makes it replayable and usable as a training row; after the
retention period (a serving setting) it is deleted, in bounded batches so a large
backlog never holds the write lock for long. The scores themselves (the audit trail's
answers) and the outcomes are never pruned.

Inputs are walked in score id order, which is commit order: ids are drawn when a group
commits, moments after its scores' ``scored_at``, so "the oldest inputs" are the lowest
ids. A batch deletes the run of lowest ids that are past the cut-off and stops at the
first one that is not, so each batch is one index range, however large the log; the
highest id deleted is kept in ``retention_marks`` so the audit endpoint can say "pruned
by retention" rather than "never stored".
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, bindparam, delete, select, text

from scorelog.engine import write_turn, writer
from scorelog.history import INPUTS_MARK
from scorelog.tables import RetentionMark, Score, ScoreInput

_ADVANCE_MARK = text(
    "INSERT INTO retention_marks (name, through_id) VALUES (:name, :through_id) "
    "ON CONFLICT (name) DO UPDATE SET through_id = excluded.through_id "
    "WHERE excluded.through_id > retention_marks.through_id"
).bindparams(
    bindparam("name", type_=RetentionMark.__table__.c.name.type),
    bindparam("through_id", type_=RetentionMark.__table__.c.through_id.type),
)


def prune_inputs(engine: Engine, *, older_than: datetime, batch_size: int = 5000) -> int:
    """Delete up to ``batch_size`` inputs of scores made before ``older_than``; how many.

    One short write transaction. Call it again while it returns ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    oldest = (
        select(ScoreInput.score_id, Score.scored_at)
        .join(Score, Score.id == ScoreInput.score_id)
        .order_by(ScoreInput.score_id)
        .limit(batch_size)
    )
    with write_turn(engine), writer(engine).begin() as connection:
        last = None
        pruned = 0
        for score_id, scored_at in connection.execute(oldest).all():
            if scored_at >= older_than:
                break
            last, pruned = score_id, pruned + 1
        if last is None:
            return 0
        connection.execute(delete(ScoreInput).where(ScoreInput.score_id <= last))
        connection.execute(_ADVANCE_MARK, {"name": INPUTS_MARK, "through_id": last})
    return pruned
