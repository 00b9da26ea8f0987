"""What was scored: inputs, spec and policy versions, retention marks, rejection reasons.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Adds ``scores.spec_version`` and ``scores.policy_version`` (NULL for older scores), the
time-order index of the log, the ``score_inputs`` table (one packed model input per
score), ``retention_marks`` and ``outcomes.reason``. Only additions, so older rows stay
valid and a running older service keeps working against the new schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("scores", sa.Column("spec_version", sa.String(64), nullable=True))
    op.add_column("scores", sa.Column("policy_version", sa.String(32), nullable=True))
    op.create_index("ix_scores_scored_at_id", "scores", ["scored_at", "id"])
    op.create_table(
        "score_inputs",
        sa.Column("score_id", _ID, nullable=False),
        sa.Column("packed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("score_id", name="pk_score_inputs"),
        sa.ForeignKeyConstraint(
            ["score_id"], ["scores.id"], name="fk_score_inputs_score_id_scores"
        ),
    )
    op.create_table(
        "retention_marks",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("through_id", _ID, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_retention_marks"),
    )
    op.add_column("outcomes", sa.Column("reason", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outcomes") as batch:
        batch.drop_column("reason")
    op.drop_table("retention_marks")
    op.drop_table("score_inputs")
    op.drop_index("ix_scores_scored_at_id", table_name="scores")
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("policy_version")
        batch.drop_column("spec_version")
