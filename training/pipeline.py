"""The training pipeline, free of MLflow: data in, a readiness model and its evaluation out.

Order matters and is the point of this module: split first, fit the feature builder
on training rows only, fit boosters with early stopping on validation rows, calibrate
and choose thresholds and grade bands on validation rows, and only then look at the
test rows, once, to measure. ``training.run`` adds tracking around it; ``training.cv``
repeats it per fold.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.builder import LeadFeatureBuilder
from features.spec import FeatureSpec
from models.calibration import Calibrator
from models.linear import LinearHead
from models.readiness import (
    ReadinessModel,
    StageHead,
    blended_margin,
    readiness_scores,
    stage_probabilities,
)
from models.reference import HORIZON_KEY, PROMISE_KEY, REFERENCE_KEY, build_reference
from training.config import TrainConfig
from training.dataset import AS_OF, Split, TrainingSet, describe
from training.evaluation import StageMetrics, oracle_share, stage_metrics
from training.fit import Matrices, fit_baseline, fit_booster
from training.thresholds import (
    ChosenThreshold,
    check_thresholds,
    choose_threshold,
    grade_bands,
    weeks_spanned,
)

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    """One stage's held-out outcome: what the test rows say about the model."""

    stage: str
    y_test: np.ndarray
    p_test: np.ndarray
    p_baseline: np.ndarray | None
    metrics: StageMetrics
    baseline: StageMetrics | None
    oracle: OracleComparison | None
    threshold: ChosenThreshold
    best_iteration: int


@dataclass
class TrainOutcome:
    model: ReadinessModel
    stages: list[StageResult]
    X_test: np.ndarray
    summary: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat metric names for tracking: ``test_<stage>_<metric>`` and baselines."""
        out: dict[str, float] = {}
        for r in self.stages:
            out.update(r.metrics.as_dict(f"test_{r.stage}_"))
            if r.baseline is not None:
                out.update(r.baseline.as_dict(f"baseline_test_{r.stage}_"))
            if r.oracle is not None:
                out[f"oracle_test_{r.stage}_roc_auc"] = r.oracle.oracle_auc
                out[f"oracle_rows_test_{r.stage}_model_roc_auc"] = r.oracle.model_auc
                out[f"oracle_share_test_{r.stage}_roc_auc"] = r.oracle.share
            out[f"threshold_{r.stage}"] = r.threshold.threshold
            out[f"val_{r.stage}_expected_precision"] = r.threshold.expected_precision
            out[f"val_{r.stage}_expected_volume_share"] = r.threshold.expected_volume_share
            out[f"best_iteration_{r.stage}"] = float(r.best_iteration)
        out.update({f"seconds_{k}": v for k, v in self.timings.items()})
        return out


def train(
    spec: FeatureSpec,
    config: TrainConfig,
    data: TrainingSet,
    split: Split,
    *,
    threads: int | None = None,
) -> TrainOutcome:
    """Fit, calibrate, set policy and evaluate a readiness model on one split.

    ``threads`` overrides the config's ``lightgbm.threads`` (0 = every core).
    """
    threads = config.lightgbm.threads if threads is None else threads
    clock = _Clock()
    parts = {name: data.subset(rows) for name, rows in _parts(split).items()}
    builder, X = _build_features(spec, parts, data.actions)
    clock.lap("features")
    m = Matrices(
        X["train"],
        X["validation"],
        builder.categorical_indices_,
        builder.monotone_constraints_,
        [str(n) for n in builder.get_feature_names_out()],
    )
    heads = []
    for stage in spec.scored_stages:
        heads.append(_fit_head(stage, m, parts, config, threads))
        clock.lap(f"fit_{stage}")
    chosen, bands = _choose_policy(heads, X["validation"], parts["validation"], config)
    model = ReadinessModel(builder, heads, bands, _metadata(spec, config, data, split))
    _attach_reference(model, chosen, X["train"])
    clock.lap("reference")
    results = _evaluate(model, chosen, X["test"], parts["test"])
    clock.lap("evaluate")
    if config.baseline:
        _add_baselines(results, m, X["test"], parts, config.seed)
        clock.lap("baseline")
    summary = describe(data, split) | {"n_features": X["train"].shape[1]}
    summary["build_report_train"] = builder.fit_report_
    return TrainOutcome(model, results, X["test"], summary, clock.laps)


def _build_features(
    spec: FeatureSpec, parts: dict[str, TrainingSet], actions: pd.DataFrame | None
) -> tuple[LeadFeatureBuilder, dict[str, np.ndarray]]:
    """The builder fitted on the training rows only, and every part's matrix."""
    builder = LeadFeatureBuilder(spec)
    train = parts["train"]
    if train.records is not None:  # rows from the scoring log: exactly what was scored
        X = {"train": builder.fit_build(train.records).values}
        for name, part in parts.items():
            if name != "train":
                X[name] = builder.transform(part.as_records(spec))
        return builder, X
    X = {"train": builder.fit_build(train.leads, actions=actions).values}
    for name, part in parts.items():
        if name != "train":
            X[name] = builder.transform(part.leads, actions=actions)
    return builder, X


def _choose_policy(
    heads: list[StageHead],
    X_val: np.ndarray,
    validation: TrainingSet,
    config: TrainConfig,
) -> tuple[list[ChosenThreshold], dict[str, float]]:
    """Thresholds (set on the heads) and grade bands, chosen on validation rows.

    Both are chosen on what will be served: calibrated probabilities, capped along the
    funnel (P(SQL) <= P(MQL)).
    """
    P_val = stage_probabilities(heads, X_val)
    rows = validation.leads
    weeks = weeks_spanned(rows[AS_OF]) if AS_OF in rows else None
    chosen = [
        choose_threshold(
            head.stage,
            validation.labels[head.stage].to_numpy(),
            P_val[:, j],
            config.policy_for(head.stage),
            weeks=weeks,
        )
        for j, head in enumerate(heads)
    ]
    check_thresholds(chosen)
    for head, threshold in zip(heads, chosen, strict=True):
        head.threshold = threshold.threshold
    return chosen, grade_bands(readiness_scores(P_val))


def _attach_reference(
    model: ReadinessModel, chosen: list[ChosenThreshold], X_train: np.ndarray
) -> None:
    """Store the training rows' binned distributions and the thresholds' promise.

    Monitoring compares live traffic with the reference and live precision with the
    promise, from the model alone (``models.reference``): no training data needed.
    """
    builder = model.builder
    names = [str(n) for n in builder.get_feature_names_out()]
    levels = {names[j]: builder.categories_of(names[j]) for j in builder.categorical_indices_}
    reference = build_reference(X_train, names, levels, model.probabilities(X_train), model.stages)
    model.metadata[REFERENCE_KEY] = reference.to_dict()
    model.metadata[PROMISE_KEY] = {
        c.stage: {
            "threshold": c.threshold,
            "precision": c.expected_precision,
            "volume_share": c.expected_volume_share,
        }
        for c in chosen
    }


def _evaluate(
    model: ReadinessModel, chosen: list[ChosenThreshold], X_test: np.ndarray, test: TrainingSet
) -> list[StageResult]:
    """The test rows, looked at once: metrics per stage (and the oracle's, on sample data)."""
    P_test = model.probabilities(X_test)
    results = []
    for j, (head, threshold) in enumerate(zip(model.heads, chosen, strict=True)):
        y_test = test.labels[head.stage].to_numpy()
        results.append(
            StageResult(
                stage=head.stage,
                y_test=y_test,
                p_test=P_test[:, j],
                p_baseline=None,
                metrics=stage_metrics(y_test, P_test[:, j]),
                baseline=None,
                oracle=_oracle(test, head.stage, y_test, P_test[:, j]),
                threshold=threshold,
                best_iteration=int(head.booster.best_iteration),
            )
        )
    return results


def _fit_head(
    stage: str,
    m: Matrices,
    parts: dict[str, TrainingSet],
    config: TrainConfig,
    threads: int,
) -> StageHead:
    """Booster on train, early-stopped and calibrated on validation: one stage's head."""
    y_train = parts["train"].labels[stage].to_numpy()
    y_val = parts["validation"].labels[stage].to_numpy()
    booster = fit_booster(m, y_train, y_val, config.lightgbm, seed=config.seed, threads=threads)
    weight = config.head.linear_weight
    linear = None
    if weight > 0:
        linear = LinearHead.fit(
            m.X_train,
            y_train,
            categorical=m.categorical,
            monotone=m.monotone if config.lightgbm.use_monotone_constraints else None,
            c=config.head.logistic_c,
            seed=config.seed,
        )
    margin_val = blended_margin(booster, linear, weight, m.X_val, threads=threads)
    calibrator = Calibrator.fit(margin_val, y_val, config.calibration)
    # The threshold is chosen once every head exists (_choose_policy), on capped probabilities.
    return StageHead(stage, booster, calibrator, 1.0, linear=linear, linear_weight=weight)


def _parts(split: Split) -> dict[str, np.ndarray]:
    return {"train": split.train, "validation": split.validation, "test": split.test}


def _add_baselines(
    results: list[StageResult],
    m: Matrices,
    X_test: np.ndarray,
    parts: dict[str, TrainingSet],
    seed: int,
) -> None:
    for r in results:
        baseline = fit_baseline(m, parts["train"].labels[r.stage].to_numpy(), seed=seed)
        r.p_baseline = baseline.predict_proba(X_test)[:, 1]
        r.baseline = stage_metrics(r.y_test, r.p_baseline)


@dataclass(frozen=True)
class OracleComparison:
    """The generator's true probabilities and the model, ranked on the very same rows."""

    oracle_auc: float
    model_auc: float
    rows: int

    @property
    def share(self) -> float:
        return oracle_share(self.model_auc, self.oracle_auc)


def _oracle(
    test: TrainingSet, stage: str, y: np.ndarray, p_model: np.ndarray
) -> OracleComparison | None:
    """The best ranking possible, on the test rows where the generator's truth applies.

    The truth is the probability used at the lead's decision time, so only snapshots
    taken then are compared, and the model's ROC-AUC is recomputed on those rows.
    """
    if test.truth is None or f"p_{stage}" not in test.truth.columns:
        return None
    p = test.truth[f"p_{stage}"].to_numpy()
    known = ~np.isnan(p)
    if known.sum() < 10 or len(np.unique(y[known])) < 2:
        return None
    return OracleComparison(
        oracle_auc=stage_metrics(y[known], p[known]).roc_auc,
        model_auc=stage_metrics(y[known], p_model[known]).roc_auc,
        rows=int(known.sum()),
    )


def _metadata(
    spec: FeatureSpec, config: TrainConfig, data: TrainingSet, split: Split
) -> dict[str, Any]:
    return {
        "spec_name": spec.name,
        "spec_version": spec.version,
        "stages": spec.scored_stages,
        "training_window": list(data.window) if data.window else None,
        "split": split.kind,
        "seed": config.seed,
        "calibration": config.calibration,
        HORIZON_KEY: config.label_horizon_days(),
        "source": "log+files"
        if config.from_log and config.from_log.with_files
        else ("log" if config.from_log else "files"),
    }


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now
