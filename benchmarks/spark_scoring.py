"""Scoring on Spark beside ``make score``: leads/s from raw events and pre-aggregated.

    python -m benchmarks.spark_scoring [--leads 100000] [--train-leads 5000]

One registered model (trained on a small sample, logged the way ``train`` logs it), one
generated CRM of ``--leads`` leads with their raw actions (~20 a lead), then:

(a) ``leadscore score``'s single-machine job from raw events (CSV in, Parquet out);
(b) ``leadscore score --engine spark`` (``local[2]``) on the same files; the Spark
    session is started before the clock (start-up is reported apart);
(c) both engines on the pre-aggregated feature table (Parquet) that (b)'s feature step
    writes, which is what a company with the aggregates in its warehouse would score.

Every case scores without reasons and checks its output against (a) (probabilities to
1e-9, categories equal). The ratios say what the engine costs on one machine; the paper
estimate scales the measured per-core rates to 100 M leads and 10 B events. Figures are
printed (one JSON line per case, then a table), never asserted.
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

AS_OF = pd.Timestamp("2026-03-01T00:00:00Z")
MODEL = "lead-readiness"
CORES = 2


def register_model(home: Path, train_leads: int) -> str:
    """Train on a small sample, log it by the models-from-code route, make it champion."""
    import mlflow

    from features import synthetic
    from features.batch import frames_to_records
    from features.spec import load_spec
    from models.golden import write_golden
    from models.pyfunc import ARTIFACT_KEY, MODEL_CODE, code_paths, signature
    from training import registry
    from training.config import sample_config
    from training.dataset import load_training_set, split
    from training.pipeline import train

    data_dir = home / "train-data"
    synthetic.write(synthetic.generate(synthetic.SampleConfig(n_leads=train_leads)), data_dir)
    spec = load_spec("sample_crm")
    config = sample_config(data_dir, plots=False, baseline=False)
    data = load_training_set(spec, config)
    parts = split(data, spec, config)
    model = train(spec, config, data, parts).model
    folder = model.save(home / "model")
    write_golden(
        model, frames_to_records(spec, data.subset(parts.test[:20]).leads, data.actions), folder
    )
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={ARTIFACT_KEY: str(folder)},
            code_paths=code_paths(),
            signature=signature(spec, model.stages),
            pip_requirements=["mlflow"],
        )
    version = registry.register(info.model_uri, name=MODEL, run_id=run.info.run_id)
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", version.version)
    return tracking


def settings_for(home: Path, tracking: str) -> Any:
    from serving.settings import ServingSettings

    return ServingSettings(  # type: ignore[call-arg]
        _env_file=None,
        home=home,
        spec="sample_crm",
        tracking_uri=tracking,
        model_cache_dir=home / "cache",
    )


def local_case(
    name: str, leads: Path, actions: Path | None, out: Path, settings: Any
) -> dict[str, Any]:
    from serving.batch.job import Options, run

    options = Options(
        leads=leads,
        actions=actions,
        out=out,
        model=f"models:/{MODEL}@champion",
        as_of=AS_OF,
        reasons=0,
        progress=False,
    )
    summary = run(options, settings)
    return {"case": name, "leads": summary.leads, "seconds": round(summary.seconds, 2)}


def spark_case(
    spark: Any, name: str, leads: str, actions: str | None, out: Path, settings: Any
) -> dict[str, Any]:
    from features.spark import read_table
    from serving.batch.spark import check_model, score_checked, write_scores

    start = time.perf_counter()
    checked = check_model(f"models:/{MODEL}@champion", settings)
    lead_table = read_table(spark, leads, checked.spec)
    action_table = (
        None if actions is None else read_table(spark, actions, checked.spec, multiline=False)
    )
    scores = score_checked(spark, lead_table, action_table, checked, settings, as_of=AS_OF)
    write_scores(scores, str(out))
    seconds = time.perf_counter() - start
    return {"case": name, "leads": len(pd.read_parquet(out)), "seconds": round(seconds, 2)}


def same(got: Path, want: Path) -> bool:
    a = pd.read_parquet(got).set_index("lead_id").sort_index()
    b = pd.read_parquet(want).set_index("lead_id").sort_index()
    probabilities = [c for c in b.columns if c.startswith("p_")]
    return bool(
        a.index.equals(b.index)
        and np.allclose(a[probabilities], b[probabilities], rtol=0, atol=1e-9)
        and (a["category"] == b["category"]).all()
        and (a["grade"] == b["grade"]).all()
    )


def paper_estimate(raw: dict[str, Any], pre: dict[str, Any], events_per_lead: float) -> str:
    """Core-hours for 100 M leads and 10 B events from the measured per-core rates.

    Scoring costs per lead (the pre-aggregated rate); features cost per event (what raw
    scoring adds over pre-aggregated, divided by the events it read). Both scale with
    cores, since every group of leads is independent; reading and shuffling 10 B events
    is not free on a cluster either, so the estimate is a floor.
    """
    score_per_lead = CORES * pre["seconds"] / pre["leads"]
    feature_per_event = (
        CORES * max(raw["seconds"] - pre["seconds"], 0) / (raw["leads"] * events_per_lead)
    )
    core_s = 100e6 * score_per_lead + 10e9 * feature_per_event
    hours = core_s / 3600
    return (
        f"100 M leads x 10 B events: {core_s / 1e6:,.2f} M core-seconds = {hours:,.0f} "
        f"core-hours, i.e. ~{hours:,.0f} cores for 1 h, or {hours / 0.25:,.0f} cores for 15 min "
        f"(scoring {score_per_lead * 1e3:.3f} core-ms a lead, features "
        f"{feature_per_event * 1e6:.2f} core-us an event, measured on {CORES} cores)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--train-leads", type=int, default=5_000)
    args = parser.parse_args()

    from features import synthetic
    from features.spark import lead_features, local_session, read_table
    from features.spec import load_spec

    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        home = Path(tmp)
        tracking = register_model(home, args.train_leads)
        settings = settings_for(home, tracking)
        data = home / "data"
        synthetic.write(
            synthetic.generate(synthetic.SampleConfig(n_leads=args.leads, seed=3)), data
        )
        leads, actions = data / "leads.csv", data / "actions.csv"
        n_events = sum(1 for _ in actions.open()) - 1
        results = [
            local_case("make score, raw events", leads, actions, home / "a.parquet", settings)
        ]

        started = time.perf_counter()
        spark = local_session("bench", master=f"local[{CORES}]", shuffle_partitions=2 * CORES)
        spark.range(1).count()
        startup = round(time.perf_counter() - started, 1)
        results.append(
            spark_case(
                spark, "Spark, raw events", str(leads), str(actions), home / "b.parquet", settings
            )
        )
        results[-1]["same_as_make_score"] = same(home / "b.parquet", home / "a.parquet")

        spec = load_spec("sample_crm")
        table = lead_features(
            read_table(spark, str(leads), spec),
            read_table(spark, str(actions), spec, multiline=False),
            spec,
            as_of=AS_OF,
        )
        table.coalesce(1).write.parquet(str(home / "features"))
        aggregated = next((home / "features").glob("part-*.parquet"))
        results.append(
            local_case("make score, pre-aggregated", aggregated, None, home / "c.parquet", settings)
        )
        results[-1]["same_as_make_score"] = same(home / "c.parquet", home / "a.parquet")
        results.append(
            spark_case(
                spark, "Spark, pre-aggregated", str(aggregated), None, home / "d.parquet", settings
            )
        )
        results[-1]["same_as_make_score"] = same(home / "d.parquet", home / "a.parquet")
        spark.stop()

    for r in results:
        r["leads_per_s"] = round(r["leads"] / r["seconds"])
        print(json.dumps(r))
    raw_local, raw_spark, pre_local, pre_spark = results
    print(
        f"\n{args.leads:,} leads, {n_events:,} events ({n_events / args.leads:.1f} a lead), "
        f"local[{CORES}], Spark start-up {startup} s (not counted)"
    )
    print(f"{'case':<30}{'leads/s':>10}{'seconds':>10}  same")
    for r in results:
        same_text = r.get("same_as_make_score", "-")
        print(f"{r['case']:<30}{r['leads_per_s']:>10,}{r['seconds']:>10}  {same_text}")
    raw_ratio = raw_local["leads_per_s"] / raw_spark["leads_per_s"]
    pre_ratio = pre_local["leads_per_s"] / pre_spark["leads_per_s"]
    print(f"raw events: make score / Spark = {raw_ratio:.1f}x")
    print(f"pre-aggregated: make score / Spark = {pre_ratio:.1f}x")
    print(paper_estimate(raw_spark, pre_spark, n_events / args.leads))


if __name__ == "__main__":
    main()
