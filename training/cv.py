"""Cross-validation of the whole training pipeline, for data sets too small for one split.

Each fold runs exactly what a real training run does (feature builder fitted on the
fold's training rows, early stopping, calibration and thresholds on a validation part
carved out of them) and measures on the held-out fold. The mean over folds is the
honest estimate of what the model would do on new leads from the same source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import (
    GroupShuffleSplit,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)

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


def fold_splits(
    y: np.ndarray, config: TrainConfig, folds: int, groups: np.ndarray | None = None
) -> list[Split]:
    """Stratified folds; each fold's training rows give up a stratified validation part.

    With ``groups`` (a lead's id, when a lead has several snapshot rows) a lead's rows
    stay together in one part, so no lead is trained on and tested on at once.
    """
    val_share = config.validation_share / (1 - 1 / folds)
    out = []
    if groups is None:
        outer = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
        for rest, test in outer.split(np.zeros(len(y)), y):
            train_rows, val_rows = train_test_split(
                rest, test_size=val_share, stratify=y[rest], random_state=config.seed
            )
            out.append(Split(np.sort(train_rows), np.sort(val_rows), np.sort(test), "stratified"))
        return out
    grouped = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    for rest, test in grouped.split(np.zeros(len(y)), y, groups):
        carve = GroupShuffleSplit(n_splits=1, test_size=val_share, random_state=config.seed)
        kept, held = next(carve.split(rest, groups=groups[rest]))
        out.append(Split(np.sort(rest[kept]), np.sort(rest[held]), np.sort(test), "grouped"))
    return out


def lead_groups(spec: FeatureSpec, data: TrainingSet) -> np.ndarray | None:
    """Each row's lead id when some lead has several rows (snapshots), else None."""
    ids = data.leads[spec.id_column].to_numpy()
    return ids if len(pd.unique(ids)) < len(ids) else None


def cross_validate(
    spec: FeatureSpec,
    config: TrainConfig,
    data: TrainingSet,
    folds: int = 5,
    *,
    threads: int | None = None,
) -> list[CVResult]:
    """Per scored stage, each metric per fold for the model and the logistic baseline.

    LightGBM uses the config's threads (one by default: on a shared machine its spinning
    threads cost far more than they save; measured 1.7 s instead of 34 s for 5 folds of
    3,000 rows while another job kept the second core busy).
    """
    top = data.labels.columns[-1]
    per_stage = {
        s: CVResult(s, folds, {m: [] for m in METRICS}, {m: [] for m in METRICS})
        for s in spec.scored_stages
    }
    y = data.labels[top].to_numpy()
    for fold in fold_splits(y, config, folds, lead_groups(spec, data)):
        outcome = train(spec, config, data, fold, threads=threads)
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
