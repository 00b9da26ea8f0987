"""``leadscore check SPEC CONFIG``: will this train, and on what?

Everything ``train`` would refuse is refused here, in seconds and with the same one-line
messages: the spec, the config (stages, policies, paths), every data file through the
loaders, and the features built from all rows. What passes is described: which fields
become features (with how much of each is missing, and how many values a missing token
or sentinel replaced), which are excluded and why, the columns the spec does not mention,
the id, and the label's base rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from features.builder import LeadFeatureBuilder
from features.loaders import MISSING_TOKEN_COUNTS
from features.spec import (
    ROW_NUMBER_ID,
    FeatureSpec,
    KnownAt,
    TextField,
    load_spec,
)
from training.config import ConfigError, TrainConfig, check_fits_spec, load_config
from training.dataset import TrainingSet, load_training_set
from training.thresholds import describe_policy


@dataclass
class CheckReport:
    """What ``check`` found; :meth:`text` is what the command prints."""

    spec: FeatureSpec
    config: TrainConfig
    rows: int
    base_rates: dict[str, float]
    features: list[tuple[str, str, float, int]]  # name, kind/source, missing share, tokens
    excluded: list[tuple[str, str]]  # name, why
    unmentioned: list[str]
    n_features: int
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        id_text = (
            "the row number (no id column)"
            if self.spec.id_column == ROW_NUMBER_ID
            else f"column '{self.spec.id_column}'"
        )
        rates = ", ".join(f"{stage} {rate:.1%}" for stage, rate in self.base_rates.items())
        lines = [
            f"OK: spec '{self.spec.name}' v{self.spec.version} and its config fit "
            f"{Path(self.config.leads).name}: {self.rows:,} rows; id: {id_text}; "
            f"base rate: {rates}.",
            f"Features ({len(self.features)} fields -> {self.n_features} model inputs):",
        ]
        for name, kind, missing, tokens in self.features:
            extra = f", {tokens:,} values were missing tokens" if tokens else ""
            lines.append(f"  {name:<28} {kind:<12} {missing:6.1%} missing{extra}")
        if self.excluded:
            lines.append(f"Not features ({len(self.excluded)}):")
            lines += [f"  {name:<28} {why}" for name, why in self.excluded]
        if self.unmentioned:
            shown = ", ".join(f"'{c}'" for c in self.unmentioned)
            lines.append(f"Columns the spec does not mention (ignored): {shown}")
        lines += [f"Note: {n}" for n in self.notes]
        stages = self.spec.scored_stages
        lines.append(
            f"Thresholds: {', '.join(f'{s} {_policy(self.config, s)}' for s in stages)}; "
            f"promotion metric: {self.config.promotion_metric(stages)}; "
            f"registered as '{self.config.model_name}'."
        )
        return "\n".join(lines)


def check(spec_path: str | Path, config_path: str | Path) -> CheckReport:
    """Validate the spec, the config and the data together; raise on the first problem."""
    spec = load_spec(spec_path)
    config = load_config(config_path)
    named = load_spec(config.spec)
    if named != spec:
        raise ConfigError(
            f"{Path(config_path).name}: names spec '{config.spec}', which is not {spec_path}"
        )
    check_fits_spec(config, spec, where=Path(config_path).name)
    data = load_training_set(spec, config)
    builder = LeadFeatureBuilder(spec)
    matrix = builder.fit_build(data.leads, actions=data.actions)
    return _report(spec, config, data, matrix.values, builder.fit_report_, len(matrix.names))


def _report(
    spec: FeatureSpec,
    config: TrainConfig,
    data: TrainingSet,
    X: np.ndarray,
    build_report: dict[str, object],
    n_inputs: int,
) -> CheckReport:
    tokens = data.leads.attrs.get(MISSING_TOKEN_COUNTS, {})
    missing = build_report.get("missing", {}) if isinstance(build_report, dict) else {}
    rows = max(len(data), 1)
    features: list[tuple[str, str, float, int]] = []
    for feature in spec.feature_fields:
        share = float(missing.get(feature.name, 0)) / rows if isinstance(missing, dict) else 0.0
        features.append((feature.name, str(feature.kind), share, int(tokens.get(feature.name, 0))))
    if spec.actions is not None:
        features.append(("(actions)", "aggregated", 0.0, 0))
    excluded = []
    for f in spec.fields:
        if isinstance(f, TextField) and f.known_at is KnownAt.BEFORE_CONTACT:
            what = f.description or "free text or personal data, never a feature"
            excluded.append((f.name, f"text: {what}"))
        elif f.known_at is KnownAt.AFTER_CONTACT:
            excluded.append((f.name, "known only after contact: it would leak the outcome"))
        elif not f.feature:
            excluded.append((f.name, "feature: false (documented, not used)"))
    mentioned = {f.source for f in spec.fields} | {spec.id_column, "label"}
    mentioned |= {f.name for f in spec.fields}
    if spec.created_at_column:
        mentioned.add(spec.created_at_column)
    extra = {"as_of", "snapshot_days"}
    unmentioned = [str(c) for c in data.leads.columns if c not in mentioned | extra]
    notes = []
    empty = [name for name, _, share, _ in features if share >= 0.999]
    if empty:
        notes.append(f"always missing, so useless as features: {', '.join(empty)}")
    if not np.isfinite(X).any(axis=0).all():
        notes.append("some model inputs are missing on every row")
    base_rates = {s: float(data.labels[s].mean()) for s in data.labels.columns}
    for stage, rate in base_rates.items():
        if rate in (0.0, 1.0):
            raise ConfigError(f"label: every row has {stage} = {int(rate)}; nothing to learn")
    return CheckReport(
        spec, config, len(data), base_rates, features, excluded, unmentioned, n_inputs, notes
    )


def _policy(config: TrainConfig, stage: str) -> str:
    return describe_policy(config.policy_for(stage).model_dump(exclude_none=True))
