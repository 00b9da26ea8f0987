"""The scoring log and outcomes store, on SQLite and on PostgreSQL.

Every test runs on both backends: SQLite in a temporary file, PostgreSQL in a schema of its
own (created and dropped around the test) on ``LEADSCORE_TEST_POSTGRES_URL`` or the local
server; the PostgreSQL cases skip, saying why, when that server cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.exc import DBAPIError

from scorelog import (
    OutcomeRow,
    RankedLead,
    ScoreLog,
    ScoreRow,
    make_engine,
    migrate,
)
from scorelog.engine import SQLITE_BEGIN, alembic_config
from scorelog.rows import OutcomeConflictError
from scorelog.tables import Base
from tests.scorelog_db import db_url, engine

__all__ = ["db_url", "engine"]  # fixtures used by the tests below

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TABLES = {"scores", "score_inputs", "retention_marks", "lead_latest", "outcomes", "alembic_version"}


@pytest.fixture
def log(engine: Engine) -> Iterator[ScoreLog]:
    scorelog = ScoreLog(engine)
    scorelog.start()
    yield scorelog
    scorelog.close()


def row(
    lead_id: str,
    score: int,
    *,
    at: datetime = T0,
    grade: str = "A",
    category: str = "sql",
    source: str | None = "web",
    request_id: str | None = None,
    version: str = "3",
) -> ScoreRow:
    return ScoreRow(
        request_id=request_id or uuid.uuid4().hex,
        lead_id=lead_id,
        scored_at=at,
        model_name="lead-readiness",
        model_version=version,
        probabilities={"mql": 0.75, "sql": score / 100},
        score=score,
        grade=grade,
        category=category,
        reasons={"positive": [{"feature": "visits", "weight": 0.5}], "negative": []},
        warnings=["unknown value"] if score % 2 else [],
        acquisition_source=source,
    )


def record(log: ScoreLog, rows: list[ScoreRow]) -> None:
    asyncio.run(log.record_scores(rows))


def count(engine: Engine, table: str, where: str = "1 = 1") -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar_one()
        )


# --- migrations -------------------------------------------------------------------------


def test_migrate_twice_is_a_noop(engine: Engine, log: ScoreLog) -> None:
    record(log, [row("L1", 50)])
    indexes = {table: inspect(engine).get_indexes(table) for table in TABLES}
    migrate(engine)
    assert {table: inspect(engine).get_indexes(table) for table in TABLES} == indexes
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert versions == [(head,)]
    assert TABLES <= set(inspect(engine).get_table_names())
    assert count(engine, "scores") == 1


def test_processes_starting_together_migrate_once(db_url: str) -> None:
    """Several workers start at once on an empty database: one migrates, the rest wait."""
    engines = [make_engine(db_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def start(engine: Engine) -> None:
        barrier.wait()
        try:
            migrate(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with engines[0].connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    for each in engines:
        each.dispose()


def test_models_match_the_migrations(engine: Engine) -> None:
    """tables.py and migrations/ describe the same schema (autogenerate finds nothing)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


# --- the board ----------------------------------------------------------------------------


def test_ranked_lists_highest_first_with_exact_values(log: ScoreLog) -> None:
    berlin = timezone(timedelta(hours=1))
    record(
        log,
        [
            row("L2", 70, grade="B", category="mql", source=None, version="4"),
            row("L1", 90, at=datetime(2026, 3, 1, 13, 30, 15, 123456, tzinfo=berlin)),
            row("L3", 70, grade="B", category="mql", source="ads"),
            row("L4", 10, grade="D", category="nurture", source="event"),
        ],
    )
    assert log.ranked() == [
        RankedLead("L1", 90, "A", "sql", "web", datetime(2026, 3, 1, 12, 30, 15, 123456, UTC), "3"),
        RankedLead("L2", 70, "B", "mql", None, T0, "4"),
        RankedLead("L3", 70, "B", "mql", "ads", T0, "3"),
        RankedLead("L4", 10, "D", "nurture", "event", T0, "3"),
    ]
    assert log.ranked()[0].scored_at.tzinfo == UTC
    assert log.ranked(limit=2, offset=1) == log.ranked()[1:3]


def test_ranked_filters_by_category_grade_and_source(log: ScoreLog) -> None:
    leads = [
        row(f"L{i:03d}", i, grade="ABCD"[i % 4], category=("sql", "mql", "nurture")[i % 3],
            source=("web", "ads", None)[i % 3 if i % 5 else 0])
        for i in range(60)
    ]  # fmt: skip
    record(log, leads)
    cases: list[dict[str, str]] = [
        {"category": "mql"},
        {"grade": "B"},
        {"source": "ads"},
        {"category": "sql", "grade": "D"},
        {"category": "nurture", "grade": "A", "source": "web"},
    ]
    for filters in cases:
        expected = sorted(
            (r for r in leads if all(_field(r, k) == v for k, v in filters.items())),
            key=lambda r: (-r.score, r.lead_id),
        )
        category, grade, source = (filters.get(k) for k in ("category", "grade", "source"))
        got = log.ranked(category=category, grade=grade, source=source, limit=100)
        assert [g.lead_id for g in got] == [r.lead_id for r in expected], filters
        assert log.count_ranked(category=category, grade=grade, source=source) == len(expected)
    assert log.count_ranked() == 60
    assert log.ranked(category="customer") == []


def _field(r: ScoreRow, name: str) -> str | None:
    return r.acquisition_source if name == "source" else getattr(r, name)


def test_keyset_pages_are_disjoint_consecutive_and_complete(log: ScoreLog) -> None:
    record(log, [row(f"L{i:04d}", (i * 37) % 7 * 10) for i in range(237)])  # many ties
    everything = log.ranked(limit=1000)
    assert len(everything) == 237
    assert everything == sorted(everything, key=lambda r: (-r.score, r.lead_id))
    pages: list[list[RankedLead]] = []
    after: tuple[int, str] | None = None
    while page := log.ranked(limit=20, after=after):
        pages.append(page)
        after = (page[-1].score, page[-1].lead_id)
    assert [len(p) for p in pages] == [20] * 11 + [17]
    assert [lead for page in pages for lead in page] == everything
    by_offset = [log.ranked(limit=20, offset=20 * n) for n in range(len(pages))]
    assert by_offset == pages
    # Filtered pages work the same way.
    mql = log.ranked(limit=1000, grade="A")
    first = log.ranked(limit=5, grade="A")
    rest = log.ranked(limit=1000, grade="A", after=(first[-1].score, first[-1].lead_id))
    assert first + rest == mql


def test_latest_score_wins_and_a_late_older_one_does_not(engine: Engine, log: ScoreLog) -> None:
    record(log, [row("L1", 80, at=T0 + timedelta(hours=1), request_id="new")])
    record(log, [row("L1", 20, at=T0, request_id="late-old")])
    assert [(r.score, r.scored_at) for r in log.ranked()] == [(80, T0 + timedelta(hours=1))]
    # In one batch, too, whatever the order; on a tie of scored_at the later row wins.
    record(
        log,
        [
            row("L2", 60, at=T0 + timedelta(minutes=5)),
            row("L2", 30, at=T0),
            row("L3", 10, at=T0),
            row("L3", 40, at=T0),
        ],
    )
    assert {r.lead_id: r.score for r in log.ranked()} == {"L1": 80, "L2": 60, "L3": 40}
    assert [r.request_id for r in log.history("L1")] == ["new", "late-old"]
    with engine.connect() as connection:  # every lead_latest row points at its own score
        mismatched = connection.execute(
            text(
                "SELECT count(*) FROM lead_latest l JOIN scores s ON s.id = l.score_id "
                "WHERE s.lead_id <> l.lead_id OR s.score <> l.score OR s.scored_at <> l.scored_at"
            )
        ).scalar()
    assert mismatched == 0
    assert count(engine, "scores") == 6


def test_history_is_newest_first(log: ScoreLog) -> None:
    record(
        log, [row("L1", s, at=T0 + timedelta(minutes=m)) for s, m in [(10, 5), (30, 1), (20, 9)]]
    )
    record(log, [row("L2", 99)])
    history = log.history("L1")
    assert [(r.score, r.scored_at) for r in history] == [
        (20, T0 + timedelta(minutes=9)),
        (10, T0 + timedelta(minutes=5)),
        (30, T0 + timedelta(minutes=1)),
    ]
    assert history[0] == row(
        "L1", 20, at=T0 + timedelta(minutes=9), request_id=history[0].request_id
    )
    assert [r.score for r in log.history("L1", limit=2)] == [20, 10]
    assert log.history("nobody") == []


# --- outcomes -----------------------------------------------------------------------------


def test_outcome_with_a_known_key_is_written_once(engine: Engine, log: ScoreLog) -> None:
    won = OutcomeRow("L1", "won", None, T0 + timedelta(days=3), "signed", "crm-123")
    stage = OutcomeRow("L1", "stage_reached", "sql", T0, None, "crm-122")
    assert log.record_outcome(won) is True
    assert log.record_outcome(won) is False
    # The same key for a different event is refused, not silently dropped.
    with pytest.raises(OutcomeConflictError):
        log.record_outcome(OutcomeRow("L1", "lost", None, T0, None, "crm-123"))
    assert log.record_outcome(stage) is True
    assert count(engine, "outcomes") == 2
    assert log.outcomes("L1") == [stage, won]
    assert log.outcomes("L2") == []


# --- the group-commit writer --------------------------------------------------------------


@pytest.mark.parametrize("wait_each", [False, True], ids=["pipelined", "wait-each"])
def test_concurrent_submits_share_few_commits(
    engine: Engine, log: ScoreLog, wait_each: bool
) -> None:
    """8 threads x 200 one-row submits. ``wait-each`` is a request handler's pattern (the
    next submit only after the previous commit): the 8 then still share commits, about 4
    to a commit at worst (one wakes first and commits alone while the other 7 queue)."""
    threads, per_thread = 8, 200
    barrier = threading.Barrier(threads)
    futures: list[Future[None]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        barrier.wait()
        mine = []
        for i in range(per_thread):
            mine.append(log.submit_scores([row(f"T{n}-{i:03d}", i % 101)]))
            if wait_each:
                mine[-1].result(timeout=30)
        for future in mine:
            future.result(timeout=30)
        with lock:
            futures.extend(mine)

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    submits = threads * per_thread
    assert len(futures) == submits and all(f.done() and f.exception() is None for f in futures)
    assert count(engine, "scores") == submits
    assert log.count_ranked() == submits
    assert log.rows_committed == submits
    assert 1 <= log.commits <= submits // (2 if wait_each else 10), log.commits


def test_one_call_is_one_transaction(log: ScoreLog) -> None:
    before = log.commits
    record(log, [row(f"L{i}", i) for i in range(25)])
    assert log.commits == before + 1
    record(log, [])  # nothing to write: no transaction at all
    assert log.commits == before + 1


def test_a_failed_transaction_fails_its_futures_and_the_writer_goes_on(
    engine: Engine, log: ScoreLog, caplog: pytest.LogCaptureFixture
) -> None:
    record(log, [row("L1", 10)])
    with engine.begin() as connection:  # the upsert target vanishes: a real database error
        connection.execute(text("ALTER TABLE lead_latest RENAME TO lead_latest_away"))
    with caplog.at_level(logging.ERROR, logger="scorelog.store"):
        failed = log.submit_scores([row("L2", 20, request_id="lost-1"), row("L3", 30)])
        with pytest.raises(DBAPIError):
            failed.result(timeout=30)
    assert "committing 2 scores of 1 requests failed" in caplog.text
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE lead_latest_away RENAME TO lead_latest"))
    record(log, [row("L4", 40)])
    assert [r.lead_id for r in log.ranked()] == ["L4", "L1"]
    assert count(engine, "scores") == 2  # the failed batch left nothing behind
    assert count(engine, "scores", "request_id = 'lost-1'") == 0


def test_a_request_cancelled_before_its_commit_began_is_not_written(
    engine: Engine, log: ScoreLog
) -> None:
    """A client that went away while queued is dropped; one already being written is not."""
    blocker = engine.connect()
    if engine.dialect.name == "sqlite":  # hold the database's write lock
        blocker = blocker.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        blocker.begin()
    else:
        blocker.begin()
        blocker.execute(text("LOCK TABLE lead_latest IN EXCLUSIVE MODE"))
    try:
        first = log.submit_scores([row("L1", 10, request_id="being-written")])
        deadline = time.monotonic() + 10
        while not first.running():  # the writer took it and now waits for the lock
            assert time.monotonic() < deadline
            time.sleep(0.005)
        queued = log.submit_scores([row("L2", 20, request_id="cancelled")])
        assert queued.cancel()
        assert not first.cancel()
    finally:
        blocker.rollback()
        blocker.close()
    first.result(timeout=30)
    record(log, [row("L3", 30)])
    assert queued.cancelled()
    assert count(engine, "scores", "request_id = 'cancelled'") == 0
    assert [r.lead_id for r in log.ranked()] == ["L3", "L1"]


def test_close_commits_what_was_submitted(engine: Engine) -> None:
    scorelog = ScoreLog(engine, linger_s=0.05, max_batch_rows=7)
    with pytest.raises(RuntimeError, match="start"):
        scorelog.submit_scores([row("L0", 1)])
    scorelog.start()
    futures = [scorelog.submit_scores([row(f"L{i:02d}", i)]) for i in range(50)]
    scorelog.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert count(engine, "scores") == 50
    assert scorelog.commits >= 50 // 7
    with pytest.raises(RuntimeError, match="closed"):
        scorelog.submit_scores([row("L99", 1)])
    scorelog.close()  # twice is fine


def test_rows_are_checked_when_built() -> None:
    with pytest.raises(ValueError, match="timezone"):
        row("L1", 1, at=datetime(2026, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="0-100"):
        row("L1", 101)
    with pytest.raises(ValueError, match="lead_id"):
        row("L" * 129, 1)
    with pytest.raises(TypeError, match="acquisition_source"):
        row("L1", 1, source=7)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ScoreRow(**{**row("L1", 1).__dict__, "reasons": {"x": object()}})
    with pytest.raises(ValueError, match="occurred_at"):
        OutcomeRow("L1", "won", None, datetime(2026, 3, 1), None, "k")
    import numpy as np

    normalised = ScoreRow(
        **{**row("L1", 1).__dict__, "score": np.int64(7), "probabilities": {"sql": np.float32(0.5)}}
    )
    assert type(normalised.score) is int
    assert type(normalised.probabilities["sql"]) is float


def test_ranked_walks_an_index_without_sorting(engine: Engine, log: ScoreLog) -> None:
    record(log, [row(f"L{i:03d}", i % 101, category=("sql", "mql")[i % 2]) for i in range(300)])
    statements: list[tuple[str, object]] = []

    def capture(conn: object, cursor: object, statement: str, params: object, *_: object) -> None:
        if "FROM lead_latest" in statement:
            statements.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        log.ranked(limit=20)
        log.ranked(category="mql", after=(50, "L151"), limit=20)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert len(statements) == 2
    with engine.connect() as connection:
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for statement, params in statements:
            if engine.dialect.name == "sqlite":
                cursor.execute(f"EXPLAIN QUERY PLAN {statement}", params)
                plan = " ".join(str(r[-1]) for r in cursor.fetchall())
                assert "TEMP B-TREE" not in plan and "ix_lead_latest_" in plan, plan
            else:  # forbid sorting: if an index yields the order the plan must use it
                cursor.execute("SET enable_sort = off")
                cursor.execute(f"EXPLAIN {statement}", params)
                plan = " ".join(r[0] for r in cursor.fetchall())
                assert "Sort" not in plan and "ix_lead_latest_" in plan, plan
        cursor.close()


# --- durability ---------------------------------------------------------------------------

_CHILD = r"""
import os, sys, threading
from datetime import UTC, datetime
from scorelog import ScoreLog, ScoreRow, make_engine, migrate

url, acks = sys.argv[1], sys.argv[2]
engine = make_engine(url)
migrate(engine)
log = ScoreLog(engine)
log.start()
fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
lock = threading.Lock()

def client(n):
    i = 0
    while True:
        request_id = f"{n}-{i}"
        i += 1
        row = ScoreRow(request_id, f"L{i % 500}", datetime.now(UTC), "m", "1", {"sql": 0.5},
                       i % 101, "A", "sql", {}, [], None)
        log.submit_scores([row]).result()
        with lock:  # acknowledged: only now may the id be written down
            os.write(fd, f"{request_id}\n".encode())
            os.fsync(fd)

threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


@pytest.mark.slow
def test_every_acknowledged_score_survives_sigkill(tmp_path: Path) -> None:
    """SQLite with synchronous=NORMAL: a process killed mid-stream lost nothing it had acked."""
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    acks = tmp_path / "acks.txt"
    stderr = tmp_path / "child.err"
    with stderr.open("wb") as sink:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, url, str(acks)], stderr=sink)
    try:
        deadline = time.monotonic() + 120
        while not acks.exists() or acks.read_bytes().count(b"\n") < 1500:
            if child.poll() is not None:
                pytest.fail(f"writer died early:\n{stderr.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("writer too slow to acknowledge 1,500 scores")
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    text_ = acks.read_text()
    acknowledged = set(text_[: text_.rfind("\n") + 1].split())  # a torn last line is unacked
    assert len(acknowledged) >= 1500
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            stored = set(connection.execute(text("SELECT request_id FROM scores")).scalars())
    finally:
        engine.dispose()
    assert acknowledged - stored == set()
