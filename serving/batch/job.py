"""One batch run on a single machine: read in chunks, check, score, write.

The reading, the shards, the external sort, the output file and the scoring log are
modules of their own beside this one; here is the order in which they are used. How
memory stays bounded, and why this way, is in :mod:`serving.batch`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from features.batch import FeatureError, aggregated_columns
from features.builder import BuildReport
from features.chunks import ChunkedTable, file_lines
from features.loaders import (
    LEAD_ID,
    DataError,
    action_columns,
    check_known_ids,
    check_renames,
    lead_columns,
    parse_actions,
    parse_leads,
)
from features.spec import CategoricalField, FeatureSpec
from models.readiness import ReadinessModel, reason_text
from serving.batch.log import LogStage, write_log
from serving.batch.output import Output, scores_schema, writable
from serving.batch.shards import (
    ACTIONS_SCHEMA,
    MAX_SHARD_ACTIONS,
    SeenIds,
    Shards,
    feature_refusal,
    hash_ids,
    refuse_repeated_ids,
    shard_count,
)
from serving.batch.sort import LINE, Key, Runs
from serving.model_store import ModelStore, ServedModel
from serving.settings import ServingSettings

DEFAULT_CHUNK = 50_000
#: Actions are read in chunks this many times the lead chunk (a lead has ~10-50 actions).
ACTIONS_PER_CHUNK = 10


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
        job = Job(options, served, work)
        job.score()
        summary = job.summary
        if job.log_stage is not None:
            summary.logged = write_log(job.log_stage.path, settings, served, job.bar)
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
    return ModelStore(private).fetch(uri)


def _check_options(options: Options) -> None:
    for path in (options.leads, options.actions):
        if path is not None and path.resolve() == options.out.resolve():
            raise UsageError(f"{options.out.name}: the output would overwrite an input file")
    if not writable(options.out):
        raise UsageError(
            f"{options.out.name}: cannot write scores of this type; "
            "expected .csv, .csv.gz or .parquet"
        )


class Job:
    """One batch run: reads, checks, scores and writes; state shared by its phases."""

    def __init__(self, options: Options, served: ServedModel, work: Path) -> None:
        self.options = options
        self.served = served
        self.model: ReadinessModel = served.model
        self.spec: FeatureSpec = self.model.builder.spec
        self.work = work
        self.as_of = options.as_of if options.as_of is not None else pd.Timestamp.now(tz="UTC")
        self.seen = SeenIds()
        self.summary = Summary(model=f"{served.name} version {served.version}")
        self.log_stage = (
            LogStage(work / "log.parquet", self.model.stages) if options.to_log else None
        )

    # -- phases ----------------------------------------------------------------------

    def score(self) -> None:
        if self.options.actions is not None and self.spec.actions is None:
            raise UsageError(
                f"the model's spec '{self.spec.name}' has no actions table; drop --actions"
            )
        leads = ChunkedTable(self.options.leads, "leads", lead_columns(self.spec), self.spec.csv)
        output = Output(self.options.out, self.work, self._schema(with_line=False))
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

    def _streamed(self, leads: ChunkedTable, output: Output) -> None:
        """No actions file: each chunk is complete in itself, scored and written in order."""
        runs = Runs(self.work / "runs", self._schema(with_line=False))
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

    def _sharded(self, leads: ChunkedTable, output: Output) -> None:
        """Event data: partition leads and actions by lead-id hash, then score shard by shard."""
        assert self.options.actions is not None and self.spec.actions is not None
        spec = self.spec
        actions = ChunkedTable(self.options.actions, "actions", action_columns(spec), spec.csv)
        k = shard_count(leads.rows, actions.rows, self.options.chunk_size)
        lead_shards = Shards(self.work / "leads", k, self._staged_leads_schema())
        n_leads = 0
        columns = self._read_columns(leads)
        with lead_shards, self.bar("reading leads", leads.rows, "leads") as bar:
            for frame, lines in leads.chunks(self.options.chunk_size, columns):
                parsed, hashes = self._parse_leads(leads, frame, lines)
                parsed[LINE] = lines
                lead_shards.write(parsed, hashes)
                n_leads += len(frame)
                bar.update(len(frame))
        action_shards = Shards(self.work / "actions", k, ACTIONS_SCHEMA)
        chunk = self.options.chunk_size * ACTIONS_PER_CHUNK
        with action_shards, self.bar("sharding actions", actions.rows, "actions") as bar:
            for frame, lines in actions.chunks(chunk, actions.required):
                parsed, hashes = self._parse_actions(actions, frame, lines)
                parsed[LINE] = lines
                action_shards.write(parsed, hashes)
                bar.update(len(frame))
        runs = Runs(self.work / "runs", self._schema(with_line=True))
        by: Key = "score" if self.options.sort else "line"
        with self.bar("scoring", n_leads, "leads") as bar:
            for shard in range(k):
                bar.update(self._score_shard(actions, lead_shards, action_shards, shard, runs, by))
        self._merge(runs, output, by=by)

    def _score_shard(
        self,
        actions: ChunkedTable,
        lead_shards: Shards,
        action_shards: Shards,
        shard: int,
        runs: Runs,
        by: Key,
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
            with file_lines(events[LINE].to_numpy()):
                check_known_ids(
                    actions.name,
                    actions.required[0],
                    events[LEAD_ID],
                    pd.Index([] if leads is None else leads[self.spec.id_column]),
                    "actions",
                )
        if leads is None:
            return 0
        if events is None:
            events = ACTIONS_SCHEMA.empty_table().to_pandas()
        lines = leads[LINE].to_numpy()
        scores = self._score(leads, events, lines)
        scores[LINE] = lines
        runs.add(scores, by=by)
        return len(leads)

    def _merge(self, runs: Runs, output: Output, *, by: Key) -> None:
        with self.bar("writing", self.summary.leads, "leads") as bar:

            def emit(frame: pd.DataFrame) -> None:
                output.write(frame.drop(columns=[LINE], errors="ignore"))
                bar.update(len(frame))

            runs.merge(by, emit)

    # -- parsing ---------------------------------------------------------------------

    @property
    def _pre_aggregated(self) -> bool:
        return self.options.actions is None and self.spec.actions is not None

    def _read_columns(self, leads: ChunkedTable) -> list[str]:
        """The columns worth reading: required ones, aggregates, and canonical names.

        A canonical name already in the file is read only for ``check_renames``'s
        refusal of a rename onto it, which depends on the header alone and so runs once.
        """
        spec = self.spec
        names = [*leads.required, *[f.name for f in spec.fields]]
        if self._pre_aggregated:
            names += aggregated_columns(spec)
        wanted = set(names)
        columns = [c for c in leads.columns if c in wanted]
        check_renames(leads.name, columns, spec)
        return columns

    def _check_aggregated(self, leads: ChunkedTable) -> None:
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
        self, table: ChunkedTable, frame: pd.DataFrame, lines: np.ndarray
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """``load_leads`` on one chunk, plus the check for ids seen in earlier chunks."""
        spec = self.spec
        with file_lines(lines):
            parsed = parse_leads(table.name, frame, spec, aggregated=self._pre_aggregated)
        ids = parsed[spec.id_column]
        hashes = hash_ids(ids)
        repeated = self.seen.contains(hashes)
        if repeated.any():
            refuse_repeated_ids(table, spec.id_column, ids[repeated])
        self.seen.add(hashes)
        return parsed, hashes

    def _parse_actions(
        self, table: ChunkedTable, frame: pd.DataFrame, lines: np.ndarray
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """``load_actions`` on one chunk; a lead unknown to the leads file is refused here."""
        hashed: list[np.ndarray] = []  # the ids' hashes: checked here, then sharded by

        def known(ids: pd.Series) -> np.ndarray:
            hashed.append(hash_ids(ids))
            return self.seen.contains(hashed[-1])

        with file_lines(lines):
            parsed = parse_actions(table.name, frame, self.spec, known=known)
        return parsed, hashed[-1]

    # -- scoring ---------------------------------------------------------------------

    def _score(
        self, leads: pd.DataFrame, actions: pd.DataFrame | None, lines: np.ndarray
    ) -> pd.DataFrame:
        """Exactly ``ReadinessModel.score_frame`` on these leads (plus the log's extras)."""
        model, spec = self.model, self.spec
        try:
            matrix = model.builder.build(leads, actions=actions, as_of=self.as_of)
        except FeatureError as exc:
            raise feature_refusal(exc, spec, lines, self.options.leads.name) from None
        X = matrix.values
        out = model.score_matrix(X, ids=leads[spec.id_column], reasons=0)
        sets = model.reason_sets(X, self.options.reasons) if self.options.reasons else None
        if sets is not None:
            text = pd.Series([reason_text(s) for s in sets], index=out.index, dtype=object)
            out.insert(list(out.columns).index("model_version"), "reasons", text)
        self._tally(matrix.report)
        if self.log_stage is not None:
            self.log_stage.add(out, leads, matrix.report, sets)
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

    def _close_log(self) -> None:
        if self.log_stage is not None:
            self.log_stage.close()

    # -- helpers ---------------------------------------------------------------------

    def _schema(self, *, with_line: bool) -> pa.Schema:
        stages = self.model.stages
        return scores_schema(stages, reasons=bool(self.options.reasons), with_line=with_line)

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
