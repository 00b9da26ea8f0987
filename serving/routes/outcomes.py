"""POST /v1/outcomes: what really happened to a lead, the labels of the next training run.

Idempotent: the client's ``idempotency_key`` (or, without one, a hash of the outcome
itself) is unique in the store, so a retried call writes one row; the answer says
whether this call recorded it (201) or it was already there (200), also when the retry
only corrected the note (:mod:`serving.outcome_events`). A database that cannot be
reached answers 503 + Retry-After.
"""

# No `from __future__ import annotations` here: the body models are built at run time
# from the spec, and FastAPI must see the real classes in the signatures, not strings.
from typing import Annotated

from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from features.spec import FeatureSpec
from scorelog.rows import OutcomeConflictError, OutcomeRow
from scorelog.store import ScoreLog
from serving import outcome_events
from serving.deps import scorelog
from serving.json_body import api_router
from serving.openapi import problems
from serving.problems import FieldError, ProblemError
from serving.response_models import OutcomeOut
from serving.schemas import idempotency_key, outcome_model, spec_stages
from serving.security import require


def router(spec: FeatureSpec) -> APIRouter:
    Outcome = outcome_model(spec_stages(spec))
    api = api_router(prefix="/v1", tags=["outcomes"])

    @api.post(
        "/outcomes",
        response_model=OutcomeOut,
        status_code=201,
        dependencies=[Depends(require("crm"))],
        summary="Record a lead's real outcome (idempotent)",
        responses={
            200: {"description": "Already recorded (a retry, even with another note)"},
            **problems(
                400,
                413,
                415,
                422,
                409,
                s409="The idempotency key (given or derived) names an outcome recorded differently",
            ),
        },
    )
    async def record_outcome(
        outcome: Annotated[Outcome, Body()],  # type: ignore[valid-type]
        log: Annotated[ScoreLog, Depends(scorelog)],
    ) -> JSONResponse:
        key = idempotency_key(outcome)
        row = OutcomeRow(
            lead_id=outcome.lead_id,  # type: ignore[attr-defined]
            outcome=outcome.outcome,  # type: ignore[attr-defined]
            stage=outcome.stage,  # type: ignore[attr-defined]
            occurred_at=outcome.occurred_at,  # type: ignore[attr-defined]
            note=outcome.note,  # type: ignore[attr-defined]
            idempotency_key=key,
            reason=outcome.reason,  # type: ignore[attr-defined]
        )
        try:
            scored = await run_in_threadpool(
                outcome_events.check_timeline, log, row, spec.created_at_column
            )
        except outcome_events.BeforeLeadCreatedError:
            raise ProblemError(
                422,
                "Outcome before the lead existed",
                "The outcome is dated before the lead was created (its created_at when it "
                "was scored); nothing was recorded.",
                errors=[FieldError(field="occurred_at", problem="before the lead was created")],
            ) from None
        try:
            new = await run_in_threadpool(outcome_events.record, log, row)
        except OutcomeConflictError:
            raise _conflict(client_key=outcome.idempotency_key is not None) from None  # type: ignore[attr-defined]
        body = {
            "lead_id": row.lead_id,
            "recorded": new,
            "idempotency_key": key,
            "lead_scored": scored,
        }
        return JSONResponse(body, status_code=201 if new else 200)

    return api


def _conflict(*, client_key: bool) -> ProblemError:
    """409: the event under this key is already recorded, differently. Says what to do."""
    if client_key:
        return ProblemError(
            409,
            "Idempotency key reused",
            "This idempotency_key was already used for a different outcome; "
            "nothing was recorded. Send a new key for a new event.",
        )
    return ProblemError(
        409,
        "Conflicting outcome",
        "This outcome of this lead at this time is already recorded with another reason; "
        "nothing was recorded. An outcome's reason cannot be changed by sending it again.",
        errors=[FieldError(field="reason", problem="differs from the recorded outcome")],
    )
