"""Training configuration: every choice that shapes a model, written down and logged.

A run's config is logged to MLflow in full, so any model can be rebuilt from its run.
Defaults live here, per-data-set choices in a YAML file; nothing is read from the
environment at import time.

A config file is self-contained: ``spec``, ``leads``, ``actions``, ``history`` and
``truth`` are relative to the config file's own folder (absolute paths work too), so
``leadscore train --config projects/acme/config.yaml`` works from any directory. The
bundled configs (``sample``, ``x_education``, named without a path) read their data
relative to the current folder, the project root. The registered model's name and the
MLflow experiment are in the config too (``LEADSCORE_MODEL_NAME`` and
``LEADSCORE_EXPERIMENT`` override them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.spec import FeatureSpec, load_spec
from monitoring.rejections import RejectionUse, default_rejections
from training.thresholds import ThresholdPolicy, parse_policy

CONFIGS_DIR = Path(__file__).with_name("configs")
DEFAULT_MODEL_NAME = "lead-readiness"
_PATH_KEYS = ("leads", "actions", "history", "truth", "rows")
#: The held-out metric promotion compares when the config names none: PR-AUC of the last
#: scored stage (``test_sql_pr_auc`` for the lifecycle model, ``test_converted_pr_auc`` for a
#: binary one): the stage sales acts on, measured where positives are rare.
PROMOTION_METRIC = "pr_auc"


class ConfigError(ValueError):
    """A training config is unreadable or does not fit its spec; the message says where."""


class LightGBMParams(BaseModel):
    """Booster settings; early stopping on validation log loss picks the tree count.

    The defaults are meant for tables of 5k-100k leads of mixed kinds: small trees, a
    moderate learning rate, strong L2, extremely randomised splits and categorical splits
    that may group many levels. Measured by 5-fold CV against the earlier defaults
    (0.05 / 31 leaves / 50 per leaf / no extra trees): X Education as `leadscore init`
    drafts it 0.8762 -> 0.8796 ROC-AUC; generated 3,000-row table 0.6965 -> 0.7061;
    generated 40,000-row table 0.7194 -> 0.7221. `leadscore tune` searches further.
    """

    model_config = ConfigDict(extra="forbid")
    learning_rate: float = Field(0.04, gt=0, le=1)
    num_leaves: int = Field(15, ge=2)
    min_data_in_leaf: int = Field(10, ge=1)
    feature_fraction: float = Field(0.7, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(5.0, ge=0)
    cat_smooth: float = Field(10.0, ge=0)
    max_cat_to_onehot: int = Field(64, ge=1)
    min_data_per_group: int = Field(100, ge=1)
    extra_trees: bool = True
    path_smooth: float = Field(0.0, ge=0)
    max_rounds: int = Field(4000, ge=1)
    early_stopping_rounds: int = Field(100, ge=1)
    use_monotone_constraints: bool = True
    threads: int = Field(
        1,
        ge=0,
        description="LightGBM threads; 0 = every core. One is the default: on tables up to "
        "~100k rows a second thread saves little, and when another job holds the other core "
        "LightGBM's spinning threads made a 40,000-row fit 20x slower (measured).",
    )


class HeadParams(BaseModel):
    """What sits on the features: LightGBM, a logistic regression, or a blend of both.

    ``blend_weight`` is the logistic share of the log-odds (0 = LightGBM alone, 1 = the
    logistic model alone); the blend is calibrated as one. ``logistic_c`` is the inverse
    L2 strength of the logistic part.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["lightgbm", "logistic", "blend"] = "lightgbm"
    blend_weight: float = Field(0.3, ge=0, le=1)
    logistic_c: float = Field(0.5, gt=0)

    @property
    def linear_weight(self) -> float:
        return {"lightgbm": 0.0, "logistic": 1.0, "blend": self.blend_weight}[self.kind]


class PromotionParams(BaseModel):
    """The promotion gate: which held-out metric, and how much worse is still "not worse"."""

    model_config = ConfigDict(extra="forbid")
    metric: str | None = Field(
        None, description="Run metric, e.g. test_sql_pr_auc; default: PR-AUC of the last stage."
    )
    tolerance: float = Field(0.005, ge=0)
    higher_is_better: bool = True


#: The service's default scoring log (``ServingSettings.database_url``), relative to the
#: project folder: ``leadscore monitor`` and ``retrain`` in the project read what
#: ``make run`` writes.
DEFAULT_LOG_URL = "sqlite:///artifacts/leadscore.db"


class FromLogParams(BaseModel):
    """Training rows from the scoring log: what was scored, labelled by what happened after.

    A score is a row once ``horizon_days`` (default: the config's ``horizon_days``) have
    passed since it; its label is the furthest stage the lead's outcomes reached within
    them (``monitoring.labels``). ``window_days`` keeps the most recent scores only (the
    traffic of today is what the next model serves); ``with_files`` adds the config's
    historical files to the log's rows.
    """

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(
        None,
        description="Scoring log database URL (sqlite:///path or postgresql+psycopg://...); "
        "a relative SQLite path is relative to this config. Default: LEADSCORE_DATABASE_URL, "
        "else the service's default log (artifacts/leadscore.db in the current folder).",
    )
    window_days: float | None = Field(
        None, gt=0, description="Only scores from this many days before now (default: all)."
    )
    horizon_days: float | None = Field(None, gt=0, description="Label horizon (days).")
    rejections: dict[str, RejectionUse] = Field(
        default_factory=default_rejections,
        description="Per rejection reason: 'label' (a negative row) or 'exclude' (no rows "
        "for the lead: a duplicate or spam lead is not a lead that failed to convert).",
    )
    with_files: bool = Field(False, description="Also train on the config's leads files.")


class TrainConfig(BaseModel):
    """What to train on and how; one instance per run, logged whole."""

    model_config = ConfigDict(extra="forbid")
    spec: str = Field(
        "sample_crm", description="Spec file (relative to this config) or a bundled spec's name."
    )
    model_name: str = Field(DEFAULT_MODEL_NAME, min_length=1, pattern=r"^[^'/@:]+$")
    experiment: str = Field(DEFAULT_MODEL_NAME, min_length=1)
    leads: Path = Path("data/sample/leads.csv")
    actions: Path | None = Path("data/sample/actions.csv")
    history: Path | None = Path("data/sample/stage_history.csv")
    truth: Path | None = Path("data/sample/truth.csv")
    # Training rows already built from these files on Spark (`leadscore rows`, a Parquet
    # folder); when set, training reads them instead of aggregating the events itself.
    rows: Path | None = None
    seed: int = 42
    # Point-in-time snapshots (event data with a lifecycle label).
    snapshot_days_after_created: list[int] = Field(default=[30], min_length=1)
    horizon_days: int = Field(90, ge=1)
    # Splits: time-ordered when the spec has created_at, stratified otherwise.
    test_share: float = Field(0.2, gt=0, lt=0.5)
    validation_share: float = Field(0.15, gt=0, lt=0.5)
    calibration: Literal["sigmoid", "isotonic"] = "sigmoid"
    thresholds: dict[str, str] = Field(
        default_factory=lambda: {"*": "precision:0.5"},
        description="Stage → policy ('precision:0.6', 'top:5%', 'weekly:200'); '*' = default.",
    )
    lightgbm: LightGBMParams = Field(default_factory=lambda: LightGBMParams.model_validate({}))
    head: HeadParams = Field(default_factory=lambda: HeadParams.model_validate({}))
    promotion: PromotionParams = Field(default_factory=lambda: PromotionParams.model_validate({}))
    baseline: bool = True
    plots: bool = True
    shap_sample: int = Field(2000, ge=100)
    from_log: FromLogParams | None = Field(
        None, description="Train on the scoring log (leadscore train --from-log)."
    )

    @model_validator(mode="after")
    def _policies_parse(self) -> TrainConfig:
        for stage, text in self.thresholds.items():
            try:
                parse_policy(text)
            except ValueError as exc:
                raise ValueError(f"thresholds.{stage}: {exc}") from exc
        return self

    def policy_for(self, stage: str) -> ThresholdPolicy:
        text = self.thresholds.get(stage, self.thresholds.get("*"))
        if text is None:
            raise ValueError(f"no threshold policy for stage '{stage}' and no '*' default")
        return parse_policy(text)

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig.model_validate(data)

    def label_horizon_days(self) -> float:
        """Days after a cut-off (or a logged score) within which a stage counts as reached."""
        if self.from_log is not None and self.from_log.horizon_days is not None:
            return self.from_log.horizon_days
        return float(self.horizon_days)

    def promotion_metric(self, stages: list[str]) -> str:
        """The metric the gate compares: the config's, else PR-AUC of the last stage."""
        return self.promotion.metric or f"test_{stages[-1]}_{PROMOTION_METRIC}"

    def load_spec(self) -> FeatureSpec:
        return load_spec(self.spec)


def check_fits_spec(config: TrainConfig, spec: FeatureSpec, *, where: str = "config") -> None:
    """Refuse a config that names stages the spec's model does not have.

    A threshold for ``sql`` on a binary model, or a promotion metric about a stage the model
    lacks, would otherwise fail late (after training) or silently never apply.
    """
    stages = spec.scored_stages
    listed = ", ".join(stages)
    for key in config.thresholds:
        if key != "*" and key not in stages:
            raise ConfigError(
                f"{where}: thresholds names stage '{key}', but the model's stages are {listed}"
            )
    for stage in stages:
        if stage not in config.thresholds and "*" not in config.thresholds:
            raise ConfigError(
                f"{where}: thresholds has no policy for stage '{stage}' (add it or a '*' default)"
            )
    metric = config.promotion.metric
    if metric and metric.startswith("test_"):
        named = metric.removeprefix("test_")
        if not any(named.startswith(f"{s}_") for s in stages):
            raise ConfigError(
                f"{where}: promotion.metric '{metric}' is not about a stage of the model "
                f"(its stages are {listed}; e.g. test_{stages[-1]}_{PROMOTION_METRIC})"
            )


def resolve_config_path(path: str | Path) -> Path:
    """A config file's path, or a bundled config's file for a bare name ("sample")."""
    p = Path(path)
    if not p.suffix and not p.exists():
        return CONFIGS_DIR / f"{p.name}.yaml"
    return p


def load_config(path: str | Path | None) -> TrainConfig:
    """A config file, a bundled config's name ("sample", "x_education"), or the defaults.

    Relative paths in a config file are made absolute against the file's folder (for a
    bundled config, against the current folder), so the returned config works from
    anywhere.
    """
    if path is None:
        return TrainConfig.model_validate({})
    p = resolve_config_path(path)
    bundled = p.parent.resolve() == CONFIGS_DIR.resolve()
    name = p.name if bundled else str(p)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{name}: training config not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: training config cannot be read ({exc})") from exc
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError(f"{name}: training config is not valid YAML ({problem})") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: a training config is a YAML mapping at the top level")
    base = Path.cwd() if bundled else p.resolve().parent
    try:
        config = TrainConfig.model_validate(_anchored(raw, base))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{name}: invalid training config: {problems}") from exc
    return config


def _anchored(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative data and spec paths made absolute against ``base``."""
    out = dict(raw)
    for key in _PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            out[key] = str((base / value).resolve())
    spec = out.get("spec")
    if isinstance(spec, str) and _is_spec_path(spec):
        out["spec"] = str((base / spec).resolve())
    from_log = out.get("from_log")
    if isinstance(from_log, dict) and isinstance(from_log.get("url"), str):
        out["from_log"] = {**from_log, "url": anchored_sqlite_url(from_log["url"], base)}
    return out


def scoring_log_url(config: TrainConfig | None, override: str | None = None) -> str:
    """Where the scoring log is: ``override`` (``--log-url``), the config's ``from_log.url``,
    ``LEADSCORE_DATABASE_URL``, else the service's default in the current folder."""
    import os

    url = override or (config.from_log.url if config and config.from_log else None)
    url = url or os.environ.get("LEADSCORE_DATABASE_URL") or DEFAULT_LOG_URL
    return anchored_sqlite_url(url, Path.cwd())


def anchored_sqlite_url(url: str, base: Path) -> str:
    """A relative SQLite path made absolute against ``base``; other URLs unchanged."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
        return prefix + str((base / url[len(prefix) :]).resolve())
    return url


def _is_spec_path(spec: str) -> bool:
    """A spec is a file path when it has a suffix or a folder; else a bundled spec's name."""
    return not Path(spec).is_absolute() and (Path(spec).suffix != "" or "/" in spec)


def load_pair(config_path: str | Path) -> tuple[TrainConfig, FeatureSpec]:
    """The config and the spec it names, checked against each other."""
    config = load_config(config_path)
    spec = config.load_spec()
    check_fits_spec(config, spec, where=resolve_config_path(config_path).name)
    return config, spec


def sample_config(data_dir: str | Path, **overrides: Any) -> TrainConfig:
    """The bundled sample config pointed at a folder the generator wrote.

    Tests, benchmarks and notebooks train on sample data in throw-away folders; this
    is the one place that knows the generator's file names.
    """
    folder = Path(data_dir)
    files = {
        "leads": folder / "leads.csv",
        "actions": folder / "actions.csv",
        "history": folder / "stage_history.csv",
        "truth": folder / "truth.csv",
    }
    return load_config("sample").with_overrides(**{**files, **overrides})
