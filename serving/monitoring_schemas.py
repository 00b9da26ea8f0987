"""The JSON shape of ``GET /v1/monitoring`` (``monitoring.report.MonitorReport.to_dict``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

State = Literal["ok", "watch", "act", "unknown"]


class DriftOut(BaseModel):
    name: str
    source: str = Field(description="The business field or action type behind the feature.")
    psi: float | None = Field(description="Population stability index against training.")
    state: State
    rows: int
    moved: list[tuple[str, float, float]] = Field(
        description="The bins that moved most: (bin, training share, live share)."
    )


class ReliabilityBinOut(BaseModel):
    mean_predicted: float
    observed_rate: float
    count: int


class StageLiveOut(BaseModel):
    stage: str
    state: State
    rows: int = Field(description="Matured scores (outcome horizon passed) with a label.")
    positives: int
    mean_predicted: float | None
    observed_rate: float | None
    ece: float | None = Field(description="Expected calibration error (quantile bins).")
    ece_state: State
    roc_auc: float | None
    roc_auc_trained: float | None = Field(description="The model's held-out test figure.")
    auc_state: State
    threshold: float | None
    promised_precision: float | None = Field(
        description="Precision at the threshold on validation data, when it was chosen."
    )
    live_precision: float | None
    flagged: int
    precision_state: State
    reliability: list[ReliabilityBinOut]


class VolumeOut(BaseModel):
    category: str
    count: int
    share: float
    promised_share: float | None


class MonitoringOut(BaseModel):
    """Has the traffic shifted, is the served model still calibrated (ok / watch / act)."""

    model_name: str
    model_version: str
    generated_at: str
    state: State
    reasons: list[str] = Field(description="Every number not ok, in words.")
    drift_window: tuple[str, str]
    matured_window: tuple[str, str]
    horizon_days: float
    drift_rows: int
    drift_sampled: int
    drift_without_input: int
    matured_rows: int
    matured_dropped: dict[str, int]
    matured_versions: dict[str, int]
    features: list[DriftOut]
    scores: list[DriftOut]
    stages: list[StageLiveOut]
    volumes: list[VolumeOut]
    seconds: float
    thresholds: dict[str, float]
