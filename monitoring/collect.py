"""Reading what monitoring needs from the scoring log, as columns rather than objects.

Two reads, both bounded:

* :func:`read_window` walks the scores of a time window once (``iter_scores`` without
  inputs) and keeps only columns: ids, leads, times, versions, categories and the stage
  probabilities as one float matrix. A million scores are a few dozen megabytes.
* :func:`sample_records` rebuilds a uniform sample of those scores' stored inputs (at most
  ``MonitorSettings.feature_sample``): feature drift is a statistic of a distribution,
  and 50,000 rows pin a bin's share to within half a percent, while unpacking and
  rebuilding every input of a million scores would cost minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from monitoring.errors import LogUnavailableError
from scorelog.engine import describe_error, make_engine
from scorelog.history import LoggedOutcome, iter_outcomes, iter_scores
from scorelog.inputs import InputFormatError, unpack_input
from scorelog.tables import ScoreInput


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


#: Ids per ``IN (...)`` query: well under SQLite's 32,766 bound parameters.
_IDS_PER_QUERY = 5000


@dataclass(frozen=True)
class ScoreColumns:
    """A window of logged scores, column by column (row i is the i-th score in time order)."""

    score_id: np.ndarray  # int64
    lead_id: np.ndarray  # object (str)
    scored_ns: np.ndarray  # int64 epoch ns
    model_version: np.ndarray  # object (str)
    category: np.ndarray  # object (str)
    probabilities: np.ndarray  # (n, stages) float64, NaN where a stage was not logged
    stages: list[str]

    def __len__(self) -> int:
        return int(self.score_id.size)

    def take(self, rows: np.ndarray) -> ScoreColumns:
        return ScoreColumns(
            self.score_id[rows],
            self.lead_id[rows],
            self.scored_ns[rows],
            self.model_version[rows],
            self.category[rows],
            self.probabilities[rows],
            self.stages,
        )

    def versions(self) -> dict[str, int]:
        """How many of these scores each model version made."""
        values, counts = np.unique(self.model_version.astype(str), return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts, strict=True)}


def read_window(
    engine: Engine, stages: Sequence[str], since: datetime | None, until: datetime | None
) -> ScoreColumns:
    """Every score with ``since <= scored_at < until``, as columns."""
    ids: list[int] = []
    leads: list[str] = []
    stamps: list[datetime] = []
    versions: list[str] = []
    categories: list[str] = []
    probs: list[float] = []
    nan = float("nan")
    for page in iter_scores(engine, since=since, until=until, with_inputs=False):
        for s in page:
            ids.append(s.score_id)
            leads.append(s.lead_id)
            stamps.append(s.scored_at)
            versions.append(s.model_version)
            categories.append(s.category)
            p = s.probabilities
            probs.extend(p.get(stage, nan) for stage in stages)
    n = len(ids)
    return ScoreColumns(
        score_id=np.asarray(ids, dtype=np.int64),
        lead_id=np.asarray(leads, dtype=object),
        scored_ns=_epoch_ns(stamps),
        model_version=np.asarray(versions, dtype=object),
        category=np.asarray(categories, dtype=object),
        probabilities=np.asarray(probs, dtype=np.float64).reshape(n, len(stages)),
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
    out: dict[int, dict[str, Any]] = {}
    ids = [int(i) for i in score_ids]
    with engine.connect() as connection:
        for lo in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[lo : lo + _IDS_PER_QUERY]
            query = select(ScoreInput.score_id, ScoreInput.packed).where(
                ScoreInput.score_id.in_(chunk)
            )
            for score_id, packed in connection.execute(query):
                try:
                    out[int(score_id)] = unpack_input(bytes(packed))
                except InputFormatError:
                    continue  # counted by the caller as "no input"
    return out


def _epoch_ns(stamps: list[datetime]) -> np.ndarray:
    if not stamps:
        return np.empty(0, dtype=np.int64)
    index = pd.DatetimeIndex(pd.to_datetime(stamps, utc=True)).as_unit("ns")
    return index.tz_convert(None).to_numpy().view(np.int64).copy()
