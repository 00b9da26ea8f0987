"""Monitoring thresholds: when a number turns a state from ok to watch to act.

Settings, not constants in code, because what counts as "too much drift" is a business
choice; ``LEADSCORE_MONITOR_<NAME>`` overrides each one (read when a report is made, never
at import).
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitorSettings(BaseSettings):
    """Windows, sample sizes and ok / watch / act thresholds.

    Why these defaults:

    * **PSI 0.10 / 0.25**: the population stability index's long-standing convention (credit
      scoring, Siddiqi 2006): below 0.1 no meaningful change, 0.1-0.25 a moderate shift
      worth watching, above 0.25 a shift large enough that the model's inputs no longer
      look like its training data. With 10 bins and a few thousand leads per side, pure
      sampling noise gives a PSI near 0.01, far below 0.1.
    * **ECE 0.03 / 0.06**: the expected calibration error reads as "the stated probability
      is off by this many points on average". Sales read "30 %" literally: 3 points is
      within what nobody can act on (and about the noise of ECE on a few thousand matured
      leads); 6 points means leads are visibly mis-stated and the model should be retrained.
    * **ROC-AUC drop 0.03 / 0.06** below the model's own held-out test figure: the ranking
      sales work from has lost a noticeable / a large part of its edge.
    * **Precision at a threshold** below 80 % / 60 % of what the threshold promised on
      validation data ("precision 0.50 at the SQL threshold: live 0.31" is 62 %: watch).
    * **Minimum rows**: below them a number is shown but its state is ``unknown``, since a
      hundred leads cannot tell drift from chance.
    """

    model_config = SettingsConfigDict(env_prefix="LEADSCORE_MONITOR_", extra="ignore")

    window_days: float = Field(7.0, gt=0, description="Recent scores compared for drift.")
    matured_days: float = Field(
        30.0, gt=0, description="Width of the window of scores whose outcome horizon passed."
    )
    horizon_days: float | None = Field(
        None, gt=0, description="Label horizon; default: the model's own (from training)."
    )
    feature_sample: int = Field(
        20_000,
        ge=100,
        description="Inputs rebuilt into features for drift, sampled uniformly from the window "
        "(20,000 keep PSI's sampling noise near 0.0005 with 10 bins, and a report on a "
        "million scores within seconds).",
    )
    bins: int = Field(10, ge=2, le=50, description="Reliability-curve bins (quantiles).")
    psi_watch: float = Field(0.10, gt=0)
    psi_act: float = Field(0.25, gt=0)
    ece_watch: float = Field(0.03, gt=0)
    ece_act: float = Field(0.06, gt=0)
    auc_drop_watch: float = Field(0.03, gt=0)
    auc_drop_act: float = Field(0.06, gt=0)
    precision_ratio_watch: float = Field(0.8, gt=0, le=1)
    precision_ratio_act: float = Field(0.6, gt=0, le=1)
    min_drift_rows: int = Field(200, ge=1)
    min_matured_rows: int = Field(300, ge=1)
    min_positives: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> MonitorSettings:
        pairs = [
            ("psi_watch", "psi_act", self.psi_watch <= self.psi_act),
            ("ece_watch", "ece_act", self.ece_watch <= self.ece_act),
            ("auc_drop_watch", "auc_drop_act", self.auc_drop_watch <= self.auc_drop_act),
            (
                "precision_ratio_act",
                "precision_ratio_watch",
                self.precision_ratio_act <= self.precision_ratio_watch,
            ),
        ]
        for low, high, ok in pairs:
            if not ok:
                raise ValueError(f"{low} must not exceed {high}")
        return self
