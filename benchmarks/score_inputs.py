"""What keeping each score's input costs: bytes per score, and time on the scoring path.

    python -m benchmarks.score_inputs [--leads 4000] [--scores 20000] [--rounds 7]
                                      [--seconds 3] [--postgres-url postgresql+psycopg://...]

Trains a small model on generated leads, then, with real answers (reasons included) of
leads with their real actions:

* **bytes**: ``--scores`` scores written through ScoreLog with their inputs, on SQLite and
  PostgreSQL; reported are the packed input (mean, p95), the same input as JSON (what a
  naive design would store) and the bytes per score on disk with and without inputs,
  tables and indexes included (SQLite ``dbstat``, PostgreSQL ``pg_total_relation_size``);
* **scoring path, in process**: score one lead and build its log row, without and with
  its packed input, in alternating rounds (A, B, A, B, ...: the machine's noise hits
  both alike); the median of each, and the median of the paired ratios with their range;
* **writes**: 32 clients each submit one score and wait for its commit (group commit, as
  the API runs it), rows without and with inputs, alternating; rows/s and the paired
  ratio with its range (on a busy shared machine that range is the honest figure).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.storage import DEFAULT_POSTGRES, database

_AS_OF = "as_of"


def prepare(n_leads: int) -> tuple[Any, Any, list[dict[str, Any]]]:
    """(spec, model, API-shaped lead dicts: datetimes, the actions each lead really had)."""
    import pandas as pd

    from features import synthetic
    from features.batch import frames_to_records
    from features.loaders import load_actions, load_leads
    from features.spec import load_spec
    from training.config import sample_config
    from training.dataset import load_training_set, split
    from training.pipeline import train

    spec = load_spec("sample_crm")
    with tempfile.TemporaryDirectory(prefix="leadscore-bench-inputs-") as tmp:
        folder = Path(tmp)
        sample = synthetic.generate(synthetic.SampleConfig(n_leads=n_leads, seed=7))
        synthetic.write(sample, folder)
        config = sample_config(folder, plots=False, baseline=False)
        data = load_training_set(spec, config)
        model = train(spec, config, data, split(data, spec, config)).model
        leads = load_leads(folder / "leads.csv", spec)
        actions = load_actions(folder / "actions.csv", spec, pd.Index(leads[spec.id_column]))
    rng = random.Random(3)
    as_of = pd.to_datetime(leads["created_at"], utc=True) + pd.to_timedelta(
        [rng.uniform(2, 60) for _ in range(len(leads))], unit="D"
    )
    records = [_api_shape(r) for r in frames_to_records(spec, leads, actions, as_of=as_of)]
    return spec, model, records


def _api_shape(record: dict[str, Any]) -> dict[str, Any]:
    """As serving.schemas.to_record gives it: timestamps as aware datetimes."""
    out = dict(record)
    for key in ("created_at", _AS_OF):
        if isinstance(out.get(key), str):
            out[key] = datetime.fromisoformat(out[key])
    out["actions"] = [
        {"type": a["type"], "at": datetime.fromisoformat(a["at"])} for a in out["actions"]
    ]
    return out


def score_rows(spec: Any, model: Any, records: list[dict[str, Any]], *, inputs: bool) -> list[Any]:
    """The log rows the API would write for ``records`` (as serving.routes.scoring builds them)."""
    from scorelog import ScoreRow
    from scorelog.inputs import pack_input

    policy = model.policy_version
    results = model.score_many(records, threads=1)
    return [
        _row(spec, model, record, result, policy, inputs, ScoreRow, pack_input)
        for record, result in zip(records, results, strict=True)
    ]


def _row(
    spec: Any,
    model: Any,
    record: dict[str, Any],
    result: Any,
    policy: str,
    inputs: bool,
    row_type: Any,
    pack: Any,
) -> Any:
    from scorelog.inputs import spec_version_of

    return row_type(
        request_id="0123456789abcdef0123456789abcdef",
        lead_id=str(result.lead_id),
        scored_at=datetime.now(UTC),
        model_name="lead-readiness",
        model_version="12",
        probabilities=result.probabilities,
        score=result.score,
        grade=result.grade,
        category=result.category,
        reasons={k: [r.to_dict() for r in v] for k, v in result.reasons.items()},
        warnings=result.warnings,
        acquisition_source=record.get("acquisition_source"),
        spec_version=spec_version_of(spec) if inputs else None,
        policy_version=policy if inputs else None,
        input=pack(record, spec) if inputs else None,
    )


# --------------------------------------------------------------------------- bytes


def bench_bytes(
    backend: str, spec: Any, model: Any, records: list[dict[str, Any]], n: int, pg_url: str
) -> dict[str, Any]:
    """Bytes per score on disk, without and with inputs (each in a fresh database)."""
    import asyncio

    from scorelog import ScoreLog, make_engine, migrate

    rows = {flag: score_rows(spec, model, records, inputs=flag) for flag in (False, True)}
    sizes: dict[bool, dict[str, int]] = {}
    for flag in (False, True):
        with database(backend, pg_url) as url:
            engine = make_engine(url)
            migrate(engine)
            log = ScoreLog(engine)
            log.start()
            batch = rows[flag]
            for lo in range(0, n, 1000):
                chunk = [batch[i % len(batch)] for i in range(lo, min(lo + 1000, n))]
                asyncio.run(log.record_scores(chunk))
            log.close()
            sizes[flag] = _table_bytes(engine, ["scores", "score_inputs", "lead_latest"])
            engine.dispose()
    name = "SQLite" if backend == "sqlite" else "PostgreSQL"
    before = sizes[False]["scores"] / n
    after = (sizes[True]["scores"] + sizes[True]["score_inputs"]) / n
    return {
        "case": f"{name} bytes per score",
        "without_inputs": round(before),
        "with_inputs": round(after),
        "inputs_table": round(sizes[True]["score_inputs"] / n),
        "ratio": round(after / before, 2),
    }


def _table_bytes(engine: Any, tables: list[str]) -> dict[str, int]:
    """Each table's bytes on disk, its indexes included."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            return {
                t: int(
                    connection.exec_driver_sql(f"SELECT pg_total_relation_size('{t}')").scalar_one()
                )
                for t in tables
            }
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        out = {}
        for t in tables:
            indexes = [r[1] for r in connection.exec_driver_sql(f"PRAGMA index_list('{t}')").all()]
            names = [t, *indexes]
            marks = ", ".join(f"'{n}'" for n in names)
            out[t] = int(
                connection.exec_driver_sql(
                    f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({marks})"
                ).scalar_one()
            )
        return out


def blob_sizes(spec: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    from features.batch import ACTIONS_KEY
    from scorelog.inputs import pack_input
    from serving.replay import input_document

    packed = sorted(len(pack_input(r, spec)) for r in records)
    as_json = [len(json.dumps(input_document(r), separators=(",", ":"))) for r in records]
    return {
        "case": "packed input",
        "mean_bytes": round(statistics.mean(packed)),
        "p95_bytes": packed[int(len(packed) * 0.95)],
        "as_json_mean": round(statistics.mean(as_json)),
        "actions_mean": round(statistics.mean(len(r[ACTIONS_KEY]) for r in records), 1),
    }


# --------------------------------------------------------------------------- time


def bench_scoring_path(
    spec: Any, model: Any, records: list[dict[str, Any]], rounds: int
) -> dict[str, Any]:
    """Score one lead and build its row, without (A) and with (B) its input, alternating."""
    from scorelog import ScoreRow
    from scorelog.inputs import pack_input

    policy = model.policy_version
    sample = records[:500]
    medians: dict[bool, list[float]] = {False: [], True: []}

    def one_round(inputs: bool) -> float:
        times = []
        for record in sample:
            start = time.perf_counter()
            result = model.score_many([record], reasons=3, threads=1)[0]
            _row(spec, model, record, result, policy, inputs, ScoreRow, pack_input)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    one_round(True)  # warm up
    for _ in range(rounds):
        for flag in (False, True):
            medians[flag].append(one_round(flag))
    a, b = statistics.median(medians[False]), statistics.median(medians[True])
    ratios = [x / y for x, y in zip(medians[False], medians[True], strict=True)]
    return {
        "case": "score + log row, one lead",
        "without_us": round(a * 1e6),
        "with_us": round(b * 1e6),
        "throughput_ratio": _spread(ratios),
    }


def _spread(ratios: list[float]) -> str:
    """The median of paired ratios (each B against the A run just before it) and its range.

    Pairs cancel the machine's slow drifts; the range shows how far noise reaches.
    """
    return f"{statistics.median(ratios):.3f} [{min(ratios):.2f}-{max(ratios):.2f}]"


def bench_writes(
    backend: str, spec: Any, model: Any, records: list[dict[str, Any]], seconds: float,
    rounds: int, pg_url: str,
) -> dict[str, Any]:  # fmt: skip
    """32 clients, one score each per commit wait; rows without and with inputs, alternating."""
    from scorelog import ScoreLog, make_engine, migrate

    rows = {flag: score_rows(spec, model, records[:2000], inputs=flag) for flag in (False, True)}
    rates: dict[bool, list[float]] = {False: [], True: []}
    with database(backend, pg_url) as url:
        engine = make_engine(url, sqlite_synchronous="FULL")
        migrate(engine)
        log = ScoreLog(engine)
        log.start()
        for _ in range(rounds):
            for flag in (False, True):
                rates[flag].append(_write_rate(log, rows[flag], seconds))
        log.close()
        engine.dispose()
    a, b = statistics.median(rates[False]), statistics.median(rates[True])
    name = "SQLite FULL" if backend == "sqlite" else "PostgreSQL"
    return {
        "case": f"{name} writes, 32 clients",
        "without_rows_s": round(a),
        "with_rows_s": round(b),
        "ratio": _spread([y / x for x, y in zip(rates[False], rates[True], strict=True)]),
    }


def _write_rate(log: Any, rows: list[Any], seconds: float) -> float:
    stop = threading.Event()
    barrier = threading.Barrier(33)

    def client(n: int) -> None:
        i = n
        barrier.wait()
        while not stop.is_set():
            log.submit_scores([rows[i % len(rows)]]).result()
            i += 32

    workers = [threading.Thread(target=client, args=(n,)) for n in range(32)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start, committed = time.perf_counter(), log.rows_committed
    time.sleep(seconds)
    rate = (log.rows_committed - committed) / (time.perf_counter() - start)
    stop.set()
    for worker in workers:
        worker.join()
    return rate


def _backends(pg_url: str) -> Iterator[str]:
    from benchmarks.storage import _postgres_problem

    yield "sqlite"
    problem = _postgres_problem(pg_url)
    if problem is None:
        yield "postgresql"
    else:
        print(f"  PostgreSQL skipped: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=4000)
    parser.add_argument("--scores", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    args = parser.parse_args()
    print(f"score inputs: training on {args.leads:,} generated leads", flush=True)
    spec, model, records = prepare(args.leads)
    _print(blob_sizes(spec, records))
    _print(bench_scoring_path(spec, model, records, args.rounds))
    for backend in _backends(args.postgres_url):
        _print(bench_bytes(backend, spec, model, records, args.scores, args.postgres_url))
        _print(
            bench_writes(
                backend, spec, model, records, args.seconds, args.rounds,
                args.postgres_url,
            )
        )  # fmt: skip


def _print(result: dict[str, Any]) -> None:
    case = result.pop("case")
    print(f"  {case:<34} " + "  ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
