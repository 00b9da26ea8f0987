"""Score-change events (the outbox), webhook subscriptions and deliveries, lead display
fields, rescore runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

Self-contained like every revision: plain SQLAlchemy types, no import of the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "score_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("score_id", _ID, nullable=False),
        sa.Column("occurred_at", _TS, nullable=False),
        sa.Column("types", sa.JSON(), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("fanned_out", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_score_events"),
        sa.ForeignKeyConstraint(
            ["score_id"], ["scores.id"], name="fk_score_events_score_id_scores"
        ),
    )
    op.create_index("ix_score_events_lead_id_id", "score_events", ["lead_id", "id"])
    op.create_index("ix_score_events_occurred_at", "score_events", ["occurred_at"])
    op.create_index("ix_score_events_fanned_out_id", "score_events", ["fanned_out", "id"])

    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_subscriptions"),
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.String(32), nullable=False),
        sa.Column("event_id", _ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("last_attempt_at", _TS, nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name="fk_webhook_deliveries_subscription_id_webhook_subscriptions",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["score_events.id"], name="fk_webhook_deliveries_event_id_score_events"
        ),
        sa.UniqueConstraint(
            "subscription_id", "event_id", name="uq_webhook_deliveries_subscription_id_event_id"
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next_attempt_at",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        "ix_webhook_deliveries_subscription_id_status",
        "webhook_deliveries",
        ["subscription_id", "status"],
    )

    op.create_table(
        "lead_display",
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("lead_id", name="pk_lead_display"),
    )

    op.create_table(
        "rescore_runs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("open_leads", sa.Integer(), nullable=False),
        sa.Column("rescored", sa.Integer(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rescore_runs"),
    )


def downgrade() -> None:
    op.drop_table("rescore_runs")
    op.drop_table("lead_display")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_subscriptions")
    op.drop_table("score_events")
