"""Scores that age: every open lead re-scored as of now, from the input it was scored on.

A lead's recency features move every day although nothing happens to it: "days since
the last pricing-page visit" grows, visits fall out of the 7-day window, engagement
decays. Its stored score does not, so the board would rank yesterday's answers. A
rescore takes each open lead (not won, lost or disqualified) with its latest stored
input (``scorelog.inputs``), sets the cut-off to now, and scores it again:

* a lead whose score, grade and category come out unchanged gets no new row (its
  latest score still says everything; a run over a quiet log writes almost nothing);
* a changed lead gets a new score row (with reasons, computed for changed leads only)
  through the scoring log's writer, so the same outbox listener writes the same events
  as a live score: a lead that cools from sql to mql tells the CRM, with the reasons;
* a lead scored live while the run was going keeps its newer score (the run's scores
  carry the run's start time and never replace a newer one).

Leads whose input was never stored (logged before inputs were kept) or was pruned by
retention are counted and skipped: they are re-scored when the CRM next sends them.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features.batch import AS_OF_KEY, FeatureError
from features.builder import FeatureMatrix
from scorelog.display import DisplayWriter
from scorelog.engine import make_engine, migrate
from scorelog.events import ChangeEvents
from scorelog.inputs import InputFormatError, pack_input, spec_version_of, unpack_input
from scorelog.rescore_runs import exclusive, finish_run, last_started, start_run
from scorelog.rows import ScoreRow
from scorelog.store import ScoreLog
from scorelog.worklist import OpenLead, iter_open_leads
from serving.model_store import ModelLoadError, ModelStore, ServedModel
from serving.settings import ServingSettings

log = logging.getLogger(__name__)
#: Commit groups in flight while the next batch is scored (bounds memory, keeps both busy).
_IN_FLIGHT = 2


@dataclass
class RescoreSummary:
    open_leads: int = 0
    rescored: int = 0
    unchanged: int = 0
    no_input: int = 0
    unscorable: int = 0
    events: int = 0
    seconds: float = 0.0

    @property
    def leads_per_s(self) -> float:
        return self.open_leads / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (
            f"rescored {self.open_leads:,} open leads in {self.seconds:.1f} s "
            f"({self.leads_per_s:,.0f}/s): {self.rescored:,} changed, {self.unchanged:,} "
            f"unchanged, {self.no_input:,} without a stored input, {self.unscorable:,} "
            f"unscorable; {self.events:,} events"
        )


def rescore(
    scorelog: ScoreLog,
    served: ServedModel,
    *,
    events: ChangeEvents | None = None,
    as_of: datetime | None = None,
    batch_size: int = 5000,
    reasons: int = 3,
    progress: Callable[[RescoreSummary], None] | None = None,
) -> RescoreSummary:
    """Re-score every open lead as of ``as_of`` (default: now, the run's start).

    The new scores are stamped with the run's start (when they were computed), whatever
    ``as_of`` is, so they replace a lead's latest score only when that is older.
    """
    started = time.perf_counter()
    now = datetime.now(UTC)
    as_of = as_of or now
    summary = RescoreSummary()
    written_before = events.events_written if events is not None else 0
    run_id = start_run(scorelog.engine, now)
    request_id = f"rescore-{uuid.uuid4().hex[:12]}"
    pending: deque[Future[Any]] = deque()
    for batch in iter_open_leads(scorelog.engine, batch_size):
        rows = _rescored_rows(batch, served, as_of, now, reasons, request_id, summary)
        if rows:
            pending.append(scorelog.submit_scores(rows))
        while len(pending) > _IN_FLIGHT:
            pending.popleft().result()
        if progress is not None:
            progress(summary)
    while pending:
        pending.popleft().result()
    if events is not None:
        summary.events = events.events_written - written_before
    summary.seconds = time.perf_counter() - started
    finish_run(
        scorelog.engine, run_id, datetime.now(UTC), summary.open_leads, summary.rescored,
        summary.events,
    )  # fmt: skip
    return summary


def _rescored_rows(
    batch: list[OpenLead],
    served: ServedModel,
    as_of: datetime,
    now: datetime,
    reasons: int,
    request_id: str,
    summary: RescoreSummary,
) -> list[ScoreRow]:
    """Score a page of open leads; the rows of those that changed.

    One feature matrix and one prediction for the page; reasons (SHAP, the expensive
    part) and warnings only for the leads whose score, grade or category moved.
    """
    summary.open_leads += len(batch)
    leads, records = [], []
    for lead in batch:
        if lead.packed is None:
            summary.no_input += 1
            continue
        try:
            record = unpack_input(lead.packed)
        except InputFormatError:
            summary.unscorable += 1
            continue
        record[AS_OF_KEY] = as_of
        leads.append(lead)
        records.append(record)
    leads, records, matrix = _build(served, leads, records, summary)
    if matrix is None:
        return []
    model = served.model
    X = matrix.values
    P = model.probabilities(X)
    scores = model.scores(P)
    grades = model.grades(scores)
    categories = model.categories(P)
    changed = [
        i
        for i, lead in enumerate(leads)
        if (int(scores[i]), str(grades[i]), str(categories[i]))
        != (lead.score, lead.grade, lead.category)
    ]
    summary.unchanged += len(leads) - len(changed)
    summary.rescored += len(changed)
    if not changed:
        return []
    why = model.reason_sets(X[changed], reasons, P=P[changed]) if reasons else [{}] * len(changed)
    spec = model.builder.spec
    version = spec_version_of(spec)
    return [
        ScoreRow(
            request_id=request_id,
            lead_id=leads[i].lead_id,
            scored_at=now,
            model_name=served.name,
            model_version=served.version,
            probabilities={s: float(p) for s, p in zip(model.stages, P[i], strict=True)},
            score=int(scores[i]),
            grade=str(grades[i]),
            category=str(categories[i]),
            reasons={k: [r.to_dict() for r in v] for k, v in reasons_i.items()},
            warnings=matrix.report.warnings_for(i),
            acquisition_source=leads[i].acquisition_source,
            spec_version=version,
            policy_version=model.policy_version,
            input=pack_input(records[i], spec),
        )
        for i, reasons_i in zip(changed, why, strict=True)
    ]


def _build(
    served: ServedModel,
    leads: list[OpenLead],
    records: list[dict[str, Any]],
    summary: RescoreSummary,
) -> tuple[list[OpenLead], list[dict[str, Any]], FeatureMatrix | None]:
    """The page's feature matrix; a record that cannot be built any more is left out."""
    builder = served.model.builder
    if not records:
        return [], [], None
    try:
        return leads, records, builder.build(records)
    except FeatureError:
        kept = []
        for lead, record in zip(leads, records, strict=True):
            try:
                builder.build([record])
            except FeatureError:
                summary.unscorable += 1
                continue
            kept.append((lead, record))
        if not kept:
            return [], [], None
        kept_leads = [lead for lead, _ in kept]
        kept_records = [record for _, record in kept]
        return kept_leads, kept_records, builder.build(kept_records)


class RescoreBusyError(RuntimeError):
    """Another process is rescoring this scoring log right now."""


def run_job(
    settings: ServingSettings,
    *,
    batch_size: int = 5000,
    reasons: int = 3,
    progress: Callable[[RescoreSummary], None] | None = None,
) -> RescoreSummary:
    """``leadscore rescore``: the service's model and scoring log, one run, then exit.

    The model is loaded exactly as the service loads it (verified on its golden rows),
    into a scratch cache so the job never changes what the service serves. Events go to
    the outbox; the service's delivery workers send them.
    """
    engine = make_engine(
        settings.database_url_resolved(), sqlite_synchronous=settings.sqlite_synchronous
    )
    try:
        migrate(engine)
        with tempfile.TemporaryDirectory(prefix="leadscore-rescore-") as scratch:
            private = settings.model_copy(update={"model_cache_dir": Path(scratch) / "model"})
            store = ModelStore(private)
            store.load_initial()
            served = store.current
            if served is None:
                raise ModelLoadError(store.problem or "no model could be loaded", kind="fetch")
        events = ChangeEvents(min_score_change=settings.events_min_score_change)
        scorelog = ScoreLog(engine, listeners=[events, DisplayWriter()])
        scorelog.start()
        try:
            with exclusive(engine) as mine:
                if not mine:
                    raise RescoreBusyError("another rescore of this scoring log is running")
                return rescore(
                    scorelog, served, events=events, batch_size=batch_size, reasons=reasons,
                    progress=progress,
                )  # fmt: skip
        finally:
            scorelog.close()
    finally:
        engine.dispose()


def rescore_if_due(
    scorelog: ScoreLog,
    served: ServedModel | None,
    events: ChangeEvents,
    settings: ServingSettings,
) -> RescoreSummary | None:
    """The service's periodic rescore: at most one process at a time, at most once per
    ``rescore_interval_s`` across all of them (the last run's start is in the log)."""
    if served is None:
        return None
    with exclusive(scorelog.engine) as mine:
        if not mine:
            return None
        last = last_started(scorelog.engine)
        if last is not None and (datetime.now(UTC) - last).total_seconds() < (
            0.9 * settings.rescore_interval_s
        ):
            return None
        summary = rescore(
            scorelog, served, events=events, batch_size=settings.rescore_batch_size,
            reasons=settings.reasons,
        )  # fmt: skip
    log.info("periodic rescore: %s", summary.line())
    return summary
