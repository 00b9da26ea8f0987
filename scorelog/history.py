"""Reading the scoring log back: for replay, training from the log, monitoring, rescoring.

The writer (:mod:`scorelog.store`) is tuned for the API's hot path; this module is the read
side everyone else shares, with names fixed by the project's coordination contract:

* :func:`iter_scores` walks the log in time order, a page at a time (keyset pagination on
  ``(scored_at, id)``, an index), so a million scores cost a page of memory, never all;
* :func:`iter_outcomes` does the same for outcomes, in the order they happened;
* :func:`get_score` / :func:`get_score_detail` read one score with its stored input.

A score's ``record`` is the lead dict :func:`scorelog.inputs.unpack_input` gives back, ready
for ``ReadinessModel.score_many``; it is None when the input was never stored (scores
logged before revision 0002) or retention pruned it (:func:`input_state` says which).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, Engine, Row, Select, func, literal, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from scorelog.inputs import InputFormatError, unpack_input
from scorelog.tables import Outcome, RetentionMark, Score, ScoreInput

log = logging.getLogger(__name__)

#: The retention mark of stored inputs (``retention_marks.name``).
INPUTS_MARK = "score_inputs"

InputState = Literal["stored", "pruned", "not_stored", "damaged"]


@dataclass(frozen=True)
class LoggedScore:
    """One logged score: what was answered, by which model and policy, from which input."""

    score_id: int
    lead_id: str
    scored_at: datetime
    model_name: str
    model_version: str
    spec_version: str | None
    policy_version: str | None
    probabilities: dict[str, float]
    score: int
    grade: str
    category: str
    record: dict[str, Any] | None
    """The model input as scored; None when not stored or pruned by retention."""


@dataclass(frozen=True)
class LoggedOutcome:
    """One recorded outcome (a label): what happened to a lead, when, and why."""

    lead_id: str
    outcome: str
    stage: str | None
    reason: str | None
    occurred_at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class ScoreDetail:
    """Everything the audit endpoint shows about one score."""

    score: LoggedScore
    request_id: str
    reasons: dict[str, Any]
    warnings: list[str]
    acquisition_source: str | None
    input_state: InputState


_SCORE_COLUMNS = (
    Score.id,
    Score.lead_id,
    Score.scored_at,
    Score.model_name,
    Score.model_version,
    Score.spec_version,
    Score.policy_version,
    Score.probabilities,
    Score.score,
    Score.grade,
    Score.category,
)


def iter_scores(
    engine: Engine,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    with_inputs: bool = True,
    batch_size: int = 5000,
) -> Iterator[list[LoggedScore]]:
    """Scores with ``since <= scored_at < until``, oldest first, ``batch_size`` at a time.

    Each page is its own short query that starts where the last one ended, so neither
    the database nor this process holds more than a page, and writers are never blocked
    for the length of a long read. ``with_inputs=False`` skips the inputs (``record`` is
    then None) for readers that need only the answers, such as score drift.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    after: tuple[datetime, int] | None = None
    while True:
        query = _scores_query(with_inputs).order_by(Score.scored_at, Score.id).limit(batch_size)
        if since is not None:
            query = query.where(Score.scored_at >= since)
        if until is not None:
            query = query.where(Score.scored_at < until)
        if after is not None:
            query = query.where(_after(Score.scored_at, Score.id, after))
        with engine.connect() as connection:
            rows = connection.execute(query).all()
        if not rows:
            return
        yield [_logged(row, with_inputs)[0] for row in rows]
        if len(rows) < batch_size:
            return
        after = (rows[-1].scored_at, rows[-1].id)


def iter_outcomes(
    engine: Engine,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_size: int = 5000,
) -> Iterator[LoggedOutcome]:
    """Outcomes with ``since <= occurred_at < until``, in the order they happened."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    after: tuple[datetime, int] | None = None
    columns = (
        Outcome.id,
        Outcome.lead_id,
        Outcome.outcome,
        Outcome.stage,
        Outcome.reason,
        Outcome.occurred_at,
        Outcome.recorded_at,
    )
    while True:
        query = select(*columns).order_by(Outcome.occurred_at, Outcome.id).limit(batch_size)
        if since is not None:
            query = query.where(Outcome.occurred_at >= since)
        if until is not None:
            query = query.where(Outcome.occurred_at < until)
        if after is not None:
            query = query.where(_after(Outcome.occurred_at, Outcome.id, after))
        with engine.connect() as connection:
            rows = connection.execute(query).all()
        for row in rows:
            yield LoggedOutcome(*row[1:])
        if len(rows) < batch_size:
            return
        after = (rows[-1].occurred_at, rows[-1].id)


def get_score(engine: Engine, score_id: int) -> LoggedScore | None:
    """One score with its input (None if there is no such score)."""
    detail = get_score_detail(engine, score_id)
    return None if detail is None else detail.score


def get_score_detail(engine: Engine, score_id: int) -> ScoreDetail | None:
    """One score, its reasons and warnings, and what became of its input."""
    query = _scores_query(True).add_columns(
        Score.request_id, Score.reasons, Score.warnings, Score.acquisition_source
    )
    with engine.connect() as connection:
        row = connection.execute(query.where(Score.id == score_id)).first()
        if row is None:
            return None
        logged, state = _logged(row, True)
        if state == "not_stored" and row.spec_version is not None:
            through = _pruned_through(connection)
            if through is not None and score_id <= through:
                state = "pruned"
    return ScoreDetail(
        score=logged,
        request_id=row.request_id,
        reasons=row.reasons,
        warnings=list(row.warnings),
        acquisition_source=row.acquisition_source,
        input_state=state,
    )


def pruned_through(engine: Engine) -> int | None:
    """The highest score id whose input retention deleted (None: nothing pruned yet)."""
    with engine.connect() as connection:
        return _pruned_through(connection)


def _pruned_through(connection: Connection) -> int | None:
    query = select(RetentionMark.through_id).where(RetentionMark.name == INPUTS_MARK)
    value = connection.execute(query).scalar_one_or_none()
    return None if value is None else int(value)


def lead_first_score(engine: Engine, lead_id: str) -> LoggedScore | None:
    """A lead's earliest score with its input, or None when the lead was never scored."""
    query = (
        _scores_query(True)
        .where(Score.lead_id == lead_id)
        .order_by(Score.scored_at, Score.id)
        .limit(1)
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return None if row is None else _logged(row, True)[0]


def count_scores(engine: Engine) -> int:
    """How many scores the log holds (all time)."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Score)).scalar_one())


def _after(
    time: InstrumentedAttribute[datetime],
    key: InstrumentedAttribute[int],
    last: tuple[datetime, int],
) -> ColumnElement[bool]:
    """``(time, key) > last``: the keyset condition, a range of the ``(time, id)`` index.

    The bound values carry the columns' types, so a timestamp is compared as stored
    (naive UTC text on SQLite).
    """
    bound = tuple_(literal(last[0], time.type), literal(last[1], key.type))
    return tuple_(time, key) > bound


def _scores_query(with_inputs: bool) -> Select[Any]:
    if not with_inputs:
        return select(*_SCORE_COLUMNS)
    return select(*_SCORE_COLUMNS, ScoreInput.packed).outerjoin(
        ScoreInput, ScoreInput.score_id == Score.id
    )


def _logged(row: Row[Any], with_inputs: bool) -> tuple[LoggedScore, InputState]:
    record: dict[str, Any] | None = None
    state: InputState = "not_stored"
    packed = row.packed if with_inputs else None
    if packed is not None:
        try:
            record = unpack_input(bytes(packed))
            state = "stored"
        except InputFormatError as exc:
            log.warning("score %s: its stored input cannot be read: %s", row.id, exc)
            state = "damaged"
    score = LoggedScore(
        score_id=int(row.id),
        lead_id=row.lead_id,
        scored_at=row.scored_at,
        model_name=row.model_name,
        model_version=row.model_version,
        spec_version=row.spec_version,
        policy_version=row.policy_version,
        probabilities={str(k): float(v) for k, v in row.probabilities.items()},
        score=int(row.score),
        grade=row.grade,
        category=row.category,
        record=record,
    )
    return score, state
