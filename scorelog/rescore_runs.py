"""Rescore runs: one at a time across processes, and a record of each.

The service may rescore periodically in every worker process of every replica; only one
run may go at once (:func:`exclusive`: an advisory lock, never a wait), and a run is
skipped when another started within the interval (:func:`last_started`).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Engine, func, insert, select, text, update

from scorelog.engine import write_turn, writer
from scorelog.event_tables import RescoreRun

# Any fixed 64-bit key distinct from the migration lock's.
_PG_RESCORE_LOCK = 0x7265_7363_6F72_6531  # "rescore1"


@contextmanager
def exclusive(engine: Engine) -> Iterator[bool]:
    """Yields True while this process holds the rescore lock, False when another does."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database:
        with open(f"{database}.rescore-lock", "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    with engine.connect() as connection:  # the session holds the lock until unlocked
        held = bool(
            connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": _PG_RESCORE_LOCK}
            ).scalar_one()
        )
        connection.commit()
        try:
            yield held
        finally:
            if held:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_RESCORE_LOCK}
                )
                connection.commit()


def start_run(engine: Engine, started_at: datetime) -> int:
    with write_turn(engine), writer(engine).begin() as connection:
        values = {"started_at": started_at, "open_leads": 0, "rescored": 0, "events": 0}
        result = connection.execute(insert(RescoreRun).values(**values))
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def finish_run(
    engine: Engine, run_id: int, finished_at: datetime, open_leads: int, rescored: int, events: int
) -> None:
    with write_turn(engine), writer(engine).begin() as connection:
        connection.execute(
            update(RescoreRun)
            .where(RescoreRun.id == run_id)
            .values(
                finished_at=finished_at, open_leads=open_leads, rescored=rescored, events=events
            )
        )


def last_started(engine: Engine) -> datetime | None:
    with engine.connect() as connection:
        value = connection.execute(select(func.max(RescoreRun.started_at))).scalar_one_or_none()
    return value
