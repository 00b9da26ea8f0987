"""The scores file: CSV, gzipped CSV or Parquet, written under a temporary name.

Nothing half-done is left behind: rows go to a partial file in the job's scratch folder
(beside the output, so the final rename is atomic) and the file is renamed into place
only when every lead scored.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.chunks import is_csv, is_parquet
from serving.batch.sort import LINE

#: Rows gathered before a write: a Parquet row group, or a gzip member of a CSV.
WRITE_ROWS = 50_000


def writable(path: Path) -> bool:
    """Whether scores can be written to a file of this name (by its suffix)."""
    return is_csv(path) or is_parquet(path)


def scores_schema(stages: Sequence[str], *, reasons: bool, with_line: bool = False) -> pa.Schema:
    """The scores file's columns: the same for every engine (single machine or Spark)."""
    fields = [pa.field("lead_id", pa.string())]
    fields += [pa.field(f"p_{s}", pa.float64()) for s in stages]
    fields += [
        pa.field("score", pa.int64()),
        pa.field("grade", pa.string()),
        pa.field("category", pa.string()),
    ]
    if reasons:
        fields.append(pa.field("reasons", pa.string()))
    fields.append(pa.field("model_version", pa.string()))
    if with_line:
        fields.append(pa.field(LINE, pa.int64()))
    return pa.schema(fields)


class Output:
    """The scores file, written under a temporary name and renamed once complete.

    CSV is appended chunk by chunk (a gzip member per chunk, which every gzip reader
    reads as one stream); Parquet gets a row group per ~chunk.
    """

    def __init__(self, path: Path, work: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self.csv = is_csv(path)
        self._tmp = work / "output.partial"
        self._pending: list[pd.DataFrame] = []
        self._pending_rows = 0
        self._header = True
        self._parquet = None if self.csv else pq.ParquetWriter(self._tmp, schema)

    def write(self, frame: pd.DataFrame) -> None:
        # The merge emits a few thousand rows at a time: gather row groups of useful size.
        self._pending.append(frame)
        self._pending_rows += len(frame)
        if self._pending_rows >= WRITE_ROWS:
            self._flush()

    def commit(self) -> None:
        if self.csv and self._header and not self._pending:  # no lead at all: a header
            self._pending.append(pd.DataFrame(columns=self.schema.names))
        self._flush()
        self._close()
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        self._close()
        self._tmp.unlink(missing_ok=True)

    def _flush(self) -> None:
        if not self._pending:
            return
        frame = pd.concat(self._pending, ignore_index=True)
        self._pending, self._pending_rows = [], 0
        if self._parquet is not None:
            table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
            self._parquet.write_table(table)
            return
        with _append_text(self._tmp, gz=self.path.name.lower().endswith(".gz")) as handle:
            frame.to_csv(handle, index=False, header=self._header)
        self._header = False

    def _close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None


def _append_text(path: Path, *, gz: bool) -> IO[str]:
    if gz:
        return gzip.open(path, "at", encoding="utf-8", newline="")
    return path.open("a", encoding="utf-8", newline="")
