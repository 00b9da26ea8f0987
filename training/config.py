"""Training configuration: every choice that shapes a model, written down and logged.

A run's config is logged to MLflow in full, so any model can be rebuilt from its run.
Defaults live here, per-data-set choices in ``training/configs/*.yaml``; nothing is
read from the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training.thresholds import ThresholdPolicy, parse_policy

CONFIGS_DIR = Path(__file__).with_name("configs")


class LightGBMParams(BaseModel):
    """Booster settings; early stopping on validation log loss picks the tree count."""

    model_config = ConfigDict(extra="forbid")
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(31, ge=2)
    min_data_in_leaf: int = Field(50, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(1.0, ge=0)
    cat_smooth: float = Field(10.0, ge=0)
    max_cat_to_onehot: int = Field(4, ge=1)
    min_data_per_group: int = Field(100, ge=1)
    extra_trees: bool = False
    path_smooth: float = Field(0.0, ge=0)
    max_rounds: int = Field(2000, ge=1)
    early_stopping_rounds: int = Field(100, ge=1)
    use_monotone_constraints: bool = True


class TrainConfig(BaseModel):
    """What to train on and how; one instance per run, logged whole."""

    model_config = ConfigDict(extra="forbid")
    spec: str = "sample_crm"
    leads: Path = Path("data/sample/leads.csv")
    actions: Path | None = Path("data/sample/actions.csv")
    history: Path | None = Path("data/sample/stage_history.csv")
    truth: Path | None = Path("data/sample/truth.csv")
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
    baseline: bool = True
    plots: bool = True
    shap_sample: int = Field(2000, ge=100)

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


def load_config(path: str | Path | None) -> TrainConfig:
    """A config file, a bundled config's name ("sample", "x_education"), or the defaults."""
    if path is None:
        return TrainConfig.model_validate({})
    p = Path(path)
    if not p.suffix and not p.exists():
        p = CONFIGS_DIR / f"{p.name}.yaml"
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        return TrainConfig.model_validate(raw)
    except FileNotFoundError as exc:
        raise ValueError(f"{p}: training config not found") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"{p}: invalid training config: {exc}") from exc


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
