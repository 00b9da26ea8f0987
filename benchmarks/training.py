"""Training end to end on N synthetic leads: time, peak memory, accuracy against the oracle.

    python -m benchmarks.training [--leads 100000]

Generates the sample CRM into a temporary folder and runs the full tracked training
(features, both heads, calibration, baseline, evaluation, plots, MLflow logging and
registration) against a throw-away embedded MLflow store, in a fresh process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import isolated


def bench_training(n: int) -> dict[str, Any]:
    from features import synthetic
    from training.config import sample_config
    from training.run import run_training
    from training.tracking import TrackingSettings

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        synthetic.write(synthetic.generate(synthetic.SampleConfig(n_leads=n)), home / "data")
        config = sample_config(home / "data")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        start = time.perf_counter()
        result = run_training(config, TrackingSettings(home=home))
        seconds = time.perf_counter() - start
    metrics = result.outcome.metrics()
    out: dict[str, Any] = {"leads": n, "seconds": round(seconds, 1)}
    for stage in ("mql", "sql"):
        out[f"{stage}_roc_auc"] = round(metrics[f"test_{stage}_roc_auc"], 4)
        out[f"{stage}_baseline_roc_auc"] = round(metrics[f"baseline_test_{stage}_roc_auc"], 4)
        out[f"{stage}_oracle_roc_auc"] = round(metrics[f"oracle_test_{stage}_roc_auc"], 4)
        # Day-30 snapshots only: the rows where the generator's truth applies.
        out[f"{stage}_model_roc_auc_oracle_rows"] = round(
            metrics[f"oracle_rows_test_{stage}_model_roc_auc"], 4
        )
        out[f"{stage}_share_of_oracle"] = round(metrics[f"oracle_share_test_{stage}_roc_auc"], 4)
        out[f"{stage}_pr_auc"] = round(metrics[f"test_{stage}_pr_auc"], 4)
        out[f"{stage}_ece"] = round(metrics[f"test_{stage}_ece"], 4)
    out["phases_s"] = result.outcome.timings
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=100_000)
    args = parser.parse_args()
    result = isolated(bench_training, args.leads)
    print("training: (fresh process; peak RSS includes the interpreter and MLflow)")
    for key, value in result.items():
        print(f"  {key:<24} {value}")


if __name__ == "__main__":
    main()
