"""A monitoring report logged to MLflow: its numbers as metrics, its curves as plots.

One run per report in the model's experiment (tag ``kind=monitor``), so the history of a
model's drift and live calibration is a chart in the MLflow UI.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import mlflow
from matplotlib.figure import Figure

from monitoring.report import MonitorReport
from training import plots

_SAFE = re.compile(r"[^A-Za-z0-9_\-. /]")
TOP_PSI = 20


def log_report(report: MonitorReport) -> str:
    """Log the report to the active experiment; returns the run id."""
    name = f"monitor {report.model_version} {report.generated_at[:10]}"
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags(
            {
                "kind": "monitor",
                "model_name": report.model_name,
                "model_version": report.model_version,
                "state": report.state,
            }
        )
        mlflow.log_metrics(report_metrics(report))
        mlflow.log_dict(report.to_dict(), "monitor_report.json")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            plots.save(reliability_figure(report), folder / "live_reliability.png")
            plots.save(psi_figure(report), folder / "psi.png")
            mlflow.log_artifacts(str(folder), "plots")
        return str(run.info.run_id)


def report_metrics(report: MonitorReport) -> dict[str, float]:
    """``psi_feature_<name>``, ``psi_score_<stage>``, ``live_<stage>_<figure>`` (finite only)."""
    out: dict[str, float] = {}
    for d in report.features:
        if d.psi is not None:
            out[f"psi_feature_{_SAFE.sub('_', d.name)}"] = d.psi
    for d in report.scores:
        if d.psi is not None:
            out[f"psi_score_{d.name}"] = d.psi
    for s in report.stages:
        for key, value in (
            ("ece", s.ece),
            ("roc_auc", s.roc_auc),
            ("precision", s.live_precision),
            ("observed_rate", s.observed_rate),
            ("mean_predicted", s.mean_predicted),
            ("rows", float(s.rows)),
        ):
            if value is not None:
                out[f"live_{s.stage}_{key}"] = float(value)
    return out


def reliability_figure(report: MonitorReport) -> Figure:
    # Figure objects, not pyplot: nothing global, safe in any thread (as training.plots).
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    top = 0.05
    for s in report.stages:
        if s.reliability:
            x = [b.mean_predicted for b in s.reliability]
            y = [b.observed_rate for b in s.reliability]
            top = max(top, *x, *y)
            ece = f"{s.ece:.3f}" if s.ece is not None else "n/a"
            ax.plot(x, y, marker="o", label=f"{s.stage} (ECE {ece}, {s.rows:,} leads)")
    ax.set_xlim(0, min(1.0, top * 1.1))
    ax.set_ylim(0, min(1.0, top * 1.1))
    ax.set_xlabel("predicted probability (as served)")
    ax.set_ylabel("observed rate within the horizon")
    ax.set_title(f"Live reliability, version {report.model_version}")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def psi_figure(report: MonitorReport) -> Figure:
    items = sorted(report.scores + report.features, key=lambda d: -(d.psi or 0.0))[:TOP_PSI]
    fig = Figure(figsize=(7, max(2.5, 0.3 * len(items) + 1)))
    ax = fig.subplots()
    names = [d.name for d in reversed(items)]
    values = [d.psi or 0.0 for d in reversed(items)]
    ax.barh(names, values, color="#4c72b0")
    for x, style in ((0.10, ":"), (0.25, "--")):
        ax.axvline(x, color="grey", linestyle=style, linewidth=1)
    ax.set_xlabel("PSI against the training reference")
    ax.set_title("Drift, largest first")
    fig.tight_layout()
    return fig
