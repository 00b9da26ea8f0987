"""Batch scoring: a leads file in, a scores file out, in bounded memory whatever its size.

    leadscore score --leads leads.csv [--actions actions.csv] --out scores.csv
        [--model models:/lead-readiness@champion | FOLDER] [--as-of 2026-03-01T00:00:00Z]
        [--chunk-size 50000] [--reasons 3] [--sort] [--to-log] [--no-progress]

One row per lead: ``lead_id``, ``p_<stage>`` per scored stage, ``score``, ``grade``,
``category``, ``reasons`` (the top ``--reasons`` in words, as
:meth:`ReadinessModel.score_matrix` writes them; absent with ``--reasons 0``, which is
several times faster) and ``model_version``. CSV or Parquet by the output's suffix; CSV
floats are written at full precision (read them back with ``float_precision="round_trip"``
to get the exact probabilities).

How memory stays bounded, and why this way:

* **Leads are streamed** in chunks of ``--chunk-size`` rows (pandas' chunked CSV reader
  with every column as text, or pyarrow's buffered Parquet reader: pyarrow decodes a row
  group at a time, so Parquet memory follows the file's row-group size, not its length)
  and every chunk goes through the training loaders' own checks (:mod:`features.loaders`),
  so a bad file gets the same one-line refusal, with row numbers counted as file lines.
  Ids repeated *across* chunks are caught by remembering a 64-bit hash of every id (8
  bytes a lead); a hash seen twice triggers a rescan of the id column that names both
  lines, and lets a hash collision (about one file of 5 million leads in a million) pass.
* **Actions are hash-partitioned.** An actions file is exported in time order, not lead
  order, so the actions of one chunk of leads are spread over the whole file. Requiring it
  sorted by lead id (and the leads file in the same order) would push an external sort
  of the biggest file onto every user; instead one streaming pass writes the leads and
  the actions into ``K`` temporary Parquet shards by ``hash(lead_id) mod K``
  (``K = leads / chunk size``, more when actions are dense), and each shard, a
  chunk's worth of leads with all their actions, is scored on its own. It costs one
  compressed rewrite of the data and works for any row order. Refused: an action whose
  lead is not in the leads file (while sharding, with its line) and a shard too big to
  score at once (only when one lead has millions of actions).
* **Output keeps the input order.** Streamed chunks are written as they are scored; shards
  are written as runs sorted by input line and merged back into file order.
* ``--sort`` (score descending, then lead id): every chunk is sorted and written as a
  Parquet run, and the runs are merged batch by batch (at most 128 at a time; more are
  merged in rounds), so memory holds one small batch per run. pyarrow has no spilling
  sort (Acero's ``order_by`` holds the whole table), hence our own merge.
* **Nothing half-done is left behind.** The output is written under a temporary name and
  renamed when complete. With ``--to-log`` the scores are staged and written to the
  scoring log (the sales board's source) only once the whole file scored, in
  transactions of 2,000 rows, so a refused file logs nothing. (If the database fails
  part-way, the transactions already committed stay: the log is append-only and a
  rerun only adds newer rows.)

Exit status of ``leadscore score`` (``serving.commands``): 0 done, 2 bad input (a refused
file, a bad option; the message is one line on stderr), 1 anything else (the model cannot
be loaded, the output cannot be written).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from features.batch import FeatureError, aggregated_columns
from features.builder import BuildReport

# The loaders expose whole-file functions only; batch scoring applies the very same
# checks chunk by chunk, so it uses their building blocks rather than a copy of them.
from features.loaders import (
    ACTION_TYPE,
    LEAD_ID,
    OCCURRED_AT,
    DataError,
    _as_text,
    _check_delimiter,
    _check_known,
    _check_required,
    _check_unique,
    _csv_call,
    _format_rows,
    _long_row_error,
    _missing_tokens,
    _normalised,
    _one_line,
    _parse_field,
    _parse_ids,
    _parse_numeric,
    _parse_timestamps,
    _raw_header,
    _refuse,
    _rename_canonical,
)
from features.spec import CategoricalField, FeatureSpec, normalise_token
from models.readiness import ReadinessModel, _reason_text
from models.reasons import Reason
from serving.model_store import ModelStore, ServedModel
from serving.settings import ServingSettings

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
DEFAULT_CHUNK = 50_000
#: Actions are read in chunks this many times the lead chunk (a lead has ~10-50 actions).
ACTIONS_PER_CHUNK = 10
#: At most this many shards: each is an open Parquet writer while the data is partitioned.
MAX_SHARDS = 256
#: A shard with more actions than this is refused rather than risk running out of memory
#: (~150 bytes an action while its features are built); shards are sized to hold far fewer.
MAX_SHARD_ACTIONS = 4_000_000
#: Rows per batch and row group of a sorted run: memory while merging is runs x this.
RUN_ROWS = 2048
MAX_FAN_IN = 128
#: Rows per scoring-log transaction (the API's writer groups up to this many too).
LOG_ROWS = 2000
#: pyarrow reads Parquet through a buffer this big instead of a whole row group at once.
PARQUET_BUFFER = 1 << 20
LINE = "_line"  # file line of a lead: the order key of runs, dropped from the output
_FIRST_DATA_LINE = 2
_SOURCE_FIELD = "acquisition_source"  # what the scoring log and the board filter on
_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIX = ".parquet"


class UsageError(ValueError):
    """Options that cannot work together (exit status 2, like argparse's own errors)."""


@dataclass(frozen=True)
class Options:
    """What one batch run is asked to do; ``model=None`` means the settings' model URI."""

    leads: Path
    out: Path
    actions: Path | None = None
    model: str | None = None
    as_of: pd.Timestamp | None = None
    chunk_size: int = DEFAULT_CHUNK
    reasons: int = 3
    sort: bool = False
    to_log: bool = False
    progress: bool = True


@dataclass
class Summary:
    """What a run did, for the closing line on stderr and for tests."""

    leads: int = 0
    seconds: float = 0.0
    out: Path | None = None
    model: str = ""
    logged: int = 0
    adjusted: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        rate = self.leads / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"scored {self.leads:,} leads with {self.model} in {self.seconds:.1f} s "
            f"({rate:,.0f} leads/s) -> {self.out}"
        )
        if self.logged:
            text += f"; {self.logged:,} written to the scoring log"
        if self.adjusted:
            shown = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.adjusted.items()))
            text += f"; values adjusted ({shown})"
        return text


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def run(options: Options, settings: ServingSettings) -> Summary:
    """Score ``options.leads`` into ``options.out``; raises DataError on a refused file."""
    started = time.perf_counter()
    _check_options(options)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    # Scratch space next to the output: same file system (the final rename is atomic) and
    # the room the output needs anyway, where /tmp may be a small RAM disk.
    with tempfile.TemporaryDirectory(prefix=".leadscore-batch-", dir=options.out.parent) as tmp:
        work = Path(tmp)
        served = load_model(options.model or settings.model_uri, settings, work)
        job = _Job(options, served, work)
        job.score()
        summary = job.summary
        if job.log_stage is not None:
            summary.logged = _write_log(job.log_stage, settings, served, job.bar)
    summary.seconds = time.perf_counter() - started
    return summary


def load_model(uri: str, settings: ServingSettings, scratch: Path) -> ServedModel:
    """The model the service would load for ``uri``, verified the same way (spec, golden rows).

    The store normally publishes a registry download as the service's "last known good"
    copy, and every worker then swaps to it; a batch job must not reload the service, so
    its copy goes to a scratch cache instead.
    """
    private = settings.model_copy(
        update={"model_uri": uri, "model_cache_dir": scratch / "model-cache"}
    )
    return ModelStore(private)._fetch(uri)


def _check_options(options: Options) -> None:
    for path in (options.leads, options.actions):
        if path is not None and path.resolve() == options.out.resolve():
            raise UsageError(f"{options.out.name}: the output would overwrite an input file")
    if not _is_csv(options.out) and not _is_parquet(options.out):
        raise UsageError(
            f"{options.out.name}: cannot write scores of this type; "
            "expected .csv, .csv.gz or .parquet"
        )


class _Job:
    """One batch run: reads, checks, scores and writes; state shared by its phases."""

    def __init__(self, options: Options, served: ServedModel, work: Path) -> None:
        self.options = options
        self.served = served
        self.model: ReadinessModel = served.model
        self.spec: FeatureSpec = self.model.builder.spec
        self.work = work
        self.as_of = options.as_of if options.as_of is not None else pd.Timestamp.now(tz="UTC")
        self.seen = _SeenIds()
        self.summary = Summary(model=f"{served.name} version {served.version}")
        self.log_stage = work / "log.parquet" if options.to_log else None
        self._log_writer: pq.ParquetWriter | None = None

    # -- phases ----------------------------------------------------------------------

    def score(self) -> None:
        if self.options.actions is not None and self.spec.actions is None:
            raise UsageError(
                f"the model's spec '{self.spec.name}' has no actions table; drop --actions"
            )
        leads = _Table(self.options.leads, "leads", self._lead_columns())
        output = _Output(self.options.out, self.work, self._schema(with_line=False))
        try:
            if self.options.actions is not None:
                self._sharded(leads, output)
            else:
                self._check_aggregated(leads)
                self._streamed(leads, output)
            self._close_log()
            output.commit()
        finally:
            self._close_log()
            output.discard()
        self.summary.out = self.options.out

    def _streamed(self, leads: _Table, output: _Output) -> None:
        """No actions file: each chunk is complete in itself, scored and written in order."""
        runs = _Runs(self.work / "runs", self._schema(with_line=False))
        columns = self._read_columns(leads)
        with self.bar("scoring", leads.rows, "leads") as bar:
            for frame, lines in leads.chunks(self.options.chunk_size, columns):
                parsed, _ = self._parse_leads(leads, frame, lines)
                scores = self._score(parsed, None, lines)
                if self.options.sort:
                    runs.add(scores, by="score")
                else:
                    output.write(scores)
                bar.update(len(frame))
        if self.options.sort:
            self._merge(runs, output, by="score")

    def _sharded(self, leads: _Table, output: _Output) -> None:
        """Event data: partition leads and actions by lead-id hash, then score shard by shard."""
        assert self.options.actions is not None and self.spec.actions is not None
        acts = self.spec.actions
        actions = _Table(
            self.options.actions,
            "actions",
            [acts.lead_id_column, acts.type_column, acts.timestamp_column],
        )
        k = _shard_count(leads.rows, actions.rows, self.options.chunk_size)
        lead_shards = _Shards(self.work / "leads", k, self._staged_leads_schema())
        n_leads = 0
        columns = self._read_columns(leads)
        with lead_shards, self.bar("reading leads", leads.rows, "leads") as bar:
            for frame, lines in leads.chunks(self.options.chunk_size, columns):
                parsed, hashes = self._parse_leads(leads, frame, lines)
                parsed[LINE] = lines
                lead_shards.write(parsed, hashes)
                n_leads += len(frame)
                bar.update(len(frame))
        action_shards = _Shards(self.work / "actions", k, _ACTIONS_SCHEMA)
        chunk = self.options.chunk_size * ACTIONS_PER_CHUNK
        with action_shards, self.bar("sharding actions", actions.rows, "actions") as bar:
            for frame, lines in actions.chunks(chunk, actions.required):
                parsed, hashes = self._parse_actions(actions, frame, lines)
                parsed[LINE] = lines
                action_shards.write(parsed, hashes)
                bar.update(len(frame))
        runs = _Runs(self.work / "runs", self._schema(with_line=True))
        by: _Key = "score" if self.options.sort else "line"
        with self.bar("scoring", n_leads, "leads") as bar:
            for shard in range(k):
                bar.update(self._score_shard(actions, lead_shards, action_shards, shard, runs, by))
        self._merge(runs, output, by=by)

    def _score_shard(
        self,
        actions: _Table,
        lead_shards: _Shards,
        action_shards: _Shards,
        shard: int,
        runs: _Runs,
        by: _Key,
    ) -> int:
        staged = action_shards.rows(shard)
        if staged > MAX_SHARD_ACTIONS:
            raise DataError(
                actions.name,
                f"{staged:,} actions fall to one group of leads, more than the "
                f"{MAX_SHARD_ACTIONS:,} scored at once (does one lead have millions of "
                "actions?); lower --chunk-size to spread them",
            )
        leads = lead_shards.read(shard)
        events = action_shards.read(shard)
        if events is not None:
            # Hashes cleared these actions while sharding (a collision could fool them);
            # the ids themselves are compared here.
            with _file_lines(events[LINE].to_numpy()):
                _check_known(
                    actions.name,
                    actions.required[0],
                    events[LEAD_ID],
                    pd.Index([] if leads is None else leads[self.spec.id_column]),
                    "actions",
                )
        if leads is None:
            return 0
        if events is None:
            events = _ACTIONS_SCHEMA.empty_table().to_pandas()
        lines = leads[LINE].to_numpy()
        scores = self._score(leads, events, lines)
        scores[LINE] = lines
        runs.add(scores, by=by)
        return len(leads)

    def _merge(self, runs: _Runs, output: _Output, *, by: _Key) -> None:
        with self.bar("writing", self.summary.leads, "leads") as bar:

            def emit(frame: pd.DataFrame) -> None:
                output.write(frame.drop(columns=[LINE], errors="ignore"))
                bar.update(len(frame))

            runs.merge(by, emit)

    # -- parsing ---------------------------------------------------------------------

    def _lead_columns(self) -> list[str]:
        spec = self.spec
        required = [spec.id_column]
        if spec.created_at_column:
            required.append(spec.created_at_column)
        return required + [f.source for f in spec.feature_fields]

    @property
    def _pre_aggregated(self) -> bool:
        return self.options.actions is None and self.spec.actions is not None

    def _read_columns(self, leads: _Table) -> list[str]:
        """The columns worth reading: required ones, aggregates, and canonical names.

        A canonical name already in the file is read only for ``_rename_canonical``'s
        refusal of a rename onto it, which depends on the header alone and so runs once.
        """
        spec = self.spec
        names = [*leads.required, *[f.name for f in spec.fields]]
        if self._pre_aggregated:
            names += aggregated_columns(spec)
        wanted = set(names)
        columns = [c for c in leads.columns if c in wanted]
        _rename_canonical(leads.name, pd.DataFrame(columns=columns), spec, None)
        return columns

    def _check_aggregated(self, leads: _Table) -> None:
        if self.spec.actions is None:
            return
        absent = [c for c in aggregated_columns(self.spec) if c not in leads.columns]
        if absent:
            raise DataError(
                leads.name,
                f"no actions file was given and {len(absent)} of the pre-aggregated action "
                f"columns are missing (first '{absent[0]}'); pass --actions or add them",
                column=absent[0],
            )

    def _parse_leads(
        self, table: _Table, frame: pd.DataFrame, lines: np.ndarray
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """``load_leads`` on one chunk, plus the check for ids seen in earlier chunks."""
        spec, name = self.spec, table.name
        tokens = _missing_tokens(spec)
        # Built column by column under canonical names (what _rename_canonical would
        # give; its collision check ran on the header): no copy of the whole chunk.
        columns: dict[str, pd.Series] = {}
        with _file_lines(lines):
            ids = _parse_ids(name, spec.id_column, frame[spec.id_column], unique=True)
            columns[spec.id_column] = ids
            if spec.created_at_column:
                column = spec.created_at_column
                columns[column] = _parse_timestamps(
                    name, column, frame[column], tokens, required=False
                )
            for f in spec.feature_fields:
                columns[f.name] = _parse_field(name, f, frame[f.source], tokens)
            if self._pre_aggregated:
                for column in aggregated_columns(spec):
                    columns[column] = _parse_numeric(name, column, frame[column], tokens)
        hashes = _hash_ids(ids)
        repeated = self.seen.contains(hashes)
        if repeated.any():
            _refuse_repeated_ids(table, spec.id_column, ids[repeated])
        self.seen.add(hashes)
        return pd.DataFrame(columns, copy=False), hashes

    def _parse_actions(
        self, table: _Table, frame: pd.DataFrame, lines: np.ndarray
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """``load_actions`` on one chunk; a lead unknown to the leads file is refused here."""
        acts = self.spec.actions
        assert acts is not None
        name, tokens = table.name, _missing_tokens(self.spec)
        id_col, type_col, time_col = acts.lead_id_column, acts.type_column, acts.timestamp_column
        with _file_lines(lines):
            ids = _parse_ids(name, id_col, frame[id_col], unique=False)
            types = _normalised(_as_text(frame[type_col]))
            _refuse(name, type_col, (types == "").to_numpy(), *_NO_TYPE)
            if acts.unknown_types == "error":
                allowed = [t.name for t in acts.types]
                listed = ", ".join(allowed)
                _refuse(
                    name,
                    type_col,
                    ~types.isin(allowed).to_numpy(),
                    f"actions have a type the spec does not list (expected one of {listed})",
                    f"action has a type the spec does not list (expected one of {listed})",
                )
            stamps = _parse_timestamps(name, time_col, frame[time_col], tokens, required=True)
            hashes = _hash_ids(ids)
            _refuse(name, id_col, ~self.seen.contains(hashes), *_UNKNOWN_LEAD)
        parsed = pd.DataFrame({LEAD_ID: ids, ACTION_TYPE: types, OCCURRED_AT: stamps}, copy=False)
        return parsed, hashes

    # -- scoring ---------------------------------------------------------------------

    def _score(
        self, leads: pd.DataFrame, actions: pd.DataFrame | None, lines: np.ndarray
    ) -> pd.DataFrame:
        """Exactly ``ReadinessModel.score_frame`` on these leads (plus the log's extras)."""
        model, spec = self.model, self.spec
        try:
            matrix = model.builder.build(leads, actions=actions, as_of=self.as_of)
        except FeatureError as exc:
            raise _feature_refusal(exc, spec, lines, self.options.leads.name) from None
        X = matrix.values
        out = model.score_matrix(X, ids=leads[spec.id_column], reasons=0)
        sets = model.reason_sets(X, self.options.reasons) if self.options.reasons else None
        if sets is not None:
            text = pd.Series([_reason_text(s) for s in sets], index=out.index, dtype=object)
            out.insert(list(out.columns).index("model_version"), "reasons", text)
        self._tally(matrix.report)
        if self.log_stage is not None:
            self._stage_log(out, leads, matrix.report, sets)
        self.summary.leads += len(leads)
        return out

    def _tally(self, report: BuildReport) -> None:
        summary = report.summary()
        adjusted = self.summary.adjusted
        for kind in ("unseen", "clipped"):
            for name, count in summary[kind].items():
                adjusted[f"{name} {kind}"] += count
        for kind in ("unknown_action_types", "actions_after_cutoff"):
            if summary[kind]:
                adjusted[kind.replace("_", " ")] += summary[kind]

    def _stage_log(
        self,
        out: pd.DataFrame,
        leads: pd.DataFrame,
        report: BuildReport,
        sets: list[dict[str, list[Reason]]] | None,
    ) -> None:
        """Keep what the scoring log needs; it is written only once the whole file scored."""
        assert self.log_stage is not None
        stages = self.model.stages
        frame = out[["lead_id", *[f"p_{s}" for s in stages], "score", "grade", "category"]].copy()
        frame["reasons_json"] = (
            [json.dumps({k: [r.to_dict() for r in v] for k, v in s.items()}) for s in sets]
            if sets is not None
            else "{}"
        )
        frame["warnings_json"] = _warnings(report, len(out))
        frame["acquisition_source"] = _sources(leads)
        frame["scored_at"] = pd.Timestamp.now(tz="UTC")
        table = pa.Table.from_pandas(frame, schema=_log_schema(stages), preserve_index=False)
        if self._log_writer is None:
            self._log_writer = pq.ParquetWriter(self.log_stage, table.schema)
        self._log_writer.write_table(table)

    def _close_log(self) -> None:
        if self._log_writer is not None:
            self._log_writer.close()
            self._log_writer = None

    # -- helpers ---------------------------------------------------------------------

    def _schema(self, *, with_line: bool) -> pa.Schema:
        fields = [pa.field("lead_id", pa.string())]
        fields += [pa.field(f"p_{s}", pa.float64()) for s in self.model.stages]
        fields += [
            pa.field("score", pa.int64()),
            pa.field("grade", pa.string()),
            pa.field("category", pa.string()),
        ]
        if self.options.reasons:
            fields.append(pa.field("reasons", pa.string()))
        fields.append(pa.field("model_version", pa.string()))
        if with_line:
            fields.append(pa.field(LINE, pa.int64()))
        return pa.schema(fields)

    def _staged_leads_schema(self) -> pa.Schema:
        spec = self.spec
        fields = [pa.field(spec.id_column, pa.string())]
        if spec.created_at_column:
            fields.append(pa.field(spec.created_at_column, pa.timestamp("ns", tz="UTC")))
        for f in spec.feature_fields:
            kind = pa.string() if isinstance(f, CategoricalField) else pa.float64()
            fields.append(pa.field(f.name, kind))
        fields.append(pa.field(LINE, pa.int64()))
        return pa.schema(fields)

    def bar(self, desc: str, total: int | None, unit: str) -> tqdm[Any]:
        return tqdm(
            total=total,
            desc=desc,
            unit=f" {unit}",
            unit_scale=True,
            file=sys.stderr,
            disable=not self.options.progress,
            mininterval=0.5,
            dynamic_ncols=True,
        )


_Key = Literal["line", "score"]
_NO_TYPE = ("rows have no action type", "row has no action type")
_UNKNOWN_LEAD = (
    "actions belong to leads that are not in the leads table",
    "action belongs to a lead that is not in the leads table",
)
_ACTIONS_SCHEMA = pa.schema(
    [
        pa.field(LEAD_ID, pa.string()),
        pa.field(ACTION_TYPE, pa.string()),
        pa.field(OCCURRED_AT, pa.timestamp("ns", tz="UTC")),
        pa.field(LINE, pa.int64()),
    ]
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
    if _SOURCE_FIELD not in leads.columns:
        return [None] * len(leads)
    codes, uniques = pd.factorize(leads[_SOURCE_FIELD], use_na_sentinel=True)
    folded = [normalise_token(str(u))[:64] for u in uniques]
    return [None if c < 0 else folded[c] for c in codes]


def _feature_refusal(
    exc: FeatureError, spec: FeatureSpec, lines: np.ndarray, file: str
) -> DataError:
    """A value the loaders let through but the builder refuses, named like a loader would."""
    column = next((f.source for f in spec.fields if f.name == exc.field), exc.field)
    rows = [int(lines[r]) for r in exc.rows]
    where = f" ({_format_rows(rows)})" if rows else ""
    return DataError(file, f"column '{column}': {exc.problem}{where}", column=column, rows=rows)


# --------------------------------------------------------------------------------------
# Reading tables in chunks
# --------------------------------------------------------------------------------------


class _Table:
    """A leads or actions file read in chunks, after the shape checks ``read_table`` makes.

    ``rows`` is exact for Parquet; for CSV it counts lines, which overstates the rows
    only when a quoted value spans lines (it sizes shards and progress bars, no more).
    """

    def __init__(self, path: Path, kind: str, required: Sequence[str]) -> None:
        self.path, self.kind, self.name = path, kind, path.name
        self.required = list(dict.fromkeys(required))
        self._exists()
        self.csv = _is_csv(path)
        self.columns = self._csv_header() if self.csv else self._parquet_header()
        _check_required(self.name, self.columns, self.required)
        self.rows = self._count()
        if self.rows == 0:
            raise DataError(self.name, f"the {kind} file has no rows (only a header)")

    def chunks(
        self, size: int, columns: Sequence[str] | None = None
    ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """(rows, their file lines) in file order; ``columns`` narrows what is returned."""
        first = 0
        parts = self._csv_chunks(size) if self.csv else self._parquet_chunks(size, columns)
        for frame in parts:
            if self.csv and columns is not None:
                frame = frame[list(columns)]  # Parquet reads only these in the first place
            frame.index = pd.RangeIndex(len(frame))  # in place: no copy of the chunk
            lines = np.arange(first, first + len(frame), dtype=np.int64) + _FIRST_DATA_LINE
            first += len(frame)
            yield frame, lines
        if first == 0:
            raise DataError(self.name, f"the {self.kind} file has no rows (only a header)")

    def _exists(self) -> None:
        p = self.path
        if not p.is_file():
            where = "is a directory, not a file" if p.is_dir() else "not found"
            raise DataError(self.name, f"{self.kind} file {where} ({p})")
        if not (_is_csv(p) or _is_parquet(p)):
            raise DataError(
                self.name,
                f"cannot read a {self.kind} file of this type; expected .csv, .csv.gz or .parquet",
            )

    def _csv_header(self) -> list[str]:
        if self.path.stat().st_size == 0:
            raise DataError(self.name, f"the {self.kind} file is empty: it has no rows")
        header = _csv_call(self.path, self.kind, lambda: _raw_header(self.path))
        if header is None:
            raise DataError(self.name, f"the {self.kind} file is empty: it has no rows")
        _check_delimiter(self.name, header)
        _check_unique(self.name, header)
        return header

    def _parquet_header(self) -> list[str]:
        names = self._parquet(lambda: [str(n) for n in pq.read_schema(self.path).names])
        _check_unique(self.name, names)
        return names

    def _count(self) -> int:
        if not self.csv:
            return int(self._parquet(lambda: pq.ParquetFile(self.path).metadata.num_rows))
        opener = gzip.open if self.name.lower().endswith(".gz") else open
        lines, last = 0, b"\n"
        with opener(self.path, "rb") as handle:
            while block := handle.read(1 << 24):
                lines += block.count(b"\n")
                last = block[-1:]
        return max(0, lines + (last != b"\n") - 1)

    def _csv_chunks(self, size: int) -> Iterator[pd.DataFrame]:
        p, kind = self.path, self.kind
        reader = _csv_call(
            p,
            kind,
            lambda: pd.read_csv(
                p,
                dtype=str,
                keep_default_na=False,
                na_filter=False,  # "NA" and "" stay text the loaders judge
                index_col=False,
                encoding="utf-8-sig",
                chunksize=size,
            ),
        )
        with reader, warnings.catch_warnings():
            # pandas warns, then drops, fields beyond the header; the loaders refuse them.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            while True:
                try:
                    frame = _csv_call(p, kind, lambda: next(reader, None))
                except pd.errors.ParserWarning:
                    raise _long_row_error(p, len(self.columns)) from None
                if frame is None:
                    return
                yield frame

    def _parquet_chunks(self, size: int, columns: Sequence[str] | None) -> Iterator[pd.DataFrame]:
        wanted = list(columns) if columns is not None else None
        handle = self._parquet(
            lambda: pq.ParquetFile(self.path, pre_buffer=False, buffer_size=PARQUET_BUFFER)
        )
        batches = handle.iter_batches(batch_size=size, columns=wanted)
        while True:
            batch = self._parquet(lambda: next(batches, None))
            if batch is None:
                return
            table = pa.Table.from_batches([batch])
            del batch  # self_destruct below frees each column once converted
            # ignore_metadata: a stored pandas index is an ordinary column, as the loaders
            # read it; split_blocks: no consolidated copy of all numeric columns.
            yield table.to_pandas(ignore_metadata=True, split_blocks=True, self_destruct=True)

    def _parquet(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except PermissionError:
            raise DataError(
                self.name, f"the {self.kind} file cannot be read (permission denied)"
            ) from None
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataError(
                self.name,
                f"the {self.kind} file is not a readable Parquet file ({_one_line(str(exc))})",
            ) from None


def _is_csv(path: Path) -> bool:
    return path.name.lower().endswith(_CSV_SUFFIXES)


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(_PARQUET_SUFFIX)


@contextmanager
def _file_lines(lines: np.ndarray) -> Iterator[None]:
    """Turn a loader's refusal of a chunk into one that names lines of the whole file.

    The loaders number rows from the top of what they were given (row 2 is its first);
    ``lines[i]`` is the file line of the chunk's row ``i``.
    """
    try:
        yield
    except DataError as exc:
        if not exc.rows:
            raise
        moved = [int(lines[r - _FIRST_DATA_LINE]) for r in exc.rows]
        detail = exc.detail.replace(f"({_format_rows(exc.rows)})", f"({_format_rows(moved)})")
        raise DataError(exc.file, detail, column=exc.column, rows=moved) from None


def _refuse_repeated_ids(table: _Table, column: str, suspects: pd.Series) -> None:
    """Name every line of ids whose hash was seen in an earlier chunk, or return.

    Hashes only say "probably seen": the id column is read again (ids only) and the rows
    holding a suspect id are handed to the loaders' own duplicate check, which refuses
    them with its usual message (and passes if it was a hash collision after all).
    """
    wanted = set(suspects.tolist())
    ids: list[pd.Series] = []
    found: list[np.ndarray] = []
    for frame, lines in table.chunks(RUN_ROWS * 16, columns=[column]):
        text = _as_text(frame[column])
        hit = text.isin(wanted).to_numpy()
        if hit.any():
            ids.append(text[hit])
            found.append(lines[hit])
    if not ids:
        return
    with _file_lines(np.concatenate(found)):
        _parse_ids(table.name, column, pd.concat(ids, ignore_index=True), unique=True)


# --------------------------------------------------------------------------------------
# Ids seen, shards, runs, output
# --------------------------------------------------------------------------------------


def _hash_ids(ids: pd.Series) -> np.ndarray:
    """A stable 64-bit hash per id (SipHash with a fixed key: the same in every process)."""
    return np.asarray(pd.util.hash_array(ids.to_numpy(dtype=object)), dtype=np.uint64)


class _SeenIds:
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


def _shard_count(leads: int, actions: int, chunk: int) -> int:
    """Enough shards for a chunk's worth of leads each, and well under the actions cap."""
    by_leads = math.ceil(leads / chunk)
    by_actions = math.ceil(actions / (MAX_SHARD_ACTIONS // 4))
    return max(1, min(MAX_SHARDS, max(by_leads, by_actions)))


class _Shards:
    """``k`` Parquet files written side by side; a row goes to shard ``hash mod k``.

    Rows keep their file order inside a shard, so a lead's actions reach the feature
    builder in the order ``load_actions`` would give them (decayed sums are then
    bit-for-bit the same).
    """

    def __init__(self, folder: Path, k: int, schema: pa.Schema) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.k, self.schema = folder, k, schema
        self._writers: dict[int, pq.ParquetWriter] = {}

    def __enter__(self) -> _Shards:
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


def _sorted(frame: pd.DataFrame, by: _Key) -> pd.DataFrame:
    if by == "line":
        out = frame.sort_values(LINE, kind="stable")
    else:
        out = frame.sort_values(["score", "lead_id"], ascending=[False, True], kind="stable")
    return out.reset_index(drop=True)


def _keys(frame: pd.DataFrame, by: _Key) -> tuple[np.ndarray, np.ndarray | None]:
    """(primary, secondary) merge keys, both ascending: (line,) or (-score, lead id)."""
    if by == "line":
        return frame[LINE].to_numpy(np.int64), None
    return -frame["score"].to_numpy(np.int64), frame["lead_id"].to_numpy(object)


class _Runs:
    """Sorted Parquet runs on disk, merged in batches into one sorted stream.

    A run is written with row groups of ``RUN_ROWS`` so the merge reads one small batch
    per run at a time: memory is fan-in x RUN_ROWS rows, whatever the total.
    """

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.schema = folder, schema
        self.paths: list[Path] = []

    def add(self, frame: pd.DataFrame, *, by: _Key | None = None) -> None:
        """Store ``frame`` as a run; ``by`` sorts it first (else it must be sorted)."""
        if not len(frame):
            return
        if by is not None:
            frame = _sorted(frame, by)
        path = self.folder / f"run-{len(self.paths):06d}.parquet"
        table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        pq.write_table(table, path, row_group_size=RUN_ROWS)
        self.paths.append(path)

    def merge(self, by: _Key, emit: Callable[[pd.DataFrame], None]) -> None:
        paths = self.paths
        while len(paths) > MAX_FAN_IN:
            paths = [
                self._merge_to_file(paths[i : i + MAX_FAN_IN], by)
                for i in range(0, len(paths), MAX_FAN_IN)
            ]
        _merge_runs(paths, by, emit)

    def _merge_to_file(self, paths: list[Path], by: _Key) -> Path:
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

    def last(self, by: _Key) -> tuple[Any, ...]:
        primary, secondary = _keys(self.buffer.iloc[-1:], by)
        return (primary[0],) if secondary is None else (primary[0], secondary[0])

    def take(self, bound: tuple[Any, ...] | None, by: _Key) -> pd.DataFrame:
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


def _merge_runs(paths: list[Path], by: _Key, emit: Callable[[pd.DataFrame], None]) -> None:
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
            emit(_sorted(pd.concat(parts, ignore_index=True), by))
        for c in live:
            c.refill()


class _Output:
    """The scores file, written under a temporary name and renamed once complete.

    CSV is appended chunk by chunk (a gzip member per chunk, which every gzip reader
    reads as one stream); Parquet gets a row group per ~chunk.
    """

    def __init__(self, path: Path, work: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self.csv = _is_csv(path)
        self._tmp = work / "output.partial"
        self._pending: list[pd.DataFrame] = []
        self._pending_rows = 0
        self._header = True
        self._parquet = None if self.csv else pq.ParquetWriter(self._tmp, schema)

    def write(self, frame: pd.DataFrame) -> None:
        # The merge emits a few thousand rows at a time: gather row groups of useful size.
        self._pending.append(frame)
        self._pending_rows += len(frame)
        if self._pending_rows >= DEFAULT_CHUNK:
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


# --------------------------------------------------------------------------------------
# The scoring log
# --------------------------------------------------------------------------------------


def _write_log(
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
    from scorelog.store import ScoreRow

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
