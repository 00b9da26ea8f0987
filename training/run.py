"""A tracked training run: the pipeline wrapped in MLflow, then registered as challenger.

Everything a reviewer needs to trust or reproduce a model lands in its run: the
resolved config, a fingerprint of the input files, the split sizes, test metrics of
the model, of the logistic baseline and (on sample data) of the oracle, plots, the
model card, and the model itself as a pyfunc with signature, input example and
pinned requirements. The new version gets the alias ``challenger``; promotion to
``champion`` is a separate, gated step (``training.registry``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features.spec import FeatureSpec, load_spec
from models.golden import write_golden
from models.pyfunc import (
    ARTIFACT_KEY,
    MODEL_CODE,
    code_paths,
    pinned_requirements,
    signature,
)
from models.readiness import ReadinessModel
from training import plots
from training.config import TrainConfig, check_fits_spec
from training.dataset import Split, TrainingSet, split
from training.from_log import load_rows
from training.model_card import ORACLE_ROWS_AUC, render_model_card
from training.pipeline import TrainOutcome, train
from training.registry import PROMOTION_METRIC_TAG, VersionInfo, register
from training.tracking import TrackingSettings, configure, mlflow_params

log = logging.getLogger(__name__)
N_EXAMPLES = 2
N_GOLDEN = 20


@dataclass(frozen=True)
class RunResult:
    run_id: str
    model_uri: str
    version: VersionInfo | None
    outcome: TrainOutcome


def run_training(
    config: TrainConfig,
    settings: TrackingSettings,
    *,
    register_model: bool = True,
    data: TrainingSet | None = None,
) -> RunResult:
    """Load, split, train, evaluate, log everything, register the challenger.

    The data is read and checked before any run is opened, so a refused file leaves no
    run behind; a failure once the run exists marks it FAILED with the reason as its
    note and ``failure_reason`` tag, so the MLflow UI says why.
    """
    settings = settings.for_names(experiment=config.experiment, model_name=config.model_name)
    spec = load_spec(config.spec)
    check_fits_spec(config, spec)
    if data is None:
        data = load_rows(spec, config)
    parts = split(data, spec, config)
    configure(settings)
    with mlflow.start_run() as run:
        try:
            return _tracked(config, settings, spec, data, parts, run.info.run_id, register_model)
        except BaseException as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:5000]
            mlflow.set_tags({"failure_reason": reason, "mlflow.note.content": reason})
            raise


def _tracked(
    config: TrainConfig,
    settings: TrackingSettings,
    spec: FeatureSpec,
    data: TrainingSet,
    parts: Split,
    run_id: str,
    register_model: bool,
) -> RunResult:
    """Everything inside the open run: train, log, register."""
    mlflow.set_tags(
        {
            "spec": spec.name,
            "spec_version": str(spec.version),
            "split": parts.kind,
            PROMOTION_METRIC_TAG: config.promotion_metric(spec.scored_stages),
        }
    )
    mlflow.log_params(mlflow_params(config.model_dump(mode="json")))
    mlflow.log_dict(config.model_dump(mode="json"), "config.json")
    mlflow.log_dict(_fingerprints(config), "data_fingerprint.json")
    outcome = train(spec, config, data, parts)
    mlflow.log_metrics(_finite(outcome.metrics()))
    mlflow.log_dict(_jsonable(outcome.summary), "data_summary.json")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if config.plots:
            _log_plots(outcome, folder / "plots", config.shap_sample, config.seed)
        golden = data.subset(parts.test[:N_GOLDEN]).as_records(spec)
        outcome.model.metadata["run_id"] = run_id
        outcome.model.metadata["metrics"] = _headline(outcome.metrics())
        outcome.model.metadata["promotion_metric"] = config.promotion_metric(spec.scored_stages)
        model_uri = _log_model(outcome.model, golden[:N_EXAMPLES], golden, folder / "model")
    version = (
        register(model_uri, name=settings.model_name, run_id=run_id) if register_model else None
    )
    card = _card(spec, settings.model_name, version.version if version else None, data, outcome)
    mlflow.log_text(card, "model_card.md")
    return RunResult(run_id, model_uri, version, outcome)


def describe_result(result: RunResult) -> str:
    """Held-out figures per stage, one line each, beside the baseline and the oracle."""
    lines = []
    for r in result.outcome.stages:
        line = (
            f"  {r.stage:<9} test ROC-AUC {r.metrics.roc_auc:.4f}  PR-AUC {r.metrics.pr_auc:.4f}"
            f"  ECE {r.metrics.ece:.4f}  lift@10% {r.metrics.lift_at_10:.2f}"
            f"  threshold {r.threshold.threshold:.3f}"
        )
        if r.baseline is not None:
            line += f"  | baseline ROC-AUC {r.baseline.roc_auc:.4f}"
        if r.oracle is not None:
            line += (
                f"  | oracle rows: model {r.oracle.model_auc:.4f} = {100 * r.oracle.share:.1f} %"
                f" of oracle {r.oracle.oracle_auc:.4f}"
            )
        lines.append(line)
    return "\n".join(lines)


def _log_model(
    model: ReadinessModel,
    examples: list[dict[str, Any]],
    golden: list[dict[str, Any]],
    folder: Path,
) -> str:
    """Log the pyfunc with what `mlflow models serve` needs to run it elsewhere."""
    model.save(folder)
    write_golden(model, golden, folder)
    example = pd.DataFrame(examples)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(MODEL_CODE),
        artifacts={ARTIFACT_KEY: str(folder)},
        code_paths=code_paths(),
        signature=signature(model.builder.spec, model.stages),
        input_example=example,
        pip_requirements=pinned_requirements(),
    )
    return str(info.model_uri)


def _log_plots(outcome: TrainOutcome, folder: Path, shap_sample: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    by_stage = {r.stage: (r.y_test, r.p_test) for r in outcome.stages}
    baseline = {
        r.stage: (r.y_test, r.p_baseline) for r in outcome.stages if r.p_baseline is not None
    }
    figures = {
        "roc.png": plots.roc_curve_plot(by_stage, baseline or None),
        "precision_recall.png": plots.pr_curve_plot(by_stage, baseline or None),
        "reliability.png": plots.reliability_plot(by_stage, baseline or None),
        "cumulative_gains.png": plots.gains_plot(by_stage, baseline or None),
    }
    model = outcome.model
    scores = model.scores(model.probabilities(outcome.X_test))
    names = [str(n) for n in model.builder.get_feature_names_out()]
    for r in outcome.stages:
        figures[f"score_histogram_{r.stage}.png"] = plots.score_histogram(r.y_test, scores, r.stage)
    top = model.heads[-1]
    gains = top.booster.feature_importance(importance_type="gain")
    figures[f"feature_importance_{top.stage}.png"] = plots.feature_importance_plot(names, gains)
    rng = np.random.default_rng(seed)
    n = len(outcome.X_test)
    rows = rng.choice(n, size=min(shap_sample, n), replace=False)
    contrib = top.contributions(outcome.X_test[rows])[:, :-1]
    figures[f"shap_summary_{top.stage}.png"] = plots.shap_summary_plot(
        names, contrib, outcome.X_test[rows]
    )
    for name, fig in figures.items():
        plots.save(fig, folder / name)
    mlflow.log_artifacts(str(folder), "plots")


def _card(
    spec: FeatureSpec,
    model_name: str,
    version: str | None,
    data: TrainingSet,
    outcome: TrainOutcome,
) -> str:
    metrics: dict[str, dict[str, float]] = {}
    for r in outcome.stages:
        metrics[r.stage] = r.metrics.as_dict()
        if r.baseline is not None:
            metrics[r.stage] |= r.baseline.as_dict("baseline_")
        if r.oracle is not None:
            metrics[r.stage][ORACLE_ROWS_AUC] = r.oracle.model_auc
    oracle = {r.stage: r.oracle.oracle_auc for r in outcome.stages if r.oracle is not None}
    s = outcome.summary
    return render_model_card(
        model_name=model_name,
        version=version,
        spec_name=spec.name,
        spec_version=spec.version,
        data_window=data.window,
        n_train=int(s["n_train"]),
        n_val=int(s["n_val"]),
        n_test=int(s["n_test"]),
        metrics=metrics,
        thresholds=[r.threshold for r in outcome.stages],
        grade_bands=outcome.model.grade_bands,
        oracle=oracle or None,
    )


def _headline(metrics: dict[str, float]) -> dict[str, float]:
    """The held-out metrics that travel with the model (shown by the API's /v1/model)."""
    return {
        k: round(v, 6)
        for k, v in metrics.items()
        if k.startswith(("test_", "baseline_test_", "oracle_")) and np.isfinite(v)
    }


def _fingerprints(config: TrainConfig) -> dict[str, str]:
    """SHA-256 of each input file: the same digest means the same training data."""
    out = {}
    for key in ("leads", "actions", "history"):
        path = getattr(config, key)
        if path is not None and Path(path).exists():
            digest = hashlib.sha256()
            with Path(path).open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            out[key] = digest.hexdigest()
    return out


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """MLflow stores NaN, but NaN metrics only confuse comparisons: leave them out."""
    return {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
