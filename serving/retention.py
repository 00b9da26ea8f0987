"""The service prunes stored inputs past their retention, a bounded batch at a time.

Each worker runs :func:`prune_periodically`: every ``input_prune_every_s`` it deletes
inputs of scores older than ``input_retention_days``, one transaction of at most
``input_prune_batch`` inputs after another with a pause in between, so a large backlog
(the first run after a retention change) never holds the write lock for long and the
scoring path keeps committing in between. Several workers doing it at once is harmless:
the deletes are idempotent. A database outage skips a round; the next one catches up.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from scorelog.engine import describe_error
from scorelog.retention import prune_inputs
from serving.settings import ServingSettings

log = logging.getLogger(__name__)

#: Pause between two batches of one round: the writer gets the lock in between.
BATCH_PAUSE_S = 0.05


async def prune_once(engine: Engine, settings: ServingSettings, now: datetime | None = None) -> int:
    """Prune every input past retention now, batch by batch; how many were deleted."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.input_retention_days)
    batch = settings.input_prune_batch
    total = 0
    while True:
        pruned = await run_in_threadpool(prune_inputs, engine, older_than=cutoff, batch_size=batch)
        total += pruned
        if pruned < batch:
            return total
        await asyncio.sleep(BATCH_PAUSE_S)


async def prune_periodically(engine: Engine, settings: ServingSettings) -> None:
    """Run :func:`prune_once` every ``input_prune_every_s`` until cancelled."""
    while True:
        try:
            pruned = await prune_once(engine, settings)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.warning("pruning stored inputs failed (retried later): %s", describe_error(exc))
        else:
            if pruned:
                log.info(
                    "pruned %d stored inputs older than %d days",
                    pruned,
                    settings.input_retention_days,
                )
        await asyncio.sleep(settings.input_prune_every_s)
