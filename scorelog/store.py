"""The scoring log: every score durable before its response, without one commit per request.

A commit costs a WAL write (and with SQLite ``synchronous=FULL`` or PostgreSQL an fsync), so
committing each request on its own caps the API at the disk's commit rate. Instead, one
writer thread takes whatever requests are waiting (up to ``max_batch_rows``), writes them
in ONE transaction (insert into ``scores`` + upsert of ``lead_latest``) and only after
COMMIT returns resolves each request's future: group commit, as databases do for their own
WAL. Requests that arrive while a commit is running form the next group, so groups grow
with load by themselves and a lone request pays no waiting at all.

``linger_s`` can make the writer wait that long for company before it commits. It defaults
to 0 because measurement says so (``python -m benchmarks.storage``, 2 cores): with 32
clients a 2 ms linger made groups of 32 instead of 16-25 yet *lowered* throughput by 6-30 %
(the writer sat idle while it waited), and it multiplied a lone request's latency by 3-8
(0.3 → 2.5 ms on SQLite). It may pay off only where commits are nearly free but still
worth saving, which is not the case here.

Guarantees:

* nothing is acknowledged before its COMMIT returned (then it is as durable as the engine's
  settings make it; see :mod:`.engine`);
* the rows of one ``submit_scores`` call commit together or not at all (a batch request is
  all-or-nothing);
* if a transaction fails because the database is unavailable, every request in it gets the
  exception (the API answers 503 and the client may retry) and the writer carries on with
  the next batch; if it fails for any other reason (a value the database refused), the
  group is split in halves and retried, so only the request whose rows were refused fails.
  Rows are also validated when a :class:`ScoreRow` is built.
  A failure *during* COMMIT leaves the outcome unknown; a retry may then log a score twice,
  which the append-only log tolerates (``lead_latest`` keeps one row per lead regardless);
* a submission cancelled before the writer picked it up (the client went away) is dropped;
  once picked up it is committed and can no longer be cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    TextClause,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.sql.elements import ColumnElement

from scorelog.engine import describe_error, is_unavailable, write_turn, writer
from scorelog.rows import (
    RANKED_COLUMNS,
    OutcomeConflictError,
    OutcomeRow,
    RankedLead,
    ScoreRow,
)
from scorelog.tables import Base, LeadLatest, Outcome, Score

log = logging.getLogger(__name__)


class WriteListener(Protocol):
    """Writes more rows in the writer's transaction (e.g. :class:`scorelog.events.ChangeEvents`).

    ``before_latest`` runs after the group's scores are inserted and before
    ``lead_latest`` is updated, so it still sees each lead's previous score (the group's
    leads are locked against other writers by then, so that score stays the previous one
    until COMMIT); what it writes commits or rolls back with the scores. Then
    ``committed`` or ``rolled_back`` is called.
    """

    def before_latest(
        self, connection: Connection, rows: Sequence[tuple[ScoreRow, int]]
    ) -> None: ...

    def committed(self) -> None: ...

    def rolled_back(self) -> None: ...


@dataclass
class _Submission:
    rows: Sequence[ScoreRow]
    future: Future[list[int]]


_SCORES = Base.metadata.tables["scores"]
_INPUTS = Base.metadata.tables["score_inputs"]
_LEAD_LATEST = Base.metadata.tables["lead_latest"]
_OUTCOMES = Base.metadata.tables["outcomes"]


def _insert_sql(table: Table, columns: Sequence[str], conflict: str) -> TextClause:
    """``INSERT ... ON CONFLICT ...`` as plain SQL whose parameters keep the column types.

    ON CONFLICT is spelled the same in SQLite and PostgreSQL, and SQLAlchemy's dialect
    ``insert().on_conflict_*()`` constructs are excluded from its compiled cache (they are
    recompiled on every execution), so one hand-written statement serves both backends.
    """
    names, values = ", ".join(columns), ", ".join(f":{name}" for name in columns)
    clause = text(f"INSERT INTO {table.name} ({names}) VALUES ({values}) {conflict}")
    return clause.bindparams(*(bindparam(name, type_=table.c[name].type) for name in columns))


_LATEST_UPDATED = [c.name for c in _LEAD_LATEST.columns if c.name != "lead_id"]
# Replace a lead's row only with a *newer* score (later scored_at; on a tie the later
# scores.id), so a late-arriving older score cannot hide a newer one.
_UPSERT_LATEST = _insert_sql(
    _LEAD_LATEST,
    [c.name for c in _LEAD_LATEST.columns],
    "ON CONFLICT (lead_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _LATEST_UPDATED)
    + " WHERE excluded.scored_at > lead_latest.scored_at OR (excluded.scored_at ="
    " lead_latest.scored_at AND excluded.score_id > lead_latest.score_id)",
)
# RETURNING tells "inserted" from "ignored" the same way on both backends and drivers.
_INSERT_OUTCOME = _insert_sql(
    _OUTCOMES,
    [c.name for c in _OUTCOMES.columns if c.name != "id"],
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
)
_INSERT_SCORES = insert(_SCORES)
_INSERT_INPUTS = insert(_INPUTS)
# Ids drawn from the sequence in one round trip; sorted, as the order of a select list's
# nextval() calls is not promised.
_NEXT_SCORE_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('scores', 'id')) FROM generate_series(1, :n)"
)
# One transaction-scoped advisory lock per lead, taken in key order (PostgreSQL evaluates a
# volatile select list after ORDER BY), so two writers wanting overlapping leads queue
# behind each other instead of deadlocking.
_LOCK_LEADS = text(
    "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(l, 0) AS k"
    " FROM unnest(CAST(:leads AS text[])) AS l) AS keys ORDER BY k"
)


class ScoreLog:
    """Append scores through one group-committing writer thread; read the board and history.

    Reads and :meth:`record_outcome` run on the calling thread with their own pooled
    connection (call them from a thread pool in async code).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_rows: int = 2000,
        linger_s: float = 0.0,
        listeners: Sequence[WriteListener] = (),
    ):
        if max_batch_rows < 1:
            raise ValueError("max_batch_rows must be at least 1")
        if linger_s < 0:
            raise ValueError("linger_s cannot be negative")
        self._engine = engine
        self._writer = writer(engine)
        self._max_batch_rows = max_batch_rows
        self._linger_s = linger_s
        self._listeners = tuple(listeners)
        self._dialect = engine.dialect.name
        if self._dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"the scoring log needs SQLite or PostgreSQL, not {self._dialect}")
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders submissions against the close() sentinel
        self._thread: threading.Thread | None = None
        self._closed = False
        self.commits = 0
        """Transactions committed by the writer (a measure of how well requests group)."""
        self.rows_committed = 0

    @property
    def engine(self) -> Engine:
        """The log's engine, for the read side (:mod:`scorelog.history`) and retention."""
        return self._engine

    # -- writing -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (once). Daemonic: an unclosed log cannot hang exit, and
        what it had not committed was never acknowledged either."""
        with self._lock:
            if self._closed:
                raise RuntimeError("ScoreLog is closed")
            if self._thread is not None:
                raise RuntimeError("ScoreLog already started")
            self._thread = threading.Thread(target=self._run, name="scorelog-writer", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10) -> None:
        """Commit everything already submitted, then stop the writer; later submits fail.

        Raises ``TimeoutError`` if the writer is still busy after ``timeout`` seconds (it
        keeps going, and the pending futures still complete).
        """
        with self._lock:
            first_call = not self._closed
            self._closed = True
            thread = self._thread
            if first_call and thread is not None:
                self._queue.put(None)
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"score writer still draining after {timeout} s")

    def submit_scores(self, rows: Sequence[ScoreRow]) -> Future[list[int]]:
        """Queue rows for the writer; the future completes after their COMMIT (thread-safe).

        Its result is the rows' score ids, in the order of ``rows``.
        """
        rows = tuple(rows)
        future: Future[list[int]] = Future()
        with self._lock:
            if self._thread is None:
                raise RuntimeError("start() the ScoreLog before submitting")
            if self._closed:
                raise RuntimeError("ScoreLog is closed")
            if rows:
                self._queue.put(_Submission(rows, future))
        if not rows:
            future.set_result([])
        return future

    async def record_scores(self, rows: Sequence[ScoreRow]) -> list[int]:
        """Return the rows' score ids once they are committed, all in the same transaction."""
        return await asyncio.wrap_future(self.submit_scores(rows))

    def record_outcome(self, row: OutcomeRow) -> bool:
        """Store an outcome in its own transaction; False if this very outcome was known.

        A retried call (same key, same content) writes nothing and returns False. The
        same key with different content is a client bug that would otherwise lose the
        new outcome silently: it raises :class:`OutcomeConflictError` and writes nothing.
        """
        values = {
            "lead_id": row.lead_id,
            "outcome": row.outcome,
            "stage": row.stage,
            "occurred_at": row.occurred_at,
            "recorded_at": datetime.now(UTC),
            "note": row.note,
            "reason": row.reason,
            "idempotency_key": row.idempotency_key,
        }
        with write_turn(self._engine), self._writer.begin() as connection:
            inserted = connection.execute(_INSERT_OUTCOME, values).first()
            if inserted is not None:
                return True
            stored = connection.execute(
                select(
                    _OUTCOMES.c.lead_id,
                    _OUTCOMES.c.outcome,
                    _OUTCOMES.c.stage,
                    _OUTCOMES.c.occurred_at,
                    _OUTCOMES.c.note,
                    _OUTCOMES.c.reason,
                ).where(_OUTCOMES.c.idempotency_key == row.idempotency_key)
            ).one()
        mine = (row.lead_id, row.outcome, row.stage, row.occurred_at, row.note, row.reason)
        if tuple(stored) != mine:
            raise OutcomeConflictError(row.idempotency_key)
        return False

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                batch, stop = self._gather(first)
                self._commit(batch)
        finally:
            # Normally the queue is empty here (close() queues the sentinel last). If the
            # loop died of a bug, fail what is queued and refuse new work rather than hang.
            with self._lock:
                self._closed = True
            error = RuntimeError("score writer stopped")
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None and item.future.set_running_or_notify_cancel():
                    item.future.set_exception(error)

    def _gather(self, first: _Submission) -> tuple[list[_Submission], bool]:
        """``first`` plus whatever else arrives within ``linger_s``; True if told to stop.

        A submission is never split, so one larger than ``max_batch_rows`` commits alone.
        """
        batch, rows = [first], len(first.rows)
        deadline = time.monotonic() + self._linger_s
        while rows < self._max_batch_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                return batch, True
            batch.append(item)
            rows += len(item.rows)
        return batch, False

    def _commit(self, batch: list[_Submission]) -> None:
        live = [s for s in batch if s.future.set_running_or_notify_cancel()]
        if live:
            self._commit_live(live)

    def _commit_live(self, live: list[_Submission]) -> None:
        rows = [row for submission in live for row in submission.rows]
        try:
            with write_turn(self._engine), self._writer.begin() as connection:
                ids = self._write(connection, rows)
        except Exception as exc:
            for listener in self._listeners:
                listener.rolled_back()
            if len(live) > 1 and not is_unavailable(exc):
                # One request's rows were refused (a value the database cannot store):
                # commit the halves apart, so only that request fails, in O(log n) tries.
                half = len(live) // 2
                self._commit_live(live[:half])
                self._commit_live(live[half:])
                return
            # Never the exception's text: it may quote rows (other leads' data).
            log.error(
                "committing %d scores of %d requests failed: %s",
                len(rows),
                len(live),
                describe_error(exc),
            )
            for submission in live:
                submission.future.set_exception(exc)
            return
        self.commits += 1
        self.rows_committed += len(rows)
        for listener in self._listeners:
            listener.committed()
        start = 0
        for submission in live:
            end = start + len(submission.rows)
            submission.future.set_result(ids[start:end])
            start = end

    def _write(self, connection: Connection, rows: list[ScoreRow]) -> list[int]:
        """Insert the scores, their inputs and the newest per lead; the ids, in row order."""
        self._lock_leads(connection, sorted({row.lead_id for row in rows}))
        ids = self._allocate_ids(connection, len(rows))
        numbered = list(zip(rows, ids, strict=True))
        connection.execute(_INSERT_SCORES, [_score_values(r, i) for r, i in numbered])
        inputs = [{"score_id": i, "packed": r.input} for r, i in numbered if r.input is not None]
        if inputs:
            connection.execute(_INSERT_INPUTS, inputs)
        newest: dict[str, tuple[ScoreRow, int]] = {}
        for row, score_id in numbered:
            held = newest.get(row.lead_id)
            if held is None or (row.scored_at, score_id) > (held[0].scored_at, held[1]):
                newest[row.lead_id] = (row, score_id)
        # One row per lead (PostgreSQL refuses to update a row twice in one statement), in
        # lead order: concurrent writers (several API processes) then lock rows in the same
        # order and cannot deadlock.
        latest = [_latest_values(*newest[lead]) for lead in sorted(newest)]
        for listener in self._listeners:
            listener.before_latest(connection, numbered)
        connection.execute(_UPSERT_LATEST, latest)
        return ids

    def _lock_leads(self, connection: Connection, leads: list[str]) -> None:
        """Serialise writers of the same leads until this transaction ends.

        Listeners read each lead's previous state from ``lead_latest``. Under PostgreSQL's
        READ COMMITTED, two writers (two API replicas) scoring one lead at once would both
        read the same "before" and write events that contradict each other; with the lock
        the second one waits, and its next statement sees the first one's commit. SQLite
        needs nothing: a writer's BEGIN IMMEDIATE already holds the database's one write lock.
        """
        if self._dialect == "postgresql" and leads:
            connection.execute(_LOCK_LEADS, {"leads": leads})

    def _allocate_ids(self, connection: Connection, n: int) -> list[int]:
        """Ids for ``n`` new scores, increasing in submission order.

        Known before the insert, so it needs no RETURNING (with RETURNING, SQLAlchemy
        inserts row by row on SQLite to keep the ids in order, and psycopg spends more time
        parsing one huge multi-row statement than PostgreSQL spends running it). On SQLite
        the writer's transaction began IMMEDIATE and holds the database's only write lock,
        so nobody else can insert between the max() and the commit.
        """
        if self._dialect == "sqlite":
            last = connection.execute(select(func.max(Score.id))).scalar_one_or_none() or 0
            return list(range(last + 1, last + 1 + n))
        return sorted(connection.execute(_NEXT_SCORE_IDS, {"n": n}).scalars())

    # -- reading -----------------------------------------------------------------------

    def ranked(
        self,
        *,
        category: str | None = None,
        grade: str | None = None,
        source: str | None = None,
        limit: int = 50,
        after: tuple[int, str] | None = None,
        offset: int = 0,
    ) -> list[RankedLead]:
        """Latest score per lead, highest first, ties by ``lead_id``.

        ``after`` is the ``(score, lead_id)`` of the previous page's last row (keyset
        pagination): the page starts right there in the index, so page 500 costs what page
        1 costs, and leads re-scored between page loads do not shift the pages. ``offset``
        skips rows the simple way (cost grows with the offset).
        """
        if limit < 1 or offset < 0:
            raise ValueError("limit must be at least 1 and offset not negative")
        query = (
            select(*RANKED_COLUMNS)
            .where(*_filters(category, grade, source))
            .order_by(LeadLatest.score.desc(), LeadLatest.lead_id)
            .limit(limit)
            .offset(offset or None)
        )
        if after is not None:
            score, lead_id = after
            # Not "(score, lead_id) < (...)": the two columns sort in opposite directions.
            # The first condition bounds the index range; the second skips ties already seen.
            query = query.where(
                LeadLatest.score <= score,
                or_(LeadLatest.score < score, LeadLatest.lead_id > lead_id),
            )
        with self._engine.connect() as connection:
            return [RankedLead(*row) for row in connection.execute(query)]

    def count_ranked(
        self, *, category: str | None = None, grade: str | None = None, source: str | None = None
    ) -> int:
        """How many leads :meth:`ranked` lists with these filters."""
        query = (
            select(func.count()).select_from(LeadLatest).where(*_filters(category, grade, source))
        )
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def history(self, lead_id: str, limit: int = 50) -> list[ScoreRow]:
        """A lead's scores, newest first (without their inputs: see :mod:`scorelog.history`)."""
        table = Score.__table__.c
        columns = [table[name] for name in ScoreRow.__dataclass_fields__ if name in table]
        query = (
            select(*columns)
            .where(Score.lead_id == lead_id)
            .order_by(Score.scored_at.desc(), Score.id.desc())
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [ScoreRow(**row._mapping) for row in connection.execute(query)]

    def outcomes(self, lead_id: str) -> list[OutcomeRow]:
        """A lead's recorded outcomes, oldest first (in the order they happened)."""
        columns = [Outcome.__table__.c[name] for name in OutcomeRow.__dataclass_fields__]
        query = (
            select(*columns)
            .where(Outcome.lead_id == lead_id)
            .order_by(Outcome.occurred_at, Outcome.id)
        )
        with self._engine.connect() as connection:
            return [OutcomeRow(**row._mapping) for row in connection.execute(query)]


def _filters(
    category: str | None, grade: str | None, source: str | None
) -> list[ColumnElement[bool]]:
    conditions = []
    if category is not None:
        conditions.append(LeadLatest.category == category)
    if grade is not None:
        conditions.append(LeadLatest.grade == grade)
    if source is not None:
        conditions.append(LeadLatest.acquisition_source == source)
    return conditions


def _score_values(row: ScoreRow, score_id: int) -> dict[str, Any]:
    return {
        "id": score_id,
        "request_id": row.request_id,
        "lead_id": row.lead_id,
        "scored_at": row.scored_at,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "probabilities": row.probabilities,
        "score": row.score,
        "grade": row.grade,
        "category": row.category,
        "reasons": row.reasons,
        "warnings": row.warnings,
        "acquisition_source": row.acquisition_source,
        "spec_version": row.spec_version,
        "policy_version": row.policy_version,
    }


def _latest_values(row: ScoreRow, score_id: int) -> dict[str, Any]:
    return {
        "lead_id": row.lead_id,
        "score": row.score,
        "grade": row.grade,
        "category": row.category,
        "acquisition_source": row.acquisition_source,
        "scored_at": row.scored_at,
        "score_id": score_id,
        "model_version": row.model_version,
    }
