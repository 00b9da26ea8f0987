"""Writing a batch run's scores to the scoring log (``leadscore score --to-log``).

The scores are staged to a Parquet file while the file is scored and written to the
log (the sales board's source) only once the whole file scored, in transactions of
``LOG_ROWS``, so a refused file logs nothing. If the database fails part-way, the
transactions already committed stay: the log is append-only and a rerun only adds
newer rows. The storage layer (SQLAlchemy, Alembic) is imported only when used.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from features.builder import BuildReport
from features.spec import normalise_token
from models.reasons import Reason
from serving.model_store import ServedModel
from serving.settings import ServingSettings

#: Rows per scoring-log transaction (the API's writer groups up to this many too).
LOG_ROWS = 2000
SOURCE_FIELD = "acquisition_source"  # what the scoring log and the board filter on


class LogStage:
    """The scores of a run kept for the log, with what the log needs beside them."""

    def __init__(self, path: Path, stages: Sequence[str]) -> None:
        self.path = path
        self.schema = _log_schema(stages)
        self.stages = list(stages)
        self._writer: pq.ParquetWriter | None = None

    def add(
        self,
        out: pd.DataFrame,
        leads: pd.DataFrame,
        report: BuildReport,
        sets: list[dict[str, list[Reason]]] | None,
    ) -> None:
        frame = out[["lead_id", *[f"p_{s}" for s in self.stages], "score", "grade", "category"]]
        frame = frame.copy()
        frame["reasons_json"] = (
            [json.dumps({k: [r.to_dict() for r in v] for k, v in s.items()}) for s in sets]
            if sets is not None
            else "{}"
        )
        frame["warnings_json"] = _warnings(report, len(out))
        frame["acquisition_source"] = _sources(leads)
        frame["scored_at"] = pd.Timestamp.now(tz="UTC")
        table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def write_log(
    stage: Path,
    settings: ServingSettings,
    served: ServedModel,
    bar: Callable[[str, int | None, str], tqdm[Any]],
) -> int:
    """Replay the staged scores into the scoring log, ``LOG_ROWS`` per transaction.

    Imported here: the storage layer (SQLAlchemy, Alembic) is only needed with --to-log.
    """
    from scorelog.engine import make_engine, migrate
    from scorelog.store import ScoreLog

    if not stage.exists():
        return 0
    request_id = f"batch-{uuid.uuid4().hex[:16]}"
    total = pq.ParquetFile(stage).metadata.num_rows
    engine = make_engine(
        settings.database_url_resolved(), sqlite_synchronous=settings.sqlite_synchronous
    )
    written = 0
    try:
        migrate(engine)
        log = ScoreLog(engine, max_batch_rows=LOG_ROWS)
        log.start()
        pending: deque[Future[list[int]]] = deque()
        try:
            with bar("scoring log", total, "leads") as progress:
                for batch in pq.ParquetFile(stage).iter_batches(batch_size=LOG_ROWS):
                    rows = [_score_row(r, served, request_id) for r in batch.to_pylist()]
                    pending.append(log.submit_scores(rows))
                    while len(pending) > 2:  # a little ahead of the writer, never unbounded
                        pending.popleft().result()
                    written += len(rows)
                    progress.update(len(rows))
                for future in pending:
                    future.result()
        finally:
            log.close(timeout=120)
    finally:
        engine.dispose()
    return written


def _score_row(row: dict[str, Any], served: ServedModel, request_id: str) -> Any:
    from scorelog.rows import ScoreRow

    stages = served.model.stages
    return ScoreRow(
        request_id=request_id,
        lead_id=str(row["lead_id"]),
        scored_at=row["scored_at"] or datetime.now(UTC),
        model_name=served.name,
        model_version=served.version,
        probabilities={s: row[f"p_{s}"] for s in stages},
        score=row["score"],
        grade=row["grade"],
        category=row["category"],
        reasons=json.loads(row["reasons_json"]),
        warnings=json.loads(row["warnings_json"]),
        acquisition_source=row["acquisition_source"],
    )


def _log_schema(stages: Sequence[str]) -> pa.Schema:
    fields = [pa.field("lead_id", pa.string())]
    fields += [pa.field(f"p_{s}", pa.float64()) for s in stages]
    fields += [
        pa.field("score", pa.int64()),
        pa.field("grade", pa.string()),
        pa.field("category", pa.string()),
        pa.field("reasons_json", pa.string()),
        pa.field("warnings_json", pa.string()),
        pa.field("acquisition_source", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
    ]
    return pa.schema(fields)


def _warnings(report: BuildReport, n: int) -> list[str]:
    """The API's per-lead warnings, computed only for the rows that have any."""
    flagged = [*report.unseen_rows.values(), *report.clipped_rows.values()]
    out = ["[]"] * n
    if flagged:
        for row in np.unique(np.concatenate(flagged)):
            out[int(row)] = json.dumps(report.warnings_for(int(row)))
    return out


def _sources(leads: pd.DataFrame) -> list[str | None]:
    """The board's source filter, spelt as the API stores it."""
    if SOURCE_FIELD not in leads.columns:
        return [None] * len(leads)
    codes, uniques = pd.factorize(leads[SOURCE_FIELD], use_na_sentinel=True)
    folded = [normalise_token(str(u))[:64] for u in uniques]
    return [None if c < 0 else folded[c] for c in codes]
