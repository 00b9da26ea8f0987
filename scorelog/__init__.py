"""The scoring log and outcomes store: SQLite or PostgreSQL through SQLAlchemy + alembic.

``make_engine(url)`` → ``migrate(engine)`` → ``ScoreLog(engine).start()``; see
:mod:`.store` for the group-commit writer (its rows: :mod:`.rows`), :mod:`.engine` for
durability settings, :mod:`.inputs` for how each score's model input is kept and
:mod:`.history` for reading the log back (replay, training from the log, monitoring).
"""

# Registers the outbox's tables on the shared metadata (migrations are compared with it).
from scorelog import event_tables  # noqa: F401
from scorelog.engine import make_engine, migrate
from scorelog.rows import OUTCOME_KINDS, REJECTION_REASONS, OutcomeRow, RankedLead, ScoreRow
from scorelog.store import ScoreLog

__all__ = [
    "OUTCOME_KINDS",
    "REJECTION_REASONS",
    "OutcomeRow",
    "RankedLead",
    "ScoreLog",
    "ScoreRow",
    "make_engine",
    "migrate",
]
