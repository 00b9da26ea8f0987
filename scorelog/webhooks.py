"""Webhook subscriptions and the outbox's deliveries: storage only (no HTTP here).

The delivery worker (``serving.webhooks.worker``) drives these functions in a loop:

1. :func:`fan_out` turns new events into one ``pending`` delivery per matching
   subscription and marks the events fanned out, in one transaction. A subscription
   receives the events that happen after it was created.
2. :func:`claim_due` leases due deliveries (``pending``, ``next_attempt_at`` passed, no
   live lease): several worker processes never hold the same row, and the lease of a
   process that died mid-send expires, so the row is sent again (at least once).
3. :func:`record_results` stores what each try gave: ``delivered``, or a failure that
   schedules the next try after an exponential, jittered wait, or ``dead`` after the last
   allowed try. :func:`replay` gives dead deliveries a new round of tries, same event id.

Every write takes the scoring log's write turn (see :func:`scorelog.engine.write_turn`),
so on SQLite it queues with the score writer instead of spinning on the lock.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, delete, func, insert, or_, select, update

from scorelog.engine import write_turn, writer
from scorelog.event_tables import ScoreEvent, WebhookDelivery, WebhookSubscription
from scorelog.events import Event, events_by_id

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATUSES = (PENDING, DELIVERED, DEAD)
_FAN_OUT_BATCH = 1000

D = WebhookDelivery
S = WebhookSubscription


class SubscriptionLimitError(ValueError):
    """The service already has as many subscriptions as it allows."""


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    event_types: list[str]
    secret: str
    description: str | None
    created_at: datetime


@dataclass(frozen=True)
class Claim:
    """A leased delivery: what the sender needs to make one try."""

    delivery_id: int
    subscription_id: str
    url: str
    secret: str
    attempts: int
    event: Event


@dataclass(frozen=True)
class Result:
    """What one try gave: ``ok`` (a 2xx), else the status (None: no answer) and why."""

    delivery_id: int
    subscription_id: str
    ok: bool
    status: int | None
    error: str | None
    at: datetime
    event_at: datetime


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: try n waits ``base * 2**(n-1)``, at most ``cap``,
    times a random factor in [0.5, 1): receivers that failed together are not all
    retried in the same second ("equal jitter")."""

    base_s: float
    cap_s: float
    max_attempts: int

    def delay_s(self, attempts: int, rng: random.Random | None = None) -> float:
        wait = min(self.cap_s, self.base_s * 2 ** max(0, attempts - 1))
        return wait * (0.5 + 0.5 * (rng or random).random())


@dataclass
class DeliveryStatus:
    """A subscription's deliveries by status, and its latest success and failure."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    last_delivered_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure_status: int | None = None
    last_failure_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.counts,
            "last_delivered_at": _iso(self.last_delivered_at),
            "last_failure": None
            if self.last_failure_at is None
            else {
                "at": _iso(self.last_failure_at),
                "status": self.last_failure_status,
                "error": self.last_failure_error,
            },
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def new_subscription_id() -> str:
    return "sub_" + secrets.token_urlsafe(16)


# --------------------------------------------------------------------------- subscriptions


def create_subscription(
    engine: Engine,
    *,
    url: str,
    event_types: Sequence[str],
    secret: str,
    description: str | None,
    max_subscriptions: int,
) -> Subscription:
    subscription = Subscription(
        id=new_subscription_id(),
        url=url,
        event_types=list(event_types),
        secret=secret,
        description=description,
        created_at=datetime.now(UTC),
    )
    with write_turn(engine), writer(engine).begin() as connection:
        count = connection.execute(select(func.count()).select_from(S)).scalar_one()
        if count >= max_subscriptions:
            raise SubscriptionLimitError(f"at most {max_subscriptions} subscriptions")
        connection.execute(insert(S), [vars(subscription)])
    return subscription


def list_subscriptions(engine: Engine) -> list[Subscription]:
    with engine.connect() as connection:
        rows = connection.execute(_subscriptions().order_by(S.created_at, S.id))
        return [Subscription(**row._mapping) for row in rows]


def get_subscription(engine: Engine, subscription_id: str) -> Subscription | None:
    with engine.connect() as connection:
        row = connection.execute(_subscriptions().where(S.id == subscription_id)).first()
    return None if row is None else Subscription(**row._mapping)


def _subscriptions() -> Select[Any]:
    return select(S.id, S.url, S.event_types, S.secret, S.description, S.created_at)


def delete_subscription(engine: Engine, subscription_id: str) -> bool:
    """Delete a subscription and its deliveries (pending ones are never sent)."""
    with write_turn(engine), writer(engine).begin() as connection:
        connection.execute(delete(D).where(D.subscription_id == subscription_id))
        deleted = connection.execute(delete(S).where(S.id == subscription_id)).rowcount
    return bool(deleted)


# --------------------------------------------------------------------------- the outbox


def fan_out(engine: Engine, limit: int = _FAN_OUT_BATCH) -> int:
    """Make the deliveries of up to ``limit`` new events; how many deliveries were made."""
    with write_turn(engine), writer(engine).begin() as connection:
        return _fan_out(connection, datetime.now(UTC), limit)


def claim_due(engine: Engine, *, limit: int, lease_s: float) -> list[Claim]:
    """Lease up to ``limit`` due deliveries for ``lease_s`` seconds, oldest due first."""
    with write_turn(engine), writer(engine).begin() as connection:
        return _claim(connection, datetime.now(UTC), limit, lease_s)


def record_results(engine: Engine, results: Sequence[Result], backoff: Backoff) -> list[str]:
    """Store tries' outcomes in one transaction; the new status of each, in order."""
    with write_turn(engine), writer(engine).begin() as connection:
        return _record(connection, results, backoff)


@dataclass(frozen=True)
class Cycle:
    statuses: list[str]
    claims: list[Claim]


def cycle(
    engine: Engine,
    results: Sequence[Result],
    backoff: Backoff,
    *,
    claim_limit: int,
    lease_s: float,
    fan_out_limit: int = _FAN_OUT_BATCH,
) -> Cycle:
    """One turn of the delivery worker in ONE transaction: record finished tries, fan out
    new events, lease due deliveries. A commit costs an fsync; three per turn capped
    deliveries near 100/s. With nothing to record, fan out or claim (one indexed read
    each, no write lock) it writes nothing at all."""
    now = datetime.now(UTC)
    if not results and not _anything_to_do(engine, now, claim_limit):
        return Cycle([], [])
    with write_turn(engine), writer(engine).begin() as connection:
        statuses = _record(connection, results, backoff) if results else []
        _fan_out(connection, now, fan_out_limit)
        claims = _claim(connection, now, claim_limit, lease_s) if claim_limit > 0 else []
    return Cycle(statuses, claims)


def _anything_to_do(engine: Engine, now: datetime, claim_limit: int) -> bool:
    with engine.connect() as connection:
        if connection.execute(
            select(ScoreEvent.id).where(ScoreEvent.fanned_out.is_(False)).limit(1)
        ).first():
            return True
        if claim_limit <= 0:
            return False
        due = select(D.id).where(
            D.status == PENDING,
            D.next_attempt_at <= now,
            or_(D.lease_until.is_(None), D.lease_until < now),
        )
        return connection.execute(due.limit(1)).first() is not None


def _fan_out(connection: Connection, now: datetime, limit: int) -> int:
    query = (
        select(ScoreEvent.id, ScoreEvent.types)
        .where(ScoreEvent.fanned_out.is_(False))
        .order_by(ScoreEvent.id)
        .limit(limit)
    )
    events = connection.execute(_skip_locked(connection, query)).all()
    if not events:
        return 0
    subscriptions = connection.execute(select(S.id, S.event_types)).all()
    rows = [
        {
            "subscription_id": subscription_id,
            "event_id": event_id,
            "status": PENDING,
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        for event_id, types in events
        for subscription_id, wanted in subscriptions
        if set(types) & set(wanted)
    ]
    if rows:
        connection.execute(insert(D), rows)
    ids = [event_id for event_id, _ in events]
    connection.execute(update(ScoreEvent).where(ScoreEvent.id.in_(ids)).values(fanned_out=True))
    return len(rows)


def _claim(connection: Connection, now: datetime, limit: int, lease_s: float) -> list[Claim]:
    free = or_(D.lease_until.is_(None), D.lease_until < now)
    query = (
        select(D.id)
        .where(D.status == PENDING, D.next_attempt_at <= now, free)
        .order_by(D.next_attempt_at, D.id)
        .limit(limit)
    )
    ids = list(connection.execute(_skip_locked(connection, query)).scalars())
    if not ids:
        return []
    lease = now + timedelta(seconds=lease_s)
    # The status and lease are checked again: a concurrent claimer (PostgreSQL, READ
    # COMMITTED) that waited for this row re-reads it and finds it taken.
    connection.execute(
        update(D).where(D.id.in_(ids), D.status == PENDING, free).values(lease_until=lease)
    )
    rows = connection.execute(
        select(D.id, D.subscription_id, S.url, S.secret, D.attempts, D.event_id)
        .join(S, S.id == D.subscription_id)
        .where(D.id.in_(ids), D.lease_until == lease)
    ).all()
    events = events_by_id(connection, [row.event_id for row in rows])
    return [
        Claim(row.id, row.subscription_id, row.url, row.secret, row.attempts, events[row.event_id])
        for row in rows
        if row.event_id in events
    ]


def _skip_locked(connection: Connection, query: Select[Any]) -> Select[Any]:
    """PostgreSQL: rows another worker is claiming are skipped, not waited for."""
    if connection.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def _record(connection: Connection, results: Sequence[Result], backoff: Backoff) -> list[str]:
    statuses = []
    query = select(D.id, D.attempts).where(D.id.in_([r.delivery_id for r in results]))
    attempts: dict[int, int] = {row.id: row.attempts for row in connection.execute(query)}
    for result in results:
        if result.delivery_id not in attempts:  # its subscription was deleted meanwhile
            statuses.append("deleted")
            continue
        tries = attempts[result.delivery_id] + 1
        values: dict[str, Any] = {
            "attempts": tries,
            "lease_until": None,
            "last_attempt_at": result.at,
            "last_status": result.status,
            "last_error": None if result.ok else (result.error or "failed")[:200],
        }
        if result.ok:
            values |= {"status": DELIVERED, "delivered_at": result.at}
        elif tries >= backoff.max_attempts:
            values |= {"status": DEAD}
        else:
            wait = timedelta(seconds=backoff.delay_s(tries))
            values |= {"next_attempt_at": result.at + wait}
        connection.execute(update(D).where(D.id == result.delivery_id).values(**values))
        statuses.append(values.get("status", PENDING))
    return statuses


def prune_delivered(engine: Engine, older_than: datetime, limit: int = 10_000) -> int:
    """Forget up to ``limit`` deliveries delivered before ``older_than`` (the events stay)."""
    with write_turn(engine), writer(engine).begin() as connection:
        ids = select(D.id).where(D.status == DELIVERED, D.delivered_at < older_than).limit(limit)
        doomed = list(connection.execute(ids).scalars())
        if doomed:
            connection.execute(delete(D).where(D.id.in_(doomed)))
    return len(doomed)


def replay(engine: Engine, subscription_id: str, delivery_id: int | None = None) -> int:
    """Dead deliveries (all of the subscription's, or one) get a new round of tries now.

    The event, and so the ``webhook-id`` the receiver deduplicates by, stays the same.
    """
    now = datetime.now(UTC)
    conditions = [D.subscription_id == subscription_id, D.status == DEAD]
    if delivery_id is not None:
        conditions.append(D.id == delivery_id)
    with write_turn(engine), writer(engine).begin() as connection:
        return int(
            connection.execute(
                update(D)
                .where(*conditions)
                .values(status=PENDING, attempts=0, next_attempt_at=now, lease_until=None)
            ).rowcount
        )


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class DeliveryInfo:
    id: int
    event_id: int
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_id": self.event_id,
            "webhook_id": message_id(self.event_id),
            "status": self.status,
            "attempts": self.attempts,
            "created_at": _iso(self.created_at),
            "next_attempt_at": _iso(self.next_attempt_at) if self.status == PENDING else None,
            "last_attempt_at": _iso(self.last_attempt_at),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "delivered_at": _iso(self.delivered_at),
        }


def message_id(event_id: int) -> str:
    """The ``webhook-id`` of an event: the same for every try, replay and subscription."""
    return f"evt_{event_id}"


def deliveries(
    engine: Engine, subscription_id: str, *, status: str | None = None, limit: int = 50
) -> list[DeliveryInfo]:
    """A subscription's deliveries, newest first."""
    query = (
        select(
            D.id,
            D.event_id,
            D.status,
            D.attempts,
            D.created_at,
            D.next_attempt_at,
            D.last_attempt_at,
            D.last_status,
            D.last_error,
            D.delivered_at,
        )
        .where(D.subscription_id == subscription_id)
        .order_by(D.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(D.status == status)
    with engine.connect() as connection:
        return [DeliveryInfo(*row) for row in connection.execute(query)]


def delivery_status(engine: Engine, subscription_ids: Sequence[str]) -> dict[str, DeliveryStatus]:
    """Counts by status (an index range per subscription) and the latest try of each kind."""
    out = {s: DeliveryStatus() for s in subscription_ids}
    with engine.connect() as connection:
        for subscription_id, status in ((s, st) for s in subscription_ids for st in STATUSES):
            count = connection.execute(
                select(func.count())
                .select_from(D)
                .where(D.subscription_id == subscription_id, D.status == status)
            ).scalar_one()
            out[subscription_id].counts[status] = int(count)
        for subscription_id in subscription_ids:
            _latest_tries(connection, subscription_id, out[subscription_id])
    return out


def _latest_tries(connection: Connection, subscription_id: str, into: DeliveryStatus) -> None:
    """Newest by id (the index's order), so this reads a row or two, not the history."""
    into.last_delivered_at = connection.execute(
        select(D.delivered_at)
        .where(D.subscription_id == subscription_id, D.status == DELIVERED)
        .order_by(D.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    failed = connection.execute(
        select(D.last_attempt_at, D.last_status, D.last_error)
        .where(D.subscription_id == subscription_id, D.last_error.is_not(None))
        .order_by(D.id.desc())
        .limit(1)
    ).first()
    if failed is not None:
        into.last_failure_at, into.last_failure_status, into.last_failure_error = failed


def open_counts(engine: Engine) -> dict[tuple[str, str], int]:
    """(subscription, status) → deliveries pending or dead: the /metrics gauges."""
    query = (
        select(D.subscription_id, D.status, func.count())
        .where(D.status.in_([PENDING, DEAD]))
        .group_by(D.subscription_id, D.status)
    )
    with engine.connect() as connection:
        return {(s, st): int(n) for s, st, n in connection.execute(query)}
