"""The scoring log and outcomes store: SQLite or PostgreSQL through SQLAlchemy + alembic.

``make_engine(url)`` → ``migrate(engine)`` → ``ScoreLog(engine).start()``; see
:mod:`.store` for the group-commit writer and :mod:`.engine` for durability settings.
"""

from scorelog.engine import make_engine, migrate
from scorelog.store import (
    OUTCOME_KINDS,
    OutcomeRow,
    RankedLead,
    ScoreLog,
    ScoreRow,
)

__all__ = [
    "OUTCOME_KINDS",
    "OutcomeRow",
    "RankedLead",
    "ScoreLog",
    "ScoreRow",
    "make_engine",
    "migrate",
]
