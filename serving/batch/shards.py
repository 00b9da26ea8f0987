"""Reading the input in bounded memory: ids seen so far, and hash-partitioned shards.

* **Ids repeated across chunks** are caught by remembering a 64-bit hash of every id
  (8 bytes a lead); a hash seen twice triggers a rescan of the id column that names
  both lines (and lets a hash collision, about one file of 5 million leads in a
  million, pass).
* **Actions are hash-partitioned.** An actions file is exported in time order, not lead
  order, so the actions of one chunk of leads are spread over the whole file. One
  streaming pass writes leads and actions into ``K`` temporary Parquet shards by
  ``hash(lead_id) mod K``; each shard, a chunk's worth of leads with all their
  actions, is then scored on its own. It costs one compressed rewrite of the data and
  works for any row order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.batch import FeatureError
from features.chunks import ChunkedTable, file_lines
from features.loaders import (
    ACTION_TYPE,
    LEAD_ID,
    OCCURRED_AT,
    DataError,
    as_text,
    format_rows,
    parse_ids,
)
from features.spec import FeatureSpec
from serving.batch.sort import LINE, RUN_ROWS

#: At most this many shards: each is an open Parquet writer while the data is partitioned.
MAX_SHARDS = 256
#: A shard with more actions than this is refused rather than risk running out of memory
#: (~150 bytes an action while its features are built); shards are sized to hold far fewer.
MAX_SHARD_ACTIONS = 4_000_000

ACTIONS_SCHEMA = pa.schema(
    [
        pa.field(LEAD_ID, pa.string()),
        pa.field(ACTION_TYPE, pa.string()),
        pa.field(OCCURRED_AT, pa.timestamp("ns", tz="UTC")),
        pa.field(LINE, pa.int64()),
    ]
)


def refuse_repeated_ids(table: ChunkedTable, column: str, suspects: pd.Series) -> None:
    """Name every line of ids whose hash was seen in an earlier chunk, or return.

    Hashes only say "probably seen": the id column is read again (ids only) and the rows
    holding a suspect id are handed to the loaders' own duplicate check, which refuses
    them with its usual message (and passes if it was a hash collision after all).
    """
    wanted = set(suspects.tolist())
    ids: list[pd.Series] = []
    found: list[np.ndarray] = []
    for frame, lines in table.chunks(RUN_ROWS * 16, columns=[column]):
        text = as_text(frame[column])
        hit = text.isin(wanted).to_numpy()
        if hit.any():
            ids.append(text[hit])
            found.append(lines[hit])
    if not ids:
        return
    with file_lines(np.concatenate(found)):
        parse_ids(table.name, column, pd.concat(ids, ignore_index=True), unique=True)


def feature_refusal(
    exc: FeatureError, spec: FeatureSpec, lines: np.ndarray, file: str
) -> DataError:
    """A value the loaders let through but the builder refuses, named like a loader would."""
    column = next((f.source for f in spec.fields if f.name == exc.field), exc.field)
    rows = [int(lines[r]) for r in exc.rows]
    where = f" ({format_rows(rows)})" if rows else ""
    return DataError(file, f"column '{column}': {exc.problem}{where}", column=column, rows=rows)


def hash_ids(ids: pd.Series) -> np.ndarray:
    """A stable 64-bit hash per id (SipHash with a fixed key: the same in every process)."""
    return np.asarray(pd.util.hash_array(ids.to_numpy(dtype=object)), dtype=np.uint64)


class SeenIds:
    """Hashes of every lead id read so far: 8 bytes a lead, whatever the ids look like.

    Sorted runs merged like a binary counter (a run merges into the one before it while
    that one is at most twice its size), so there are O(log n) runs, adding costs
    O(n log n) over the whole file and a lookup is a few binary searches.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            found |= run[at] == hashes
        return found

    def add(self, hashes: np.ndarray) -> None:
        self._runs.append(np.sort(hashes))
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            top = self._runs.pop()
            # Stable sort of two sorted runs is timsort's linear merge.
            self._runs[-1] = np.sort(np.concatenate([self._runs[-1], top]), kind="stable")


def shard_count(leads: int, actions: int, chunk: int) -> int:
    """Enough shards for a chunk's worth of leads each, and well under the actions cap."""
    by_leads = math.ceil(leads / chunk)
    by_actions = math.ceil(actions / (MAX_SHARD_ACTIONS // 4))
    return max(1, min(MAX_SHARDS, max(by_leads, by_actions)))


class Shards:
    """``k`` Parquet files written side by side; a row goes to shard ``hash mod k``.

    Rows keep their file order inside a shard, so a lead's actions reach the feature
    builder in the order ``load_actions`` would give them (decayed sums are then
    bit-for-bit the same).
    """

    def __init__(self, folder: Path, k: int, schema: pa.Schema) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.k, self.schema = folder, k, schema
        self._writers: dict[int, pq.ParquetWriter] = {}

    def __enter__(self) -> Shards:
        return self

    def __exit__(self, *exc: object) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def write(self, frame: pd.DataFrame, hashes: np.ndarray) -> None:
        shard = (hashes % np.uint64(self.k)).astype(np.int64)
        order = np.argsort(shard, kind="stable")
        counts = np.bincount(shard, minlength=self.k)
        table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        table = table.take(pa.array(order))
        start = 0
        for s in np.flatnonzero(counts):
            part = table.slice(start, int(counts[s]))
            start += int(counts[s])
            self._writer(int(s)).write_table(part)

    def rows(self, shard: int) -> int:
        path = self._path(shard)
        return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0

    def read(self, shard: int) -> pd.DataFrame | None:
        path = self._path(shard)
        return pq.read_table(path).to_pandas() if path.exists() else None

    def _writer(self, shard: int) -> pq.ParquetWriter:
        writer = self._writers.get(shard)
        if writer is None:
            writer = pq.ParquetWriter(self._path(shard), self.schema)
            self._writers[shard] = writer
        return writer

    def _path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:03d}.parquet"
