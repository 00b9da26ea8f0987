"""Reading the scoring log by column: a million scores in seconds, for monitoring and training.

:func:`scorelog.history.iter_scores` gives one :class:`~scorelog.history.LoggedScore` per
row, every column parsed - right for replay, far too slow for a million rows (measured:
~80 µs a row). These readers ask the database for exactly the columns a statistic needs,
let it do the parsing it does in C (``json_extract`` / ``->>`` for a probability, the
epoch of a timestamp, ``GROUP BY`` for counts) and hand back plain lists:

* :func:`score_columns` - id, lead, time (epoch µs) and the stage probabilities;
* :func:`score_ids` - only the ids (to sample inputs from a window);
* :func:`count_by` - scores per category or per model version;
* :func:`inputs_of` - the stored inputs of chosen scores, unpacked.

All of them select ``since <= scored_at < until`` through the ``(scored_at, id)`` index, on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import BigInteger, ColumnElement, Engine, Select, cast, func, select

from scorelog.inputs import InputFormatError, unpack_input
from scorelog.tables import Score, ScoreInput

#: Ids per ``IN (...)`` query: well under SQLite's 32,766 bound parameters.
IDS_PER_QUERY = 5000


@dataclass(frozen=True)
class ScoreColumnLists:
    """Scores of a window, one list per column, in ``(scored_at, id)`` order."""

    score_id: list[int]
    lead_id: list[str]
    scored_us: list[int]  # microseconds since the epoch, UTC (the log's own precision)
    probabilities: list[list[float | None]]  # one list per stage asked for


def score_columns(
    engine: Engine, stages: Sequence[str], since: datetime | None, until: datetime | None
) -> ScoreColumnLists:
    """Id, lead, time and each stage's probability of every score in the window."""
    probability = [Score.probabilities[stage].as_float() for stage in stages]
    query = _window(select(Score.id, Score.lead_id, _epoch(engine), *probability), since, until)
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(Score.scored_at, Score.id)).all()
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in range(3 + len(stages))]
    return ScoreColumnLists(
        score_id=list(columns[0]),
        lead_id=list(columns[1]),
        scored_us=[int(v) for v in columns[2]],
        probabilities=[list(c) for c in columns[3:]],
    )


def score_ids(engine: Engine, since: datetime | None, until: datetime | None) -> list[int]:
    """The ids of every score in the window."""
    with engine.connect() as connection:
        return list(connection.execute(_window(select(Score.id), since, until)).scalars())


def count_by(
    engine: Engine,
    column: Literal["category", "model_version"],
    since: datetime | None,
    until: datetime | None,
) -> dict[str, int]:
    """Scores per value of ``column`` in the window (counted by the database)."""
    target = Score.category if column == "category" else Score.model_version
    query = _window(select(target, func.count()), since, until).group_by(target)
    with engine.connect() as connection:
        return {str(value): int(n) for value, n in connection.execute(query)}


def inputs_of(engine: Engine, score_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The stored inputs of these scores; ids without a readable input are left out."""
    out: dict[int, dict[str, Any]] = {}
    ids = [int(i) for i in score_ids]
    with engine.connect() as connection:
        for lo in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[lo : lo + IDS_PER_QUERY]
            query = select(ScoreInput.score_id, ScoreInput.packed).where(
                ScoreInput.score_id.in_(chunk)
            )
            for score_id, packed in connection.execute(query):
                try:
                    out[int(score_id)] = unpack_input(bytes(packed))
                except InputFormatError:
                    continue  # the caller counts what is missing
    return out


def _window(query: Select[Any], since: datetime | None, until: datetime | None) -> Select[Any]:
    if since is not None:
        query = query.where(Score.scored_at >= since)
    if until is not None:
        query = query.where(Score.scored_at < until)
    return query


def _epoch(engine: Engine) -> ColumnElement[int]:
    """``scored_at`` as whole microseconds since the epoch, computed by the database.

    Exact on both backends: SQLite's ``julianday`` rounds to the millisecond, so its
    fixed-width text (``YYYY-MM-DD HH:MM:SS.ffffff``, see ``scorelog.tables``) is read as
    whole seconds plus the six digits of the fraction.
    """
    if engine.dialect.name == "sqlite":
        seconds = cast(func.strftime("%s", Score.scored_at), BigInteger)
        fraction = cast(func.substr(Score.scored_at, 21, 6), BigInteger)
        return seconds * 1_000_000 + fraction
    return cast(func.extract("epoch", Score.scored_at) * 1_000_000, BigInteger)
