"""The API's response models: what the CRM, sales and admins get back.

Fixed shapes, unlike the request models in :mod:`serving.schemas`, which are built from
the feature spec; kept apart so each file holds one concept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class Reason(BaseModel):
    """Why the score is what it is, in a salesperson's words."""

    field: str = Field(description="The field or action type the reason is about.")
    effect: float = Field(description="Contribution in log-odds; positive raises the score.")
    text: str = Field(examples=["3 pricing page visits in the last 7 days"])


class Reasons(BaseModel):
    positive: list[Reason] = Field(default_factory=list)
    negative: list[Reason] = Field(default_factory=list)


class ModelRef(BaseModel):
    name: str
    version: str


class ScoreOut(BaseModel):
    """One lead's score."""

    lead_id: str | None
    probabilities: dict[str, float] = Field(
        description="Calibrated probability per scored stage, e.g. {'mql': 0.62, 'sql': 0.31}."
    )
    score: int = Field(ge=0, le=100, description="100 x the mean of the stage probabilities.")
    grade: str = Field(description="A (best) to D.")
    category: str = Field(description="Highest stage whose threshold is met, else 'nurture'.")
    reasons: Reasons
    warnings: list[str] = Field(
        default_factory=list, description="Missing, unseen or clipped inputs, by field."
    )
    model: ModelRef
    request_id: str
    score_id: int = Field(
        description="This score's id in the scoring log: GET /v1/scores/{score_id} shows "
        "it again, with the input it was computed from, and can replay it."
    )


class BatchOut(BaseModel):
    results: list[ScoreOut]
    request_id: str
    model: ModelRef


class ScoreAnswer(BaseModel):
    """The answer part of a score response, as it was sent."""

    probabilities: dict[str, float]
    score: int = Field(ge=0, le=100)
    grade: str
    category: str
    reasons: Reasons
    warnings: list[str]


class Replay(BaseModel):
    """The stored input rescored by the model version that produced the score."""

    answer: ScoreAnswer
    model: ModelRef
    policy_version: str = Field(description="The policy hash of the model version used.")
    identical: bool = Field(description="True when the replayed answer equals the stored one.")
    differences: list[str] = Field(
        description="The answer parts that differ (empty when identical)."
    )


class LoggedScoreOut(BaseModel):
    """One logged score: the answer sent, the input it was computed from, who computed it."""

    score_id: int
    lead_id: str
    scored_at: datetime
    request_id: str
    model: ModelRef
    spec_version: str | None = Field(description="'<spec name>:<version>'; null before 0002.")
    policy_version: str | None = Field(
        description="Hash of the thresholds and grade bands that were applied."
    )
    answer: ScoreAnswer
    input: dict[str, Any] | None = Field(
        description="The model input as scored (feature fields, cut-off, tracked actions); "
        "null when not stored or pruned by retention."
    )
    input_state: Literal["stored", "pruned", "not_stored", "damaged"]
    replay: Replay | None = Field(default=None, description="With ?replay=true.")


class OutcomeOut(BaseModel):
    lead_id: str
    recorded: bool = Field(description="False when this event had already been recorded.")
    idempotency_key: str
    lead_scored: bool = Field(
        description="False when this lead has no score yet: the outcome is kept (the CRM's "
        "events and scoring calls arrive in any order) and joins the lead's scores later."
    )


class RankedLeadOut(BaseModel):
    """A lead in the ranked work list: its latest score."""

    lead_id: str
    score: int = Field(ge=0, le=100)
    grade: str
    category: str
    acquisition_source: str | None
    scored_at: datetime
    model_version: str


class RankedPage(BaseModel):
    items: list[RankedLeadOut]
    next_cursor: str | None = Field(description="Pass back to get the next page; None at end.")
    total: int = Field(ge=0)


class SpecRef(BaseModel):
    name: str
    version: int


class Fallback(BaseModel):
    """Why the service serves its last known good copy instead of the configured model."""

    message: str = Field(examples=["Serving the last known good model, version 3: ..."])
    reason: str | None = Field(description="What failed, for the operator.")


class ModelInfo(BaseModel):
    """The model being served and the policy it applies."""

    name: str
    version: str
    source: str = Field(description="registry, cache (last known good copy) or local.")
    loaded_at: str
    fallback: Fallback | None = Field(
        default=None, description="Set while a last known good copy serves instead."
    )
    stages: list[str]
    thresholds: dict[str, float] = Field(description="Probability threshold per stage.")
    grade_bands: dict[str, float] = Field(description="Lowest score of grades A, B and C.")
    metrics: dict[str, float] = Field(description="Held-out test metrics from training.")
    training_window: list[str] | None = Field(
        default=None, description="First and last as-of time of the training rows."
    )
    spec: SpecRef
