"""Cross-validation of the whole training pipeline, for data sets too small for one split.

Each fold runs exactly what a real training run does (feature builder fitted on the
fold's training rows, early stopping, calibration and thresholds on a validation part
carved out of them) and measures on the held-out fold. The mean over folds is the
honest estimate of what the model would do on new leads from the same source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from features.spec import FeatureSpec
from training.config import TrainConfig
from training.dataset import Split, TrainingSet
from training.pipeline import train

METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_at_10")


@dataclass(frozen=True)
class CVResult:
    stage: str
    folds: int
    model: dict[str, list[float]]
    baseline: dict[str, list[float]]

    def mean(self, which: str = "model") -> dict[str, float]:
        values = self.model if which == "model" else self.baseline
        return {k: float(np.mean(v)) for k, v in values.items()}

    def std(self, which: str = "model") -> dict[str, float]:
        values = self.model if which == "model" else self.baseline
        return {k: float(np.std(v)) for k, v in values.items()}


def fold_splits(y: np.ndarray, config: TrainConfig, folds: int) -> list[Split]:
    """Stratified folds; each fold's training rows give up a stratified validation part."""
    outer = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    out = []
    for rest, test in outer.split(np.zeros(len(y)), y):
        val_share = config.validation_share / (1 - 1 / folds)
        train_rows, val_rows = train_test_split(
            rest, test_size=val_share, stratify=y[rest], random_state=config.seed
        )
        out.append(Split(np.sort(train_rows), np.sort(val_rows), np.sort(test), "stratified"))
    return out


def cross_validate(
    spec: FeatureSpec, config: TrainConfig, data: TrainingSet, folds: int = 5
) -> list[CVResult]:
    """Per scored stage, each metric per fold for the model and the logistic baseline."""
    top = data.labels.columns[-1]
    per_stage = {
        s: CVResult(s, folds, {m: [] for m in METRICS}, {m: [] for m in METRICS})
        for s in spec.scored_stages
    }
    for fold in fold_splits(data.labels[top].to_numpy(), config, folds):
        outcome = train(spec, config, data, fold)
        for r in outcome.stages:
            model_metrics = r.metrics.as_dict()
            for m in METRICS:
                per_stage[r.stage].model[m].append(model_metrics[m])
            if r.baseline is not None:
                baseline_metrics = r.baseline.as_dict()
                for m in METRICS:
                    per_stage[r.stage].baseline[m].append(baseline_metrics[m])
    return list(per_stage.values())


def format_table(results: list[CVResult]) -> str:
    """A plain-text table: mean ± standard deviation over folds, model beside baseline."""
    lines = [f"{'stage':<10} {'metric':<11} {'model':>17} {'logistic baseline':>19}"]
    for r in results:
        mean, std = r.mean(), r.std()
        b_mean, b_std = r.mean("baseline"), r.std("baseline")
        for m in METRICS:
            base = f"{b_mean[m]:.4f} ± {b_std[m]:.4f}" if r.baseline[m] else "n/a"
            lines.append(f"{r.stage:<10} {m:<11} {mean[m]:>8.4f} ± {std[m]:.4f} {base:>19}")
    return "\n".join(lines)
