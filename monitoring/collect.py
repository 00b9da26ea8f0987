"""Reading what monitoring needs from the scoring log, as numpy columns.

Bounded reads, done by the database where it can (``scorelog.columns``):

* :func:`read_window` - the scores of a time window as columns: ids, leads, times and the
  stage probabilities as one float matrix (a million scores are a few dozen megabytes);
* :func:`sample_records` - a uniform sample of a window's stored inputs (at most
  ``MonitorSettings.feature_sample``): drift is a statistic of a distribution, and 20,000
  rows pin a bin's share to within half a percent, while unpacking and rebuilding every
  input of a million scores would take minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from monitoring.errors import LogUnavailableError
from scorelog.columns import count_by, inputs_of, score_columns, score_ids
from scorelog.engine import describe_error, make_engine
from scorelog.history import LoggedOutcome, iter_outcomes

__all__ = [
    "ScoreColumns",
    "count_by",
    "open_log",
    "read_outcomes",
    "read_window",
    "records_for",
    "sample_rows",
    "score_ids",
]


@dataclass(frozen=True)
class ScoreColumns:
    """A window of logged scores, column by column (row i is the i-th score in time order)."""

    score_id: np.ndarray  # int64
    lead_id: np.ndarray  # object (str)
    scored_ns: np.ndarray  # int64 epoch ns
    probabilities: np.ndarray  # (n, stages) float64, NaN where a stage was not logged
    stages: list[str]

    def __len__(self) -> int:
        return int(self.score_id.size)

    def take(self, rows: np.ndarray) -> ScoreColumns:
        return ScoreColumns(
            self.score_id[rows],
            self.lead_id[rows],
            self.scored_ns[rows],
            self.probabilities[rows],
            self.stages,
        )


def open_log(url: str) -> Engine:
    """An engine on an existing scoring log, checked; never creates an empty database.

    The message names the problem, never the URL's password.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if not path or not Path(path).is_file():
            raise LogUnavailableError(
                f"scoring log not found: no SQLite file at {path or '(none)'}"
            )
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        engine.dispose()
        raise LogUnavailableError(f"scoring log unreachable: {describe_error(exc)}") from None
    missing = {"scores", "score_inputs", "outcomes"} - tables
    if missing:
        engine.dispose()
        raise LogUnavailableError(
            f"not a scoring log at revision 0002 or later (missing tables: "
            f"{', '.join(sorted(missing))}); start the service once to migrate it"
        )
    return engine


def read_window(
    engine: Engine, stages: Sequence[str], since: datetime | None, until: datetime | None
) -> ScoreColumns:
    """Every score with ``since <= scored_at < until``, as numpy columns."""
    lists = score_columns(engine, stages, since, until)
    n = len(lists.score_id)
    P = np.empty((n, len(stages)), dtype=np.float64)
    for j, column in enumerate(lists.probabilities):
        P[:, j] = np.asarray(column, dtype=np.float64)  # None (not logged) becomes NaN
    return ScoreColumns(
        score_id=np.asarray(lists.score_id, dtype=np.int64),
        lead_id=np.asarray(lists.lead_id, dtype=object),
        scored_ns=np.asarray(lists.scored_us, dtype=np.int64) * 1000,
        probabilities=P,
        stages=list(stages),
    )


def read_outcomes(engine: Engine, until: datetime | None) -> list[LoggedOutcome]:
    """Every outcome that happened before ``until`` (labels need a lead's whole past)."""
    return list(iter_outcomes(engine, until=until))


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of a uniform sample of ``min(n, size)`` rows (all when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def records_for(engine: Engine, score_ids: Sequence[int] | np.ndarray) -> dict[int, dict[str, Any]]:
    """The stored inputs of these scores (ids without a readable input are left out)."""
    return inputs_of(engine, [int(i) for i in score_ids])
