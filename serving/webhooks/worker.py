"""The delivery worker: a background thread that empties the outbox into webhooks.

Off the request path by construction: scoring only writes event rows in its own
transaction; this thread (one per service process, ``LEADSCORE_WEBHOOKS_WORKER``) reads
them, so a slow or failing receiver costs scoring nothing but a little disk. The loop:

1. record the results of finished tries (one transaction for all of them);
2. fan new events out to the subscriptions (``scorelog.webhooks.fan_out``);
3. lease as many due deliveries as there are free senders, and hand each to a sender
   thread (``webhook_concurrency`` of them), which POSTs it (:mod:`.sender`);
4. sleep until a score commit wrote events, a try finished, or ``webhook_poll_s`` passed.

Delivery is at least once: a try whose result could not be recorded (the process was
killed, the database was down) is tried again when its lease expires, with the same
``webhook-id``. Receivers deduplicate by that id.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from scorelog.engine import describe_error
from scorelog.events import Event
from scorelog.webhooks import (
    DEAD,
    DELIVERED,
    Backoff,
    Claim,
    Result,
    cycle,
    message_id,
    open_counts,
    prune_delivered,
    record_results,
)
from serving import metrics
from serving.settings import ServingSettings
from serving.webhooks import sender, signing

log = logging.getLogger(__name__)
GAUGE_REFRESH_S = 5.0
PRUNE_EVERY_S = 600.0


@dataclass(frozen=True)
class WorkerConfig:
    timeouts: sender.Timeouts
    backoff: Backoff
    concurrency: int
    poll_s: float
    allow_internal: bool
    keep_delivered: timedelta = timedelta(days=7)

    @property
    def lease_s(self) -> float:
        """Longer than any try can take (its deadline, twice, and time to record the
        result), so a live sender's row is never taken from it."""
        return 2 * self.timeouts.deadline_s + 5

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> WorkerConfig:
        return cls(
            timeouts=sender.Timeouts(
                settings.webhook_connect_timeout_s,
                settings.webhook_read_timeout_s,
                settings.webhook_attempt_timeout_s,
            ),
            backoff=Backoff(
                settings.webhook_backoff_s,
                settings.webhook_backoff_max_s,
                settings.webhook_max_attempts,
            ),
            concurrency=settings.webhook_concurrency,
            poll_s=settings.webhook_poll_s,
            allow_internal=settings.webhooks_allow_internal,
            keep_delivered=timedelta(days=settings.webhook_keep_delivered_days),
        )


def payload(event: Event) -> bytes:
    """The body every subscriber gets: the Standard Webhooks envelope around the event."""
    envelope = {
        "type": event.type,
        "timestamp": event.occurred_at.isoformat(),
        "data": event.to_dict(),
    }
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=True).encode("ascii")


class DeliveryWorker:
    def __init__(self, engine: Engine, config: WorkerConfig) -> None:
        self._engine = engine
        self._config = config
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._gauges: set[tuple[str, str]] = set()
        self._gauges_at = 0.0
        self._pruned_at = time.monotonic()

    def wake(self) -> None:
        """Look at the outbox now (called after a commit that wrote events)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the delivery worker is already started")
        self._thread = threading.Thread(target=self._run, name="webhook-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; wait for tries in flight (bounded by their timeouts) and record them."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        pool = ThreadPoolExecutor(self._config.concurrency, thread_name_prefix="webhook-send")
        try:
            while not self._stopping.is_set():
                self._wake.wait(self._config.poll_s)
                self._wake.clear()
                try:
                    self._step(pool)
                except Exception as exc:  # the database is down, or a bug: retry later
                    log.warning("webhook delivery step failed: %s", describe_error(exc))
                    self._stopping.wait(self._config.poll_s)
        finally:
            pool.shutdown(wait=True)
            try:
                self._record()
            except Exception as exc:
                log.warning("recording the last webhook tries failed: %s", describe_error(exc))

    def _step(self, pool: ThreadPoolExecutor) -> None:
        done = self._finished()
        self._in_flight -= len(done)
        turn = cycle(
            self._engine,
            done,
            self._config.backoff,
            claim_limit=self._config.concurrency - self._in_flight,
            lease_s=self._config.lease_s,
        )
        self._count(done, turn.statuses)
        for claim in turn.claims:
            self._in_flight += 1
            pool.submit(self._try, claim)
        if time.monotonic() - self._gauges_at > GAUGE_REFRESH_S:
            self._refresh_gauges()
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            prune_delivered(self._engine, datetime.now(UTC) - self._config.keep_delivered)

    def _try(self, claim: Claim) -> None:
        try:
            body = payload(claim.event)
            headers = signing.headers(claim.secret, message_id(claim.event.id), body)
            attempt = sender.post(
                claim.url,
                body,
                headers,
                timeouts=self._config.timeouts,
                allow_internal=self._config.allow_internal,
            )
        except Exception as exc:  # never lose the slot: a bug counts as a failed try
            log.exception("a webhook try failed unexpectedly")
            attempt = sender.Attempt(False, None, f"internal error ({type(exc).__name__})")
        self._results.put(
            Result(
                delivery_id=claim.delivery_id,
                subscription_id=claim.subscription_id,
                ok=attempt.ok,
                status=attempt.status,
                error=attempt.error,
                at=datetime.now(UTC),
                event_at=claim.event.occurred_at,
            )
        )
        self._wake.set()

    def _finished(self) -> list[Result]:
        done: list[Result] = []
        while True:
            try:
                done.append(self._results.get_nowait())
            except queue.Empty:
                return done

    def _record(self) -> None:
        """Store what is left when stopping (no new claims)."""
        done = self._finished()
        if done:
            self._in_flight -= len(done)
            self._count(done, record_results(self._engine, done, self._config.backoff))

    def _count(self, done: list[Result], statuses: list[str]) -> None:
        for result, status in zip(done, statuses, strict=True):
            outcome = "delivered" if status == DELIVERED else "dead" if status == DEAD else "failed"
            metrics.WEBHOOK_TRIES.labels(result.subscription_id, outcome).inc()
            if status == DELIVERED:
                latency = (result.at - result.event_at).total_seconds()
                metrics.WEBHOOK_LATENCY.observe(max(0.0, latency))
            if status == DEAD:
                log.warning(
                    "webhook delivery %d of subscription %s is dead after its last try (%s)",
                    result.delivery_id,
                    result.subscription_id,
                    result.error,
                )

    def _refresh_gauges(self) -> None:
        self._gauges_at = time.monotonic()
        counts = open_counts(self._engine)
        for key in self._gauges - set(counts):
            metrics.WEBHOOK_OPEN.labels(*key).set(0)
        for key, value in counts.items():
            metrics.WEBHOOK_OPEN.labels(*key).set(value)
        self._gauges = self._gauges | set(counts)
