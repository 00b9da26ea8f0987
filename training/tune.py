"""``leadscore tune``: search LightGBM and head settings, and say honestly what it gained.

A search that picks the best of 30 settings by cross-validation and then reports that
same cross-validation score reports luck as skill. So the estimate is **nested**: the
rows are split into outer folds; on each outer fold's training rows a whole search runs
(Optuna's TPE sampler, each trial scored by an inner cross-validation of the real
pipeline: features, early stopping, calibration); the settings it picks are trained on
those rows and measured once on the outer fold's held-out rows, next to the untuned
config and the logistic baseline on the very same rows. Only then does one more search,
over all rows, choose the settings that are logged to MLflow and, when the held-out folds
showed a gain, written to the config (``leadscore tune``).

The search space covers the booster (learning rate, leaves, leaf size, sampling,
regularisation, categorical handling, extremely randomised trees) and the head: LightGBM
alone, a logistic regression alone, or a blend of their log-odds. The config's own
settings are always the first trial, so a search never starts below them.

Folds keep a lead's snapshot rows together; on time-ordered data the folds are not
time-ordered, so the estimate does not include drift (``train`` measures on the newest
leads). LightGBM runs single-threaded here: many small fits, one after another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from features.spec import FeatureSpec
from training.config import HeadParams, LightGBMParams, TrainConfig
from training.cv import fold_splits, lead_groups
from training.dataset import TrainingSet, load_training_set
from training.pipeline import train

log = logging.getLogger(__name__)
METRIC = "roc_auc"
#: Early stopping patience inside the search: enough to find the best round, cheaper.
SEARCH_PATIENCE = 50


@dataclass(frozen=True)
class TuneOptions:
    trials: int = 30
    outer_folds: int = 5
    inner_folds: int = 3
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError(f"--trials must be at least 1, got {self.trials}")
        if self.outer_folds < 2 or self.inner_folds < 2:
            raise ValueError("--outer-folds and --inner-folds must be at least 2")


@dataclass(frozen=True)
class Chosen:
    """Settings a search picked and the inner cross-validated score that picked them."""

    lightgbm: LightGBMParams
    head: HeadParams
    inner_score: float

    def describe(self) -> str:
        lgbm = self.lightgbm
        head = self.head.kind + (
            f" (logistic weight {self.head.blend_weight:.2f})" if self.head.kind == "blend" else ""
        )
        return (
            f"head {head}; learning_rate {lgbm.learning_rate:.3g}, num_leaves {lgbm.num_leaves}, "
            f"min_data_in_leaf {lgbm.min_data_in_leaf}, feature_fraction "
            f"{lgbm.feature_fraction:.2f}, lambda_l2 {lgbm.lambda_l2:.3g}, extra_trees "
            f"{lgbm.extra_trees}"
        )


@dataclass
class TuneReport:
    """Per outer fold: the untuned config, the tuned settings and the logistic baseline."""

    spec: str
    stage: str
    rows: int
    options: TuneOptions
    untuned: list[float] = field(default_factory=list)
    tuned: list[float] = field(default_factory=list)
    logistic: list[float] = field(default_factory=list)
    outer_choices: list[Chosen] = field(default_factory=list)
    chosen: Chosen | None = None
    trials: int = 0
    fits: int = 0
    seconds: float = 0.0

    @property
    def gain(self) -> float:
        """Mean per-fold ROC-AUC of the tuned settings minus the config's, on held-out rows."""
        return float(np.mean(np.asarray(self.tuned) - np.asarray(self.untuned)))

    def metrics(self) -> dict[str, float]:
        out = {"search_seconds": self.seconds, "search_trials": float(self.trials)}
        out["search_fits"] = float(self.fits)
        for name, values in (
            ("untuned", self.untuned),
            ("tuned", self.tuned),
            ("logistic", self.logistic),
        ):
            out[f"nested_{name}_{METRIC}"] = float(np.mean(values))
            out[f"nested_{name}_{METRIC}_std"] = float(np.std(values))
        return out

    def text(self) -> str:
        k = self.options.outer_folds
        lines = [
            f"{self.spec}: nested {k}-fold cross-validation ({self.options.inner_folds}-fold "
            f"inner, {self.options.trials} trials per search), {self.rows:,} rows, stage "
            f"{self.stage}",
            f"  {'model':<32} {'ROC-AUC':>16}",
        ]
        for label, values in (
            ("untuned (the config as it was)", self.untuned),
            ("tuned (search inside each fold)", self.tuned),
            ("logistic baseline", self.logistic),
        ):
            lines.append(f"  {label:<32} {np.mean(values):.4f} ± {np.std(values):.4f}")
        gain = np.asarray(self.tuned) - np.asarray(self.untuned)
        lines.append(
            f"  tuned - untuned per fold: {', '.join(f'{g:+.4f}' for g in gain)} "
            f"(mean {gain.mean():+.4f})"
        )
        lines.append(
            f"Search cost: {self.trials} trials, {self.fits} model fits, {self.seconds:.0f} s."
        )
        if self.chosen is not None:
            lines.append(
                f"Chosen on all rows (inner CV {self.chosen.inner_score:.4f}): "
                f"{self.chosen.describe()}"
            )
        return "\n".join(lines)


def tune(
    spec: FeatureSpec,
    config: TrainConfig,
    options: TuneOptions,
    *,
    log_to_mlflow: bool = False,
    data: TrainingSet | None = None,
) -> TuneReport:
    """Nested-CV estimate of tuned vs untuned vs logistic, then the final search."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    data = data if data is not None else load_training_set(spec, config)
    stage = spec.scored_stages[-1]
    report = TuneReport(spec.name, stage, len(data), options)
    y = data.labels[stage].to_numpy()
    groups = lead_groups(spec, data)
    for k, fold in enumerate(fold_splits(y, config, options.outer_folds, groups), start=1):
        outer_train = np.sort(np.concatenate([fold.train, fold.validation]))
        chosen, trials, fits = search(spec, config, data.subset(outer_train), options)
        report.trials += trials
        report.fits += fits
        report.outer_choices.append(chosen)
        untuned = train(spec, config, data, fold, threads=1)
        tuned = train(spec, _with(config, chosen, baseline=False), data, fold, threads=1)
        report.untuned.append(_score(untuned.stages, stage))
        report.tuned.append(_score(tuned.stages, stage))
        baseline = next(r.baseline for r in untuned.stages if r.stage == stage)
        report.logistic.append(getattr(baseline, METRIC) if baseline else float("nan"))
        log.info("outer fold %d: untuned %.4f tuned %.4f", k, report.untuned[-1], report.tuned[-1])
    report.chosen, trials, fits = search(spec, config, data, options)
    report.trials += trials
    report.fits += fits
    report.seconds = time.perf_counter() - started
    if log_to_mlflow:
        _log(config, report)
    return report


def search(
    spec: FeatureSpec, config: TrainConfig, data: TrainingSet, options: TuneOptions
) -> tuple[Chosen, int, int]:
    """One Optuna study over ``data``: (best settings, trials run, model fits)."""
    stage = spec.scored_stages[-1]
    y = data.labels[stage].to_numpy()
    folds = fold_splits(y, config, options.inner_folds, lead_groups(spec, data))
    quick = config.lightgbm.model_copy(
        update={
            "early_stopping_rounds": min(config.lightgbm.early_stopping_rounds, SEARCH_PATIENCE)
        }
    )
    base = config.model_copy(update={"baseline": False, "plots": False, "lightgbm": quick})

    def objective(trial: optuna.Trial) -> float:
        candidate = _with(base, _suggest(trial, base))
        scores = [
            _score(train(spec, candidate, data, fold, threads=1).stages, stage) for fold in folds
        ]
        return float(np.mean(scores))

    sampler = optuna.samplers.TPESampler(seed=config.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(_as_params(config))  # the config as it is: never start below it
    study.optimize(objective, n_trials=options.trials, timeout=options.timeout_s)
    best = _with(base, _suggest(optuna.trial.FixedTrial(study.best_params), base))
    lightgbm = best.lightgbm.model_copy(
        update={"early_stopping_rounds": config.lightgbm.early_stopping_rounds}
    )
    done = len(study.trials)
    return Chosen(lightgbm, best.head, float(study.best_value)), done, done * len(folds)


def _suggest(trial: optuna.Trial | optuna.trial.FixedTrial, base: TrainConfig) -> Chosen:
    lgbm = base.lightgbm.model_copy(
        update={
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 5, 200, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
            "extra_trees": trial.suggest_categorical("extra_trees", [False, True]),
            "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 50.0, log=True),
            "max_cat_to_onehot": trial.suggest_int("max_cat_to_onehot", 4, 64, log=True),
            "min_data_per_group": trial.suggest_int("min_data_per_group", 5, 200, log=True),
        }
    )
    kind = trial.suggest_categorical("head", ["lightgbm", "blend", "logistic"])
    head = base.head.model_copy(update={"kind": kind})
    if kind == "blend":
        head = head.model_copy(
            update={"blend_weight": trial.suggest_float("blend_weight", 0.1, 0.9)}
        )
    if kind != "lightgbm":
        head = head.model_copy(
            update={"logistic_c": trial.suggest_float("logistic_c", 0.01, 10.0, log=True)}
        )
    return Chosen(lgbm, head, float("nan"))


def _as_params(config: TrainConfig) -> dict[str, Any]:
    """The config's settings as a trial, clipped into the search space."""
    lgbm, head = config.lightgbm, config.head
    params: dict[str, Any] = {
        "learning_rate": min(max(lgbm.learning_rate, 0.01), 0.2),
        "num_leaves": min(max(lgbm.num_leaves, 4), 64),
        "min_data_in_leaf": min(max(lgbm.min_data_in_leaf, 5), 200),
        "feature_fraction": max(lgbm.feature_fraction, 0.4),
        "bagging_fraction": max(lgbm.bagging_fraction, 0.5),
        "lambda_l2": min(max(lgbm.lambda_l2, 1e-3), 30.0),
        "extra_trees": lgbm.extra_trees,
        "cat_smooth": min(max(lgbm.cat_smooth, 1.0), 50.0),
        "max_cat_to_onehot": min(max(lgbm.max_cat_to_onehot, 4), 64),
        "min_data_per_group": min(max(lgbm.min_data_per_group, 5), 200),
        "head": head.kind,
    }
    if head.kind == "blend":
        params["blend_weight"] = min(max(head.blend_weight, 0.1), 0.9)
    if head.kind != "lightgbm":
        params["logistic_c"] = min(max(head.logistic_c, 0.01), 10.0)
    return params


def _with(config: TrainConfig, chosen: Chosen, **extra: Any) -> TrainConfig:
    return config.model_copy(update={"lightgbm": chosen.lightgbm, "head": chosen.head, **extra})


def _score(stages: list[Any], stage: str) -> float:
    return float(getattr(next(r for r in stages if r.stage == stage).metrics, METRIC))


def _log(config: TrainConfig, report: TuneReport) -> None:
    """One MLflow run per tuning: chosen settings as params, the nested estimate as metrics."""
    import mlflow

    from training.tracking import TrackingSettings, configure, mlflow_params

    settings = TrackingSettings().for_names(
        experiment=config.experiment, model_name=config.model_name
    )
    configure(settings)
    assert report.chosen is not None
    with mlflow.start_run(run_name="tune"):
        mlflow.set_tags({"leadscore.kind": "tune", "spec": report.spec})
        mlflow.log_params(
            mlflow_params(
                {
                    "lightgbm": report.chosen.lightgbm.model_dump(mode="json"),
                    "head": report.chosen.head.model_dump(mode="json"),
                    "trials": report.options.trials,
                    "outer_folds": report.options.outer_folds,
                    "inner_folds": report.options.inner_folds,
                }
            )
        )
        mlflow.log_metrics(report.metrics())
        mlflow.log_text(report.text(), "tune_report.txt")


def write_tuned_config(path: Path, chosen: Chosen | None) -> None:
    """Replace the config file's ``lightgbm`` and ``head`` sections; keep everything else.

    Other lines (comments included) stay as the user wrote them; the new sections go at
    the end, under a comment saying where they came from.
    """
    if chosen is None:
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept: list[str] = []
    skipping = False
    for line in lines:
        top_key = line.split(":", 1)[0] if line and not line[0].isspace() else None
        if top_key is not None and not line.startswith("#"):
            skipping = top_key in ("lightgbm", "head")
            while skipping and kept and kept[-1].startswith("#"):
                kept.pop()  # the comment that explained the old settings
        if not skipping:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    stamp = time.strftime("%Y-%m-%d")
    block = yaml.safe_dump(
        {
            "lightgbm": chosen.lightgbm.model_dump(mode="json"),
            "head": chosen.head.model_dump(mode="json"),
        },
        sort_keys=False,
    )
    kept += [
        "",
        f"# Chosen by `leadscore tune` on {stamp} (inner CV {chosen.inner_score:.4f}).",
        block,
    ]
    path.write_text("\n".join(kept).rstrip() + "\n", encoding="utf-8")
