"""The monitoring report: has the traffic shifted, is the model still calibrated?

:func:`build_report` reads two windows of the scoring log against one model:

* the **drift window** (the last ``window_days``): a uniform sample of its stored inputs is
  rebuilt into features by the model's own builder and scored by the model; every
  feature's and every stage probability's distribution is compared with the training
  reference stored in the model (PSI, :mod:`monitoring.psi`); the category volumes of all
  its scores are counted;
* the **matured window** (the ``matured_days`` before ``now - horizon``): every score whose
  outcome horizon has passed, labelled by :mod:`monitoring.labels`, gives the live
  reliability curve, ECE, ROC-AUC and precision at each threshold against its promise,
  on the probabilities as they were served.

Each number has a state (ok / watch / act, or unknown when rows are too few) and the
report's state is the worst of them; ``reasons`` says in words what drove it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine

from models.readiness import NURTURE, ReadinessModel
from models.reference import HORIZON_KEY, BinnedDistribution, promises_of, reference_of
from monitoring.collect import (
    ScoreColumns,
    count_by,
    read_outcomes,
    read_window,
    records_for,
    sample_rows,
    score_ids,
)
from monitoring.labels import LabelRules, OutcomeTable, label_scores
from monitoring.live import StageLive, stage_live
from monitoring.psi import psi_against
from monitoring.rejections import RejectionUse
from monitoring.settings import MonitorSettings
from monitoring.states import State, above, worst

#: Used when the model does not say which horizon its labels had.
DEFAULT_HORIZON_DAYS = 90.0


@dataclass(frozen=True)
class Drift:
    """One feature's (or one stage probability's) shift against the training reference."""

    name: str
    source: str
    psi: float | None
    state: State
    rows: int
    #: The bins that moved most: (bin, training share, live share).
    moved: list[tuple[str, float, float]]


@dataclass(frozen=True)
class Volume:
    """How many scores of the drift window fell in a category, and the promised share."""

    category: str
    count: int
    share: float
    promised_share: float | None


@dataclass
class MonitorReport:
    model_name: str
    model_version: str
    generated_at: str
    state: State
    reasons: list[str]
    drift_window: tuple[str, str]
    matured_window: tuple[str, str]
    horizon_days: float
    drift_rows: int
    drift_sampled: int
    drift_without_input: int
    matured_rows: int
    matured_dropped: dict[str, int]
    matured_versions: dict[str, int]
    features: list[Drift]
    scores: list[Drift]
    stages: list[StageLive]
    volumes: list[Volume]
    seconds: float = 0.0
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stages"] = [s.to_dict() for s in self.stages]
        return out

    def acting(self) -> list[str]:
        """Names of everything in state act: features, stage scores, stage calibration."""
        names = [f"feature:{d.name}" for d in self.features if d.state == "act"]
        names += [f"score:{d.name}" for d in self.scores if d.state == "act"]
        names += [f"live:{s.stage}" for s in self.stages if s.state == "act"]
        return names


def build_report(
    engine: Engine,
    model: ReadinessModel,
    settings: MonitorSettings,
    *,
    model_name: str = "",
    now: datetime | None = None,
    rejections: dict[str, RejectionUse] | None = None,
) -> MonitorReport:
    """Read the log's two windows and judge ``model`` on them (see the module docstring)."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    horizon = settings.horizon_days or float(
        model.metadata.get(HORIZON_KEY) or DEFAULT_HORIZON_DAYS
    )
    drift_from = now - timedelta(days=settings.window_days)
    matured_until = now - timedelta(days=horizon)
    matured_from = matured_until - timedelta(days=settings.matured_days)
    stages = model.stages

    recent = np.asarray(score_ids(engine, drift_from, now), dtype=np.int64)
    features, scores, sampled, no_input = _drift(engine, model, recent, settings)
    volumes = _volumes(model, count_by(engine, "category", drift_from, now))
    matured = read_window(engine, stages, matured_from, matured_until)
    rules = LabelRules.for_spec(model.builder.spec, horizon, rejections)
    table = OutcomeTable.build(read_outcomes(engine, now), rules)
    rows = label_scores(matured.lead_id, matured.scored_ns, table, rules, _ns(now))
    kept = matured.take(rows.keep)
    live = _live(model, kept, rows.labels, settings)
    report = MonitorReport(
        model_name=model_name,
        model_version=model.version,
        generated_at=now.isoformat(timespec="seconds"),
        state="unknown",
        reasons=[],
        drift_window=(drift_from.isoformat(timespec="seconds"), now.isoformat(timespec="seconds")),
        matured_window=(
            matured_from.isoformat(timespec="seconds"),
            matured_until.isoformat(timespec="seconds"),
        ),
        horizon_days=horizon,
        drift_rows=len(recent),
        drift_sampled=sampled,
        drift_without_input=no_input,
        matured_rows=len(kept),
        matured_dropped=rows.dropped,
        matured_versions=count_by(engine, "model_version", matured_from, matured_until),
        features=features,
        scores=scores,
        stages=live,
        volumes=volumes,
        thresholds=dict(model.thresholds),
    )
    report.state, report.reasons = _verdict(report)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _drift(
    engine: Engine, model: ReadinessModel, recent: np.ndarray, settings: MonitorSettings
) -> tuple[list[Drift], list[Drift], int, int]:
    """PSI of each feature and stage probability on a sample of the window's inputs."""
    reference = reference_of(model.metadata)
    if reference is None or not len(recent):
        return [], [], 0, 0
    ids = recent[sample_rows(len(recent), settings.feature_sample)]
    found = records_for(engine, ids)
    records = [found[int(i)] for i in ids if int(i) in found]
    if not records:
        return [], [], 0, len(ids)
    X = model.builder.build(records).values
    P = model.probabilities(X)
    enough = len(records) >= settings.min_drift_rows
    names = [str(n) for n in model.builder.get_feature_names_out()]
    sources = {f.name: f.source for f in model.builder.features_}
    features = [
        _one_drift(
            name, sources.get(name, name), reference.features[name], X[:, j], enough, settings
        )
        for j, name in enumerate(names)
        if name in reference.features
    ]
    scores = [
        _one_drift(s, s, reference.probabilities[s], P[:, j], enough, settings)
        for j, s in enumerate(model.stages)
        if s in reference.probabilities
    ]
    return features, scores, len(records), len(ids) - len(records)


def _one_drift(
    name: str,
    source: str,
    reference: BinnedDistribution,
    values: np.ndarray,
    enough: bool,
    settings: MonitorSettings,
) -> Drift:
    value, counts = psi_against(reference, values)
    live = counts / max(int(counts.sum()), 1)
    ref = np.asarray(reference.shares)
    order = np.argsort(-np.abs(live - ref), kind="stable")[:3]
    moved = [(reference.labels[i], float(ref[i]), float(live[i])) for i in order]
    state = above(value if enough else None, settings.psi_watch, settings.psi_act)
    return Drift(name, source, round(value, 6), state, int(values.size), moved)


def _live(
    model: ReadinessModel, kept: ScoreColumns, labels: np.ndarray, settings: MonitorSettings
) -> list[StageLive]:
    promises = promises_of(model.metadata)
    trained = model.metadata.get("metrics", {})
    out = []
    for j, stage in enumerate(model.stages):
        column = kept.stages.index(stage) if stage in kept.stages else None
        p = kept.probabilities[:, column] if column is not None else np.empty(0)
        auc = trained.get(f"test_{stage}_roc_auc")
        out.append(stage_live(stage, labels[:, j], p, promises.get(stage), auc, settings))
    return out


def _volumes(model: ReadinessModel, counts: dict[str, int]) -> list[Volume]:
    promises = promises_of(model.metadata)
    n = max(sum(counts.values()), 1)
    categories = [*reversed(model.stages), NURTURE]
    out = []
    for i, category in enumerate(categories):
        count = counts.get(category, 0)
        promised = None
        if category in promises:
            # The share meeting this stage's threshold, less the share meeting a higher one.
            higher = categories[i - 1] if i > 0 else None
            promised = promises[category].volume_share - (
                promises[higher].volume_share if higher in promises else 0.0
            )
        out.append(Volume(category, count, count / n, promised))
    return out


def _verdict(report: MonitorReport) -> tuple[State, list[str]]:
    """The report's state and, in words, every number that is not ok."""
    reasons: list[str] = []
    for d in report.scores:
        if d.state in ("watch", "act"):
            reasons.append(f"{d.state}: {d.name} score distribution shifted (PSI {d.psi:.3f})")
    for d in sorted(report.features, key=lambda d: -(d.psi or 0.0)):
        if d.state in ("watch", "act"):
            reasons.append(f"{d.state}: feature {d.name} shifted (PSI {d.psi:.3f})")
    for s in report.stages:
        if s.ece_state in ("watch", "act"):
            reasons.append(
                f"{s.ece_state}: {s.stage} calibration off (ECE {s.ece:.3f}; predicted "
                f"{s.mean_predicted:.3f}, observed {s.observed_rate:.3f})"
            )
        if s.auc_state in ("watch", "act"):
            reasons.append(
                f"{s.auc_state}: {s.stage} ranking weaker (ROC-AUC {s.roc_auc:.3f}, "
                f"trained {s.roc_auc_trained:.3f})"
            )
        if s.precision_state in ("watch", "act"):
            reasons.append(f"{s.precision_state}: {s.sentence()}")
    states = [d.state for d in report.features + report.scores]
    states += [s.state for s in report.stages]
    return worst(states), reasons


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000) * 1000
