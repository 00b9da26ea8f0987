"""Scoring-log throughput and sales-board latency: the figures behind scorelog.

    python -m benchmarks.storage [--seconds 5] [--threads 32] [--leads 100000]
                                 [--postgres-url postgresql+psycopg://postgres@127.0.0.1/test]

* writes: clients each submit ONE score and wait for its commit, in a loop, for
  ``--seconds``; reported are commits/s, rows/s, rows per commit and the latency a client
  sees. ``grouped`` is ScoreLog as the API runs it (group commit); ``per request`` sets
  ``max_batch_rows=1``, i.e. one commit per request: the baseline group commit is
  measured against. SQLite with synchronous NORMAL and FULL; PostgreSQL as configured.
* board: ``--leads`` leads loaded through ScoreLog, then the median time of the first page,
  a keyset page in the middle, the same page by OFFSET, a filtered page and the count.

Each case runs in its own process; PostgreSQL cases use a scratch schema, dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from benchmarks.common import isolated, median_seconds

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def database(backend: str, postgres_url: str) -> Iterator[str]:
    """A URL to an empty database: a temporary SQLite file or a scratch PostgreSQL schema."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/scores.db"
        return
    from sqlalchemy import create_engine, make_url, text

    schema = f"bench_storage_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _row(i: int, lead: str) -> Any:
    from scorelog import ScoreRow

    return ScoreRow(
        request_id=f"req-{i}",
        lead_id=lead,
        scored_at=datetime.now(UTC),
        model_name="lead-readiness",
        model_version="3",
        probabilities={"mql": 0.61, "sql": 0.23},
        score=i % 101,
        grade="ABCD"[i % 4],
        category=("sql", "mql", "nurture", "customer")[i % 4],
        reasons={"positive": [{"feature": "visits_30d", "value": 4, "effect": 0.12}]},
        warnings=[],
        acquisition_source=("web", "ads", "event", "referral")[i % 4],
    )


def bench_writes(
    backend: str,
    synchronous: str,
    clients: int,
    kind: str,
    linger_s: float | None,
    seconds: float,
    pg_url: str,
) -> dict[str, Any]:
    """``clients`` threads (``kind="thr"``) or asyncio tasks on one loop (``"task"``, as the
    API calls it) each submit one score and wait for its commit, in a loop.

    ``linger_s=None`` is the baseline: one commit per request (``max_batch_rows=1``).
    """
    from scorelog import ScoreLog, make_engine, migrate

    with database(backend, pg_url) as url:
        engine = make_engine(url, sqlite_synchronous=synchronous)  # type: ignore[arg-type]
        migrate(engine)
        if linger_s is None:
            log = ScoreLog(engine, max_batch_rows=1)
        else:
            log = ScoreLog(engine, linger_s=linger_s)
        log.start()
        latencies: list[float] = []
        window: dict[str, float] = {}

        def measure() -> None:
            start, commits, rows = time.perf_counter(), log.commits, log.rows_committed
            time.sleep(seconds)
            window["elapsed"] = time.perf_counter() - start
            window["commits"] = log.commits - commits
            window["rows"] = log.rows_committed - rows

        if kind == "thr":
            _thread_clients(log, clients, measure, latencies)
        else:
            asyncio.run(_task_clients(log, clients, measure, latencies))
        log.close()
        engine.dispose()
    latencies.sort()
    mode = "per request" if linger_s is None else f"grouped, linger {linger_s * 1000:g} ms"
    name = "SQLite " + synchronous if backend == "sqlite" else "PostgreSQL"
    return {
        "case": f"{name:<14} {mode:<24} {clients:>3} {kind}",
        "commits_s": round(window["commits"] / window["elapsed"]),
        "rows_s": round(window["rows"] / window["elapsed"]),
        "rows_per_commit": round(window["rows"] / max(window["commits"], 1), 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def _thread_clients(
    log: Any, clients: int, measure: Callable[[], None], latencies: list[float]
) -> None:
    stop = threading.Event()
    barrier = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        mine, i = [], 0
        barrier.wait()
        while not stop.is_set():
            row = _row(n * 10_000_000 + i, f"L{n:02d}-{i % 5000:05d}")
            start = time.perf_counter()
            log.submit_scores([row]).result()
            mine.append(time.perf_counter() - start)
            i += 1
        latencies.extend(mine)  # list.extend is atomic under the GIL

    workers = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for worker in workers:
        worker.start()
    barrier.wait()
    measure()
    stop.set()
    for worker in workers:
        worker.join()


async def _task_clients(
    log: Any, clients: int, measure: Callable[[], None], latencies: list[float]
) -> None:
    stop = False

    async def client(n: int) -> None:
        i = 0
        while not stop:
            row = _row(n * 10_000_000 + i, f"L{n:02d}-{i % 5000:05d}")
            start = time.perf_counter()
            await log.record_scores([row])
            latencies.append(time.perf_counter() - start)
            i += 1

    tasks = [asyncio.create_task(client(n)) for n in range(clients)]
    await asyncio.to_thread(measure)
    stop = True
    await asyncio.gather(*tasks)


def bench_board(backend: str, leads: int, pg_url: str) -> dict[str, Any]:
    from scorelog import ScoreLog, make_engine, migrate

    with database(backend, pg_url) as url:
        engine = make_engine(url)
        migrate(engine)
        log = ScoreLog(engine)
        log.start()
        start = time.perf_counter()
        pending = [
            log.submit_scores([_row(i, f"L{i:07d}") for i in range(lo, min(lo + 2000, leads))])
            for lo in range(0, leads, 2000)
        ]
        for future in pending:
            future.result()
        load_s = time.perf_counter() - start
        if backend == "postgresql":
            with engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE lead_latest")
        middle = log.ranked(limit=1, offset=leads // 2)[0]
        after = (middle.score, middle.lead_id)
        timings = {
            "first_ms": lambda: log.ranked(limit=50),
            "keyset_mid_ms": lambda: log.ranked(limit=50, after=after),
            "offset_mid_ms": lambda: log.ranked(limit=50, offset=leads // 2),
            "category_ms": lambda: log.ranked(limit=50, category="mql", after=after),
            "count_ms": lambda: log.count_ranked(),
        }
        result: dict[str, Any] = {
            "case": f"{'SQLite' if backend == 'sqlite' else 'PostgreSQL'} board, {leads:,} leads",
            "load_rows_s": round(leads / load_s),
        }
        for key, fn in timings.items():
            result[key] = round(median_seconds(fn, repeat=50, warmup=5) * 1000, 2)
        log.close()
        engine.dispose()
    return result


def _postgres_problem(url: str) -> str | None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as exc:
        return str(exc.orig).strip()
    finally:
        engine.dispose()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    args = parser.parse_args()
    backends = [("sqlite", "NORMAL"), ("sqlite", "FULL")]
    problem = _postgres_problem(args.postgres_url)
    if problem is None:
        backends.append(("postgresql", "NORMAL"))
    n = args.clients
    cases = [
        (n, "thr", 0.002), (n, "thr", 0.0), (n, "thr", None), (n, "task", 0.0),
        (1, "thr", 0.002), (1, "thr", 0.0),
    ]  # fmt: skip
    print("storage writes: each client submits one score and waits for its commit")
    for backend, sync in backends:
        for clients, kind, linger in cases:
            result = isolated(
                bench_writes, backend, sync, clients, kind, linger, args.seconds, args.postgres_url
            )
            _print(result)
    if problem is not None:
        print(f"  PostgreSQL skipped: {problem}")
    print("sales board: median of 50 calls")
    for backend in dict.fromkeys(b for b, _ in backends):
        _print(isolated(bench_board, backend, args.leads, args.postgres_url))


def _print(result: dict[str, Any]) -> None:
    case = result.pop("case")
    print(f"  {case:<40} " + "  ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
