"""Whether this worker should get traffic, and why not: the truth /readyz tells.

Ready means a request sent now would be scored *and stored*: a model is loaded, the
scoring log can commit, and the worker is not shutting down. Each part is tracked
where it is known (the model store, :func:`watch_storage`, the SIGTERM handler) and
put into words here, in our own words only: no exception text, host or path reaches
an unauthenticated probe.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from scorelog.engine import describe_error, migrate, probe

log = logging.getLogger(__name__)

STORAGE_DOWN = "The scoring log cannot commit right now, so scores cannot be stored."
STORAGE_NOT_MIGRATED = "The scoring log has not been reached since start-up."
SHUTTING_DOWN = "The service is shutting down."


class Readiness:
    """The storage and shutdown parts of readiness (the model store keeps its own)."""

    def __init__(self) -> None:
        self.migrated = False
        self.storage_problem: str | None = STORAGE_NOT_MIGRATED
        self.draining = False

    def storage_ok(self) -> None:
        if self.migrated:
            self.storage_problem = None

    def storage_failed(self) -> None:
        self.storage_problem = STORAGE_DOWN if self.migrated else STORAGE_NOT_MIGRATED

    def problems(self) -> list[str]:
        found = [SHUTTING_DOWN] if self.draining else []
        if self.storage_problem:
            found.append(self.storage_problem)
        return found


async def watch_storage(
    engine: Engine, readiness: Readiness, every_s: float, checked: asyncio.Event
) -> None:
    """Bring the schema up (retrying until the database answers), then keep checking.

    A service started while its database is down comes up not ready and becomes ready
    by itself once the migration succeeds; afterwards a probe every ``every_s`` seconds
    flips readiness both ways. Errors are logged once per change, without their text
    when it could hold data (:func:`describe_error`). ``checked`` is set after the first
    attempt, so start-up can wait for it (a healthy database is ready at once).
    """
    failing = False
    while True:
        try:
            if not readiness.migrated:
                await run_in_threadpool(migrate, engine)
                readiness.migrated = True
            else:
                await run_in_threadpool(probe, engine)
            readiness.storage_ok()
            if failing:
                log.warning("the scoring log is reachable again")
            failing = False
        except Exception as exc:  # any failure means "cannot commit now"; keep watching
            readiness.storage_failed()
            if not failing:
                log.warning("the scoring log cannot be used: %s", describe_error(exc))
            failing = True
        checked.set()
        await asyncio.sleep(every_s)
