"""``leadscore monitor`` over a million logged scores: the target is under 30 s on 2 cores.

    python -m benchmarks.monitor [--scores 1000000] [--leads 200000] [--keep PATH]

A SQLite scoring log (the real schema, migrated) is filled with ``--scores`` scores of
``--leads`` leads over 180 days, each with a packed input (real leads from the generator,
scored by a model trained on them), and outcomes for the leads the generator says
converted. Then the monitoring report is built exactly as ``leadscore monitor`` builds it
(``monitoring.report.build_report``), with windows chosen so that it reads every score:
the last 90 days for drift, the 90 before them (horizon 90 days) as the matured window.
Reported: the fill time, the report's time split by phase, its peak memory.

``--keep PATH`` keeps (and reuses) the filled log, so a second run times the report alone.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import isolated

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_DAYS = 180
DISTINCT_INPUTS = 20_000


def _model_and_inputs(folder: Path) -> tuple[Path, list[dict[str, Any]], np.ndarray]:
    """A model trained on generated leads, and those leads' records and true outcomes."""
    from features import synthetic
    from features.spec import load_spec
    from training.config import sample_config
    from training.dataset import load_training_set, split
    from training.pipeline import train

    spec = load_spec("sample_crm")
    data = synthetic.generate(synthetic.SampleConfig(n_leads=DISTINCT_INPUTS, seed=5))
    synthetic.write(data, folder / "data")
    config = sample_config(folder / "data", plots=False, baseline=False)
    rows = load_training_set(spec, config)
    outcome = train(spec, config, rows, split(rows, spec, config))
    model_dir = outcome.model.save(folder / "model")
    records = rows.as_records(spec)[:DISTINCT_INPUTS]
    labels = rows.labels.to_numpy()[:DISTINCT_INPUTS]
    return model_dir, records, labels


def fill(url: str, model_dir: Path, records: list[dict[str, Any]], labels: np.ndarray,
         n_scores: int, n_leads: int) -> dict[str, Any]:  # fmt: skip
    """Insert the scores, their inputs and the outcomes straight into the log's tables."""
    from sqlalchemy import insert

    from features.spec import load_spec
    from models.readiness import ReadinessModel
    from scorelog.engine import make_engine, migrate
    from scorelog.inputs import pack_input, spec_version_of
    from scorelog.tables import Outcome, Score, ScoreInput

    started = time.perf_counter()
    spec = load_spec("sample_crm")
    model = ReadinessModel.load(model_dir)
    engine = make_engine(url)
    migrate(engine)
    scored = model.score_many(records, reasons=0)
    blobs = [pack_input(r, spec) for r in records]
    rng = np.random.default_rng(0)
    start_s = (NOW - timedelta(days=SPAN_DAYS)).timestamp()
    stamps = np.sort(rng.uniform(start_s, NOW.timestamp(), n_scores))
    lead_of = rng.integers(0, n_leads, n_scores)
    input_of = lead_of % len(records)
    version = spec_version_of(spec)
    chunk = 50_000
    with engine.begin() as connection:
        for lo in range(0, n_scores, chunk):
            hi = min(lo + chunk, n_scores)
            scores, inputs = [], []
            for i in range(lo, hi):
                s = scored[int(input_of[i])]
                scores.append(
                    {
                        "id": i + 1,
                        "request_id": "bench",
                        "lead_id": f"B{lead_of[i]:07d}",
                        "scored_at": datetime.fromtimestamp(float(stamps[i]), UTC),
                        "model_name": "lead-readiness",
                        "model_version": "1",
                        "spec_version": version,
                        "policy_version": model.policy_version,
                        "probabilities": s.probabilities,
                        "score": s.score,
                        "grade": s.grade,
                        "category": s.category,
                        "reasons": {},
                        "warnings": [],
                        "acquisition_source": None,
                    }
                )
                inputs.append({"score_id": i + 1, "packed": blobs[int(input_of[i])]})
            connection.execute(insert(Score), scores)
            connection.execute(insert(ScoreInput), inputs)
        outcomes = []
        first = {}
        for i in range(n_scores):  # each lead's first score decides its outcome
            first.setdefault(int(lead_of[i]), i)
        for lead, i in first.items():
            label = labels[int(input_of[i])]
            for stage, hit in zip(("mql", "sql"), label, strict=True):
                if hit:
                    at = datetime.fromtimestamp(
                        float(stamps[i]) + 86_400 * (20 + 10 * (stage == "sql")), UTC
                    )
                    outcomes.append(
                        {
                            "lead_id": f"B{lead:07d}",
                            "outcome": "stage_reached",
                            "stage": stage,
                            "reason": None,
                            "occurred_at": at,
                            "recorded_at": at,
                            "note": None,
                            "idempotency_key": f"bench:{lead}:{stage}",
                        }
                    )
        connection.execute(insert(Outcome), outcomes)
    engine.dispose()
    size = Path(url.removeprefix("sqlite:///")).stat().st_size
    return {
        "fill_s": round(time.perf_counter() - started, 1),
        "scores": n_scores,
        "leads": len(first),
        "outcomes": len(outcomes),
        "db_mib": round(size / 2**20, 1),
    }


def report(url: str, model_dir: Path) -> dict[str, Any]:
    """Time ``build_report`` as ``leadscore monitor`` runs it, phase by phase."""
    from models.readiness import ReadinessModel
    from monitoring import report as monitor_report
    from monitoring.settings import MonitorSettings
    from scorelog.engine import make_engine

    phases: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - t

        return wrapper

    for name in ("read_window", "records_for", "read_outcomes", "label_scores"):
        setattr(monitor_report, name, timed(name, getattr(monitor_report, name)))
    model = ReadinessModel.load(model_dir)
    engine = make_engine(url)
    settings = MonitorSettings(window_days=90, matured_days=90, horizon_days=90)
    started = time.perf_counter()
    result = monitor_report.build_report(engine, model, settings, model_name="bench", now=NOW)
    total = time.perf_counter() - started
    engine.dispose()
    return {
        "report_s": round(total, 2),
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "drift_rows": result.drift_rows,
        "drift_sampled": result.drift_sampled,
        "matured_rows": result.matured_rows,
        "state": result.state,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scores", type=int, default=1_000_000)
    parser.add_argument("--leads", type=int, default=200_000)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the filled log here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{folder / 'scores.db'}"
        model_dir = folder / "model"
        if not (folder / "scores.db").exists():
            model_dir, records, labels = _model_and_inputs(folder)
            filled = isolated(fill, url, model_dir, records, labels, args.scores, args.leads)
            print(json.dumps({"fill": filled}))
        result = isolated(report, url, model_dir)
        print(json.dumps({"monitor": result}))
        verdict = "meets" if result["report_s"] < 30 else "misses"
        print(f"monitor over {args.scores:,} scores: {result['report_s']} s ({verdict} < 30 s)")


if __name__ == "__main__":
    main()
