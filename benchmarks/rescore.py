"""Scores that age: how fast `leadscore rescore` goes over a large scoring log.

    python -m benchmarks.rescore [--leads 100000] [--train-leads 20000]

Trains a champion on sample data in a throw-away folder, generates ``--leads`` more leads
(with their actions), scores each as of 2026-03-01 and writes the scores with their packed
inputs to a SQLite scoring log (synchronous=FULL) through the group-commit writer, as the
API would have. Then it times two rescores as of a month later: the first moves most
leads (recency features age: rows, reasons and events written), the second finds them
unchanged (reads and scores only). Leads/s is open leads / wall time on this machine;
the 1 M figure is a linear extrapolation, stated as such.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from benchmarks.serving import prepare
from features import synthetic
from features.batch import frames_to_records
from features.loaders import load_actions, load_leads
from features.spec import load_spec
from scorelog import ScoreLog, make_engine, migrate
from scorelog.events import ChangeEvents
from scorelog.inputs import pack_input, spec_version_of
from scorelog.rows import ScoreRow
from serving.model_store import ModelStore, ServedModel
from serving.rescore import rescore
from serving.settings import ServingSettings

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def build_log(home: Path, n_leads: int, scorelog: ScoreLog, served: ServedModel) -> float:
    """Score ``n_leads`` generated leads as of T0 and log them with their inputs; seconds."""
    started = time.perf_counter()
    folder = home / "big"
    synthetic.write(synthetic.generate(synthetic.SampleConfig(n_leads=n_leads, seed=3)), folder)
    spec = load_spec("sample_crm")
    leads = load_leads(folder / "leads.csv", spec)
    actions = load_actions(folder / "actions.csv", spec)
    futures = []
    for start in range(0, len(leads), 5000):
        chunk = leads.iloc[start : start + 5000]
        records = frames_to_records(spec, chunk, actions[actions["lead_id"].isin(chunk["lead_id"])],
                                    pd.Timestamp(T0))  # fmt: skip
        results = served.model.score_many(records, reasons=3)
        rows = [
            ScoreRow(
                request_id="bench",
                lead_id=str(r.lead_id),
                scored_at=T0,
                model_name=served.name,
                model_version=served.version,
                probabilities=r.probabilities,
                score=r.score,
                grade=r.grade,
                category=r.category,
                reasons={k: [x.to_dict() for x in v] for k, v in r.reasons.items()},
                warnings=r.warnings,
                acquisition_source=None,
                spec_version=spec_version_of(spec),
                policy_version=served.model.policy_version,
                input=pack_input(record, spec),
            )
            for r, record in zip(results, records, strict=True)
        ]
        futures.append(scorelog.submit_scores(rows))
    for future in futures:
        future.result()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--train-leads", type=int, default=20_000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="leadscore-bench-rescore-"))
    print(f"rescore: training a champion on {args.train_leads:,} leads in {home}", flush=True)
    prepare(home, args.train_leads)
    settings = ServingSettings(
        _env_file=None,  # type: ignore[call-arg]
        home=home,
        model_cache_dir=home / "cache",
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
    )
    store = ModelStore(settings)
    store.load_initial()
    served = store.current
    if served is None:
        sys.exit(f"no model: {store.problem}")
    engine = make_engine(f"sqlite:///{home / 'scores.db'}", sqlite_synchronous="FULL")
    migrate(engine)
    events = ChangeEvents()
    scorelog = ScoreLog(engine, listeners=[events])
    scorelog.start()
    print(f"rescore: logging {args.leads:,} scored leads with their inputs", flush=True)
    built = build_log(home, args.leads, scorelog, served)
    print(f"  built in {built:.0f} s", flush=True)
    later = T0 + timedelta(days=30)
    cpu = time.process_time()
    first = rescore(scorelog, served, events=events, as_of=later)
    cpu_first = time.process_time() - cpu
    cpu = time.process_time()
    second = rescore(scorelog, served, events=events, as_of=later)
    cpu_second = time.process_time() - cpu
    scorelog.close()
    print(f"\nrescore of {args.leads:,} open leads, SQLite synchronous=FULL, "
          f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    runs = (("a month later", first, cpu_first), ("again, unchanged", second, cpu_second))
    for name, s, cpu_s in runs:
        print(f"  {name:<18} {s.seconds:7.1f} s wall  {s.leads_per_s:8,.0f} leads/s  "
              f"{cpu_s:6.1f} s CPU ({s.open_leads / cpu_s:,.0f} leads per CPU-second)  "
              f"{s.rescored:,} changed, {s.events:,} events")  # fmt: skip
    wall = 1_000_000 / first.leads_per_s / 60
    busy = 1_000_000 / (first.open_leads / cpu_first) / 60
    print(f"  1 M open leads, extrapolated linearly from the first run: ~{wall:.1f} min at "
          f"this wall-clock rate, ~{busy:.1f} min of CPU (one core: the run is one thread "
          "of scoring plus the writer)")  # fmt: skip
    engine.dispose()
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
