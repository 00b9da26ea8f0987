"""External sort: score rows sorted on disk in runs, merged back in bounded memory.

Used twice by batch scoring: shards are written as runs sorted by input line and merged
back into file order, and ``--sort`` writes every chunk as a run sorted by score and
merges those. A run is a Parquet file with row groups of ``RUN_ROWS``, so the merge
reads one small batch per run at a time: memory is fan-in x ``RUN_ROWS`` rows whatever
the total. At most ``MAX_FAN_IN`` runs are merged at once; more are merged in rounds.
pyarrow has no spilling sort (Acero's ``order_by`` holds the whole table), hence this.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: Rows per batch and row group of a sorted run: memory while merging is runs x this.
RUN_ROWS = 2048
MAX_FAN_IN = 128
LINE = "_line"  # file line of a lead: the order key of runs, dropped from the output

#: What runs are ordered by: the input line, or score descending then lead id.
Key = Literal["line", "score"]


def sorted_frame(frame: pd.DataFrame, by: Key) -> pd.DataFrame:
    if by == "line":
        out = frame.sort_values(LINE, kind="stable")
    else:
        out = frame.sort_values(["score", "lead_id"], ascending=[False, True], kind="stable")
    return out.reset_index(drop=True)


def _keys(frame: pd.DataFrame, by: Key) -> tuple[np.ndarray, np.ndarray | None]:
    """(primary, secondary) merge keys, both ascending: (line,) or (-score, lead id)."""
    if by == "line":
        return frame[LINE].to_numpy(np.int64), None
    return -frame["score"].to_numpy(np.int64), frame["lead_id"].to_numpy(object)


class Runs:
    """Sorted Parquet runs on disk, merged in batches into one sorted stream.

    A run is written with row groups of ``RUN_ROWS`` so the merge reads one small batch
    per run at a time: memory is fan-in x RUN_ROWS rows, whatever the total.
    """

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.schema = folder, schema
        self.paths: list[Path] = []

    def add(self, frame: pd.DataFrame, *, by: Key | None = None) -> None:
        """Store ``frame`` as a run; ``by`` sorts it first (else it must be sorted)."""
        if not len(frame):
            return
        if by is not None:
            frame = sorted_frame(frame, by)
        path = self.folder / f"run-{len(self.paths):06d}.parquet"
        table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        pq.write_table(table, path, row_group_size=RUN_ROWS)
        self.paths.append(path)

    def merge(self, by: Key, emit: Callable[[pd.DataFrame], None]) -> None:
        paths = self.paths
        while len(paths) > MAX_FAN_IN:
            paths = [
                self._merge_to_file(paths[i : i + MAX_FAN_IN], by)
                for i in range(0, len(paths), MAX_FAN_IN)
            ]
        _merge_runs(paths, by, emit)

    def _merge_to_file(self, paths: list[Path], by: Key) -> Path:
        path = self.folder / f"merged-{uuid.uuid4().hex[:8]}.parquet"
        with pq.ParquetWriter(path, self.schema) as writer:

            def emit(frame: pd.DataFrame) -> None:
                table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
                writer.write_table(table, row_group_size=RUN_ROWS)

            _merge_runs(paths, by, emit)
        for p in paths:
            p.unlink()
        return path


class _Cursor:
    """The unmerged rows of one run: a buffer of at most one batch, refilled when empty."""

    def __init__(self, path: Path) -> None:
        self._batches = pq.ParquetFile(path).iter_batches(batch_size=RUN_ROWS)
        self.buffer = pd.DataFrame()
        self.exhausted = False
        self.refill()

    def refill(self) -> None:
        while not len(self.buffer) and not self.exhausted:
            batch = next(self._batches, None)
            if batch is None:
                self.exhausted = True
            else:
                self.buffer = batch.to_pandas()

    @property
    def done(self) -> bool:
        return self.exhausted and not len(self.buffer)

    def last(self, by: Key) -> tuple[Any, ...]:
        primary, secondary = _keys(self.buffer.iloc[-1:], by)
        return (primary[0],) if secondary is None else (primary[0], secondary[0])

    def take(self, bound: tuple[Any, ...] | None, by: Key) -> pd.DataFrame:
        """Remove and return the rows with a key at most ``bound`` (all when None)."""
        if bound is None:
            n = len(self.buffer)
        else:
            primary, secondary = _keys(self.buffer, by)
            upto = primary < bound[0]
            if secondary is None:
                upto |= primary == bound[0]
            else:
                upto |= (primary == bound[0]) & (secondary <= bound[1])
            n = int(np.count_nonzero(upto))  # a prefix: the run is sorted
        head, self.buffer = self.buffer.iloc[:n], self.buffer.iloc[n:]
        return head


def _merge_runs(paths: list[Path], by: Key, emit: Callable[[pd.DataFrame], None]) -> None:
    """K-way merge in batches: emit everything no unread row can precede, then refill.

    The bound is the smallest last-buffered key among runs with rows still unread; every
    buffered row up to it is final. The run that set the bound empties its buffer, so
    each round reads at least one batch.
    """
    cursors = [_Cursor(p) for p in paths]
    while True:
        live = [c for c in cursors if not c.done]
        if not live:
            return
        pending = [c.last(by) for c in live if not c.exhausted]
        bound = min(pending) if pending else None
        parts = [part for c in live if len(part := c.take(bound, by))]
        if parts:
            emit(sorted_frame(pd.concat(parts, ignore_index=True), by))
        for c in live:
            c.refill()
