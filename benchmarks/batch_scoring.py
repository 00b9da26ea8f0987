"""Batch scoring: throughput against the other ways of running the model, and peak memory.

    python -m benchmarks.batch_scoring [--leads 1000000] [--subset 50000] [--peak-leads 5000000]

On a pre-aggregated Parquet table of N synthetic leads (numbers drawn with numpy; the
model is trained on the sample CRM first), each case in a fresh process:

(a) our CLI path (``serving.batch.job.run``): grades and categories, no reasons;
(b) the same with the top 3 reasons (one SHAP pass per head), on ``--subset`` leads
    when N is large, since it is an order of magnitude slower;
(c) ``mlflow.pyfunc``: the model folder logged with ``ReadinessPyfunc`` to a throw-away
    MLflow store, then ``predict`` chunk by chunk on dict-shaped leads, with and without
    reasons, on ``--subset`` leads (its per-lead Python path would take minutes on N);
(d) the floor: bare LightGBM ``Booster.predict`` of every head on the feature matrix
    already built (feature building and file I/O not counted).

Then the CLI's peak RSS on ``--peak-leads`` leads (written in chunks, so generating
them costs no memory in the measured process); the target is < 1 GiB. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import isolated

AS_OF = pd.Timestamp("2026-03-01T00:00:00Z")
CHUNK = 50_000
TRAIN_LEADS = 20_000


# -- inputs ------------------------------------------------------------------------------


def train_model(folder: Path) -> dict[str, Any]:
    """A sample-CRM model as `make train` builds it (smaller data), saved with golden rows."""
    from features import synthetic
    from features.batch import frames_to_records
    from features.spec import load_spec
    from models.golden import write_golden
    from training.config import sample_config
    from training.dataset import load_training_set, split
    from training.pipeline import train

    start = time.perf_counter()
    data_dir = folder / "data"
    synthetic.write(synthetic.generate(synthetic.SampleConfig(n_leads=TRAIN_LEADS)), data_dir)
    spec = load_spec("sample_crm")
    config = sample_config(data_dir, plots=False, baseline=False)
    data = load_training_set(spec, config)
    parts = split(data, spec, config)
    model = train(spec, config, data, parts).model
    saved = model.save(folder / "model")
    golden = frames_to_records(spec, data.subset(parts.test[:20]).leads, data.actions)
    write_golden(model, golden, saved)
    trees = [h.booster.num_trees() for h in model.heads]
    return {"case": "train", "seconds": round(time.perf_counter() - start, 1), "trees": trees}


def aggregated_chunk(start: int, n: int, seed: int) -> pd.DataFrame:
    """``n`` leads with profile fields and every pre-aggregated action column.

    Plausible rather than realistic: counts grow with the window, recency and decay
    follow the longest count. No missing categorical or boolean value, so the same rows
    pass MLflow's schema enforcement in case (c).
    """
    from features.batch import aggregated_columns
    from features.spec import CategoricalField, load_spec

    spec = load_spec("sample_crm")
    assert spec.actions is not None
    rng = np.random.default_rng(seed)
    ids = np.char.add("L", np.char.zfill(np.arange(start, start + n).astype(str), 9))
    frame: dict[str, Any] = {
        "lead_id": ids.astype(object),
        "created_at": (AS_OF - pd.to_timedelta(rng.integers(1, 400, n), unit="D")).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
    }
    for f in spec.feature_fields:
        if isinstance(f, CategoricalField) and f.levels:
            frame[f.name] = rng.choice(np.asarray(f.levels, dtype=object), n)
    frame["company_size"] = np.where(rng.random(n) < 0.1, np.nan, rng.integers(1, 5000, n))
    frame["annual_revenue"] = rng.lognormal(15, 2, n)
    frame["business_email"] = rng.random(n) < 0.7
    windows = spec.actions.windows_days
    for t in spec.actions.types:
        rate = rng.gamma(0.5, 0.05, n)
        count = np.zeros(n)
        for w in windows:
            count = count + rng.poisson(rate * w)
            frame[f"{t.name}_count_{w}d"] = count
        frame[f"{t.name}_days_since_last"] = np.where(count > 0, rng.uniform(0, 90, n), 365.0)
        frame[f"{t.name}_decayed"] = count * rng.uniform(0, 1, n)
    totals = sum(frame[f"{t.name}_count_{windows[-1]}d"] for t in spec.actions.types)
    for w in windows:
        frame[f"active_days_{w}d"] = np.minimum(totals, w) * rng.uniform(0, 1, n).round(1)
        frame[f"actions_count_{w}d"] = sum(
            frame[f"{t.name}_count_{w}d"] for t in spec.actions.types
        )
    frame["recent_velocity"] = rng.uniform(-0.5, 1, n)
    out = pd.DataFrame(frame)
    assert set(aggregated_columns(spec)) <= set(out.columns)
    return out


def write_aggregated(path: Path, n: int, seed: int = 0) -> dict[str, Any]:
    """N leads to Parquet in chunks (row groups of 100,000), never all in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    writer = None
    for i, first in enumerate(range(0, n, 250_000)):
        table = pa.Table.from_pandas(
            aggregated_chunk(first, min(250_000, n - first), seed + i), preserve_index=False
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=100_000)
    assert writer is not None
    writer.close()
    return {
        "case": f"write {n:,} pre-aggregated leads",
        "seconds": round(time.perf_counter() - start, 1),
        "mib": round(path.stat().st_size / 2**20),
    }


# -- cases -------------------------------------------------------------------------------


def case_cli(
    model: Path, leads: Path, out: Path, reasons: int, limit: int | None
) -> dict[str, Any]:
    """(a)/(b): the CLI's own code path, settings as the CLI builds them."""
    from serving.batch import job as batch_score
    from serving.settings import ServingSettings

    if limit is not None:
        leads = _head(leads, limit, out.parent)
    settings = ServingSettings(
        _env_file=None, home=out.parent, model_uri=str(model), spec="sample_crm"
    )
    options = batch_score.Options(
        leads=leads, out=out, as_of=AS_OF, reasons=reasons, progress=False, chunk_size=CHUNK
    )
    start = time.perf_counter()
    summary = batch_score.run(options, settings)
    seconds = time.perf_counter() - start
    return {
        "case": f"(a) CLI, {'no reasons' if not reasons else f'{reasons} reasons'}",
        "leads": summary.leads,
        "seconds": round(seconds, 2),
        "leads_per_s": round(summary.leads / seconds),
    }


def case_pyfunc(model: Path, leads: Path, work: Path, n: int) -> dict[str, Any]:
    """(c): log with ReadinessPyfunc to a throw-away store, predict chunk by chunk."""
    import mlflow
    import pyarrow.parquet as pq
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    from features.batch import aggregated_columns
    from models.pyfunc import ARTIFACT_KEY, ReadinessPyfunc, signature
    from models.readiness import ReadinessModel

    readiness = ReadinessModel.load(model)
    spec = readiness.builder.spec
    base = signature(spec, readiness.stages)
    # The bundled signature describes leads with events; these carry the aggregates.
    inputs = [*base.inputs.inputs, *(ColSpec("double", c) for c in aggregated_columns(spec))]
    params = ParamSchema([ParamSpec("reasons", "long", 3)])
    sig = ModelSignature(inputs=Schema(inputs), outputs=base.outputs, params=params)
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    # Artifacts beside the store, not in ./mlruns of whatever folder the bench runs from.
    experiment = mlflow.create_experiment("bench", artifact_location=(work / "mlruns").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ReadinessPyfunc(),
            artifacts={ARTIFACT_KEY: str(model)},
            signature=sig,
            pip_requirements=["mlflow"],
        )
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    out: dict[str, Any] = {"case": "(c) mlflow.pyfunc, dict-shaped leads", "leads": n}
    first: pd.DataFrame | None = None
    for reasons in (0, 3):
        seen, seconds = 0, 0.0
        for batch in pq.ParquetFile(leads).iter_batches(batch_size=min(CHUNK, n)):
            frame = batch.to_pandas()
            frame["as_of"] = AS_OF.isoformat()
            start = time.perf_counter()
            result = pyfunc.predict(frame, params={"reasons": reasons})
            seconds += time.perf_counter() - start
            if first is None:
                first = result
            seen += len(frame)
            if seen >= n:
                break
        out[f"leads_per_s_reasons_{reasons}"] = round(seen / seconds)
    assert first is not None
    out["p_sql_of_first_lead"] = float(first["p_sql"].iloc[0])
    return out


def case_floor(model: Path, leads: Path, limit: int) -> dict[str, Any]:
    """(d): only ``Booster.predict`` per head, on matrices built beforehand (untimed)."""
    import pyarrow.parquet as pq

    from models.readiness import ReadinessModel

    readiness = ReadinessModel.load(model)
    seen, seconds = 0, 0.0
    for batch in pq.ParquetFile(leads).iter_batches(batch_size=CHUNK):
        X = readiness.builder.build(batch.to_pandas(), as_of=AS_OF).values
        start = time.perf_counter()
        for head in readiness.heads:
            head.booster.predict(X)
        seconds += time.perf_counter() - start
        seen += len(X)
        if seen >= limit:
            break
    return {
        "case": "(d) floor: Booster.predict of the heads",
        "leads": seen,
        "seconds": round(seconds, 2),
        "leads_per_s": round(seen / seconds),
    }


def _head(leads: Path, n: int, folder: Path) -> Path:
    """The first ``n`` leads as their own file, so a case reads only what it scores."""
    import pyarrow.parquet as pq

    path = folder / f"head-{n}.parquet"
    if not path.exists():
        handle = pq.ParquetFile(leads)
        writer = None
        seen = 0
        for batch in handle.iter_batches(batch_size=min(CHUNK, n)):
            if writer is None:
                writer = pq.ParquetWriter(path, batch.schema)
            writer.write_batch(batch.slice(0, n - seen))
            seen += min(len(batch), n - seen)
            if seen >= n:
                break
        assert writer is not None
        writer.close()
    return path


def _check_same(cli_out: Path, pyfunc: dict[str, Any]) -> bool:
    """The pyfunc and the CLI agree on the first lead (the comparison is like for like)."""
    first = pd.read_parquet(cli_out, columns=["p_sql"])["p_sql"].iloc[0]
    return bool(first == pyfunc.pop("p_sql_of_first_lead"))


# -- report ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--subset", type=int, default=50_000, help="leads for (b) and (c)")
    parser.add_argument("--peak-leads", type=int, default=5_000_000)
    args = parser.parse_args()
    subset = min(args.subset, args.leads)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        steps = [isolated(train_model, work)]
        model = work / "model"
        table = work / "leads.parquet"
        steps.append(isolated(write_aggregated, table, args.leads))
        for step in steps:
            print(_line(step))
        a = isolated(case_cli, model, table, work / "a.parquet", 0, None)
        b = isolated(case_cli, model, table, work / "b.parquet", 3, subset)
        c = isolated(case_pyfunc, model, table, work, subset)
        c["same_p_sql_as_cli"] = _check_same(work / "a.parquet", c)
        d = isolated(case_floor, model, table, args.leads)
        b["case"] = "(b) CLI, 3 reasons"
        for result in (a, b, c, d):
            print(_line(result))
        print(
            f"  (a)/(d) throughput: {a['leads_per_s'] / d['leads_per_s']:.2f}"
            f"   reasons cost (a)/(b): {a['leads_per_s'] / b['leads_per_s']:.1f}x"
            f"   (a)/(c) no reasons: {a['leads_per_s'] / c['leads_per_s_reasons_0']:.1f}x"
            f"   (b)/(c) with reasons: {b['leads_per_s'] / c['leads_per_s_reasons_3']:.1f}x"
        )
        table.unlink()
        peak = work / "peak.parquet"
        print(_line(isolated(write_aggregated, peak, args.peak_leads, 1)))
        for suffix in ("parquet", "csv"):
            result = isolated(case_cli, model, peak, work / f"peak-scores.{suffix}", 0, None)
            result["case"] = f"peak memory, {args.peak_leads:,} leads -> .{suffix}"
            print(_line(result))


def _line(result: dict[str, Any]) -> str:
    case = result.pop("case")
    return f"  {case:<44} " + "  ".join(f"{k}={json.dumps(v)}" for k, v in result.items())


if __name__ == "__main__":
    main()
