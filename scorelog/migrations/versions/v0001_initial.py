"""Initial schema: scores, lead_latest, outcomes.

Revision ID: 0001
Revises:
Create Date: 2026-03-01

Self-contained on purpose (plain SQLAlchemy types, no import of the models): a revision
must keep creating the same schema after ``tables.py`` has moved on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scores",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("scored_at", _TS, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("grade", sa.String(1), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("acquisition_source", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_scores"),
    )
    op.create_index("ix_scores_lead_id_scored_at", "scores", ["lead_id", "scored_at"])

    op.create_table(
        "lead_latest",
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("grade", sa.String(1), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("acquisition_source", sa.String(64), nullable=True),
        sa.Column("scored_at", _TS, nullable=False),
        sa.Column("score_id", _ID, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("lead_id", name="pk_lead_latest"),
        sa.ForeignKeyConstraint(["score_id"], ["scores.id"], name="fk_lead_latest_score_id_scores"),
    )
    rank: list[str | sa.TextClause] = [sa.text("score DESC"), "lead_id"]
    op.create_index("ix_lead_latest_rank", "lead_latest", rank)
    for column in ("category", "grade", "acquisition_source"):
        name = "source" if column == "acquisition_source" else column
        op.create_index(f"ix_lead_latest_{name}_rank", "lead_latest", [column, *rank])

    op.create_table(
        "outcomes",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(32), nullable=True),
        sa.Column("occurred_at", _TS, nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.Column("note", sa.String(500), nullable=True),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outcomes"),
        sa.UniqueConstraint("idempotency_key", name="uq_outcomes_idempotency_key"),
    )
    op.create_index("ix_outcomes_lead_id", "outcomes", ["lead_id"])


def downgrade() -> None:
    op.drop_table("outcomes")
    op.drop_table("lead_latest")
    op.drop_table("scores")
