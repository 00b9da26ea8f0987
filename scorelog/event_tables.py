"""The outbox's tables: score-change events, webhook subscriptions and their deliveries.

* ``score_events``: one row per change of a lead worth telling someone about (its first
  score, a new category or grade, a big enough score move), written in the SAME
  transaction as the score that caused it: if the score is stored, so is its event, and
  neither exists without the other (a transactional outbox). Append-only; ids increase,
  so a lead's events are ordered by id.
* ``webhook_subscriptions``: who wants which event types, where, signed with what secret.
* ``lead_display``: what sales see of a lead besides its score (name, company, title: the
  spec's display fields), the latest values the CRM sent, one row per lead. Kept out of
  ``scores`` and the stored inputs on purpose: the log is audit and training data, and
  personal data in it would be copied wherever the log goes.
* ``webhook_deliveries``: one row per (event, subscription): the outbox's read side. The
  delivery worker claims due rows with a lease, so several worker processes never send
  the same row at once, and a process killed mid-send leaves a lease that simply expires.

Declared on the scoring log's :class:`~scorelog.tables.Base`, so alembic's comparison and
the migrations see one schema (``migrations/versions/v0003_events_webhooks.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import JSON, Boolean

from scorelog.tables import Base, BigId, UTCDateTime

#: Longest webhook URL accepted (browsers and most servers stop near 2,000-8,000).
MAX_URL_LENGTH = 2048
#: Subscription ids are "sub_" + 22 URL-safe characters.
SUBSCRIPTION_ID_LENGTH = 32


class ScoreEvent(Base):
    __tablename__ = "score_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lead_id: Mapped[str] = mapped_column(String(128))
    score_id: Mapped[int] = mapped_column(BigId, ForeignKey("scores.id"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    types: Mapped[list[str]] = mapped_column(JSON)
    direction: Mapped[str] = mapped_column(String(8))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any]] = mapped_column(JSON)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # False until the delivery worker has made this event's deliveries (its fan-out).
    fanned_out: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_score_events_lead_id_id", "lead_id", "id"),
        Index("ix_score_events_occurred_at", "occurred_at"),
        Index("ix_score_events_fanned_out_id", "fanned_out", "id"),
    )


class WebhookSubscription(Base):
    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(SUBSCRIPTION_ID_LENGTH), primary_key=True)
    url: Mapped[str] = mapped_column(String(MAX_URL_LENGTH))
    event_types: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(
        String(SUBSCRIPTION_ID_LENGTH), ForeignKey("webhook_subscriptions.id")
    )
    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("score_events.id"))
    status: Mapped[str] = mapped_column(String(16))  # pending, delivered, dead
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_subscription_id_status", "subscription_id", "status"),
    )


class LeadDisplay(Base):
    __tablename__ = "lead_display"

    lead_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fields: Mapped[dict[str, str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RescoreRun(Base):
    """One run of ``leadscore rescore`` (or of the service's periodic rescore)."""

    __tablename__ = "rescore_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    open_leads: Mapped[int] = mapped_column(Integer, default=0)
    rescored: Mapped[int] = mapped_column(Integer, default=0)
    events: Mapped[int] = mapped_column(Integer, default=0)
