"""The scoring log's tables: SQLAlchemy 2 declarative models, one schema for SQLite and PostgreSQL.

* ``scores``: every score ever returned, append-only: the audit trail and the raw material
  for monitoring and the next training run.
* ``lead_latest``: one row per lead, the newest score only, kept in the same transaction as
  the insert into ``scores``. The sales board reads this table, so "highest score first" is
  an index walk over at most one row per lead instead of a "latest per group" query over the
  whole log.
* ``score_inputs``: the model input each score was computed from (packed by
  :mod:`scorelog.inputs`), one row per score, in a table of its own so retention can
  delete old inputs without rewriting the scores: replay and training from the log read
  it, the board never does.
* ``retention_marks``: how far retention has pruned (the highest score id whose input is
  gone), so "pruned" and "never stored" can be told apart.
* ``outcomes``: what really happened to a lead (the labels of the next training run), unique
  on the client's idempotency key so a retried call writes one row; ``reason`` says why
  sales rejected a lead (one of :data:`scorelog.rows.REJECTION_REASONS`).

Every index on ``lead_latest`` ends in ``(score DESC, lead_id)``: the board's order, so a
page (filtered or not) is read in index order without sorting and keyset pagination can
start mid-index. The migrations in ``migrations/versions`` create exactly these objects; a
test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets a bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that always reads back as UTC, on every backend.

    SQLite has no timezone type: values are stored as naive UTC text with a fixed width, so
    string comparison (used by the ``lead_latest`` upsert and by ``ORDER BY``) is also time
    order. PostgreSQL stores ``timestamptz``; its session time zone is undone on read. A
    naive datetime is refused rather than guessed at: "10:00" from a server in Berlin and
    one in New York must not compare as equal.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone (UTC preferred)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Metadata shared by the models and by alembic's autogenerate.

    Constraint names are fixed by convention so a later migration can name what it alters
    (SQLite's batch mode and PostgreSQL both need the name) and autogenerate sees no churn.
    """

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Score(Base):
    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64))
    lead_id: Mapped[str] = mapped_column(String(128))
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime())
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON)
    score: Mapped[int] = mapped_column(Integer)
    grade: Mapped[str] = mapped_column(String(1))
    category: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[dict[str, Any]] = mapped_column(JSON)
    warnings: Mapped[list[str]] = mapped_column(JSON)
    acquisition_source: Mapped[str | None] = mapped_column(String(64))
    # "<spec name>:<version>" (scorelog.inputs.spec_version_of) and the model's policy hash;
    # None on scores logged before revision 0002.
    spec_version: Mapped[str | None] = mapped_column(String(64))
    policy_version: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        # A lead's history, newest first, is one index range: lead_id first serves lookups too.
        Index("ix_scores_lead_id_scored_at", "lead_id", "scored_at"),
        # The log in time order (training from the log, monitoring windows): keyset pages.
        Index("ix_scores_scored_at_id", "scored_at", "id"),
    )


class ScoreInput(Base):
    __tablename__ = "score_inputs"

    score_id: Mapped[int] = mapped_column(BigId, ForeignKey("scores.id"), primary_key=True)
    packed: Mapped[bytes] = mapped_column(LargeBinary)


class RetentionMark(Base):
    __tablename__ = "retention_marks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    through_id: Mapped[int] = mapped_column(BigId)


class LeadLatest(Base):
    __tablename__ = "lead_latest"

    lead_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    score: Mapped[int] = mapped_column(Integer)
    grade: Mapped[str] = mapped_column(String(1))
    category: Mapped[str] = mapped_column(String(16))
    acquisition_source: Mapped[str | None] = mapped_column(String(64))
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime())
    score_id: Mapped[int] = mapped_column(BigId, ForeignKey("scores.id"))
    model_version: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_lead_latest_rank", score.desc(), lead_id),
        Index("ix_lead_latest_category_rank", category, score.desc(), lead_id),
        Index("ix_lead_latest_grade_rank", grade, score.desc(), lead_id),
        Index("ix_lead_latest_source_rank", acquisition_source, score.desc(), lead_id),
    )


class Outcome(Base):
    __tablename__ = "outcomes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lead_id: Mapped[str] = mapped_column(String(128), index=True)
    outcome: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str | None] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(String(500))
    reason: Mapped[str | None] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
