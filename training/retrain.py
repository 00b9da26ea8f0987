"""``leadscore retrain``: the loop closed - log to challenger to a fair duel to champion.

1. Rows from the scoring log (and the files, with ``from_log.with_files``), as
   ``train --from-log`` builds them.
2. A challenger trained on them (tracked and registered, unless ``dry_run``).
3. The **shared window**: the most recent matured rows, which the time split held out
   of the challenger's training and validation. The champion scores the very same rows
   (their stored inputs, through its own feature builder), so both models are judged on
   one window - not each on its own test set, which would compare different leads.
4. The challenger is promoted only if it is not worse on the promotion metric (the
   config's ``promotion``: metric, tolerance, direction) on that window. Both models'
   figures go into the challenger's run and the version's tags and description, promoted
   or not, so the registry says why.
5. The service follows the ``champion`` alias by itself (``LEADSCORE_MODEL_FOLLOW_S``).

``dry_run`` trains in memory and says what would happen, registering nothing.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from features.spec import FeatureSpec, load_spec
from models.readiness import ReadinessModel
from training.config import TrainConfig, check_fits_spec
from training.dataset import AS_OF, Split, TrainingSet, split
from training.evaluation import StageMetrics, stage_metrics
from training.from_log import load_rows
from training.pipeline import TrainOutcome, train
from training.tracking import RegistryError, TrackingSettings, configure, resolve_tracking_uri

if TYPE_CHECKING:
    from training.registry import VersionInfo

_METRICS = tuple(StageMetrics.__dataclass_fields__)


@dataclass(frozen=True)
class Duel:
    """Challenger and champion on the same rows: the gate's inputs and its verdict."""

    window: tuple[str, str]
    rows: int
    stage: str
    metric: str
    higher_is_better: bool
    tolerance: float
    challenger: dict[str, StageMetrics]
    champion: dict[str, StageMetrics] | None
    champion_version: str | None

    @property
    def challenger_value(self) -> float:
        return float(getattr(self.challenger[self.stage], self.metric))

    @property
    def champion_value(self) -> float | None:
        if self.champion is None:
            return None
        return float(getattr(self.champion[self.stage], self.metric))

    @property
    def passes(self) -> bool:
        theirs = self.champion_value
        if theirs is None:
            return True
        ours = self.challenger_value
        if math.isnan(ours):
            return False
        shortfall = theirs - ours if self.higher_is_better else ours - theirs
        return shortfall <= self.tolerance + 1e-12

    def reason(self) -> str:
        ours = f"{self.stage} {self.metric} {self.challenger_value:.4f}"
        where = f"on {self.rows:,} matured scores {self.window[0]} to {self.window[1]}"
        if self.champion is None:
            return f"No champion yet: challenger {ours} {where}."
        verdict = "not worse" if self.passes else "worse"
        return (
            f"Challenger {ours} vs champion version {self.champion_version} "
            f"{self.champion_value:.4f} {where}: {verdict} (tolerance {self.tolerance:g}). "
            + self.calibration_text()
        )

    def calibration_text(self) -> str:
        parts = []
        for stage, m in self.challenger.items():
            theirs = self.champion[stage].ece if self.champion else None
            shown = f"{theirs:.4f}" if theirs is not None else "n/a"
            parts.append(f"{stage} ECE {m.ece:.4f} vs {shown}")
        return "; ".join(parts) + "."

    def metrics(self) -> dict[str, float]:
        """Flat figures for MLflow: ``shared_<stage>_<m>`` and ``champion_shared_...``."""
        out: dict[str, float] = {}
        for stage, m in self.challenger.items():
            out.update(m.as_dict(f"shared_{stage}_"))
        for stage, m in (self.champion or {}).items():
            out.update(m.as_dict(f"champion_shared_{stage}_"))
        return {k: v for k, v in out.items() if np.isfinite(v)}


@dataclass
class RetrainResult:
    dry_run: bool
    rows: int
    dropped: dict[str, int]
    duel: Duel
    promoted: bool
    challenger_version: str | None = None
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        head = "Dry run: nothing registered or promoted." if self.dry_run else ""
        lines = [head] if head else []
        dropped = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.dropped.items())
        lines.append(f"Training rows: {self.rows:,} ({dropped or 'none dropped'}).")
        lines.append(self.duel.reason())
        if self.dry_run:
            verb = "would promote" if self.duel.passes else "would keep the champion"
            lines.append(f"Decision: {verb}.")
        elif self.promoted:
            lines.append(
                f"Promoted version {self.challenger_version} to champion; serving replicas "
                "follow the alias within LEADSCORE_MODEL_FOLLOW_S."
            )
        else:
            lines.append(f"Kept the champion; version {self.challenger_version} stays challenger.")
        return "\n".join(lines + self.notes)


def retrain(
    config: TrainConfig,
    settings: TrackingSettings,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RetrainResult:
    """Train a challenger from the log, duel the champion on one window, promote if not worse."""
    if config.from_log is None:
        from training.config import ConfigError

        raise ConfigError("retrain: the config has no from_log section (where is the log?)")
    spec = load_spec(config.spec)
    check_fits_spec(config, spec)
    data = load_rows(spec, config, now)  # refuses an empty window before anything is tracked
    parts = split(data, spec, config)
    settings = settings.for_names(experiment=config.experiment, model_name=config.model_name)
    configure(settings)
    tracking_uri = resolve_tracking_uri(settings)
    from training import registry

    champion_info = registry.get_alias(settings.model_name, registry.CHAMPION)
    champion = _fetch(settings.model_name, champion_info, tracking_uri)
    if dry_run:
        outcome = train(spec, config, data, parts)
        duel = _duel(spec, config, data, parts, outcome, champion)
        return RetrainResult(True, len(data), data.dropped, duel, promoted=False)
    from training.run import run_training

    result = run_training(config, settings, data=data)
    duel = _duel(spec, config, data, parts, result.outcome, champion)
    version = result.version.version if result.version else None
    _record(result.run_id, settings.model_name, version, duel)
    promoted = False
    if version is not None and duel.passes:
        registry.promote_version(settings.model_name, version, reason=duel.reason())
        promoted = True
    return RetrainResult(False, len(data), data.dropped, duel, promoted, version, result.run_id)


def _fetch(name: str, info: VersionInfo | None, tracking_uri: str) -> ReadinessModel | None:
    """The champion's model, downloaded; None when there is no champion."""
    if info is None:
        return None
    from models.registry_fetch import ModelFetchError, download

    version = info.version
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder, _, _ = download(f"models:/{name}/{version}", tracking_uri, Path(tmp))
        except ModelFetchError as exc:
            raise RegistryError(f"retrain: the champion cannot be fetched: {exc}") from exc
        model = ReadinessModel.load(folder)
    model.metadata["version"] = version
    return model


def _duel(
    spec: FeatureSpec,
    config: TrainConfig,
    data: TrainingSet,
    parts: Split,
    outcome: TrainOutcome,
    champion: ReadinessModel | None,
) -> Duel:
    """Both models on the challenger's held-out (most recent) rows."""
    test = data.subset(parts.test)
    as_of = test.leads.get(AS_OF)
    window = (str(as_of.min()), str(as_of.max())) if as_of is not None and len(as_of) else ("", "")
    ours = {r.stage: r.metrics for r in outcome.stages}
    theirs = None
    if champion is not None:
        X = champion.builder.transform(test.as_records(spec))
        P = champion.probabilities(X)
        theirs = {}
        for j, stage in enumerate(champion.stages):
            if stage in test.labels:
                theirs[stage] = stage_metrics(test.labels[stage].to_numpy(), P[:, j])
    metric_name = config.promotion_metric(spec.scored_stages)
    stage, metric = _parse_metric(metric_name, spec.scored_stages)
    return Duel(
        window=window,
        rows=len(test),
        stage=stage,
        metric=metric,
        higher_is_better=config.promotion.higher_is_better,
        tolerance=config.promotion.tolerance,
        challenger=ours,
        champion=theirs,
        champion_version=None if champion is None else champion.version,
    )


def _parse_metric(name: str, stages: list[str]) -> tuple[str, str]:
    """``test_sql_pr_auc`` -> (``sql``, ``pr_auc``): the duel recomputes it on the window."""
    body = name.removeprefix("test_")
    for stage in sorted(stages, key=len, reverse=True):
        metric = body.removeprefix(f"{stage}_")
        if body.startswith(f"{stage}_") and metric in _METRICS:
            return stage, metric
    from training.config import ConfigError

    raise ConfigError(
        f"retrain: promotion metric {name!r} is not a stage metric "
        f"(test_<stage>_<{'|'.join(_METRICS)}>)"
    )


def _record(run_id: str, name: str, version: str | None, duel: Duel) -> None:
    """Both models' figures on the shared window into the run and the version."""
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(duel.metrics())
        mlflow.log_text(duel.reason(), "retrain_decision.txt")
        mlflow.set_tags({"retrain_decision": "promote" if duel.passes else "keep_champion"})
    if version is not None:
        from training import registry

        registry.describe_version(
            name,
            version,
            description=duel.reason(),
            tags={
                "shared_window": f"{duel.window[0]} to {duel.window[1]}",
                "shared_rows": str(duel.rows),
                "shared_metric": f"{duel.stage}_{duel.metric}",
                "shared_challenger": f"{duel.challenger_value:.6f}",
                "shared_champion": "none"
                if duel.champion_value is None
                else f"{duel.champion_value:.6f}",
                "shared_champion_version": duel.champion_version or "none",
            },
        )
