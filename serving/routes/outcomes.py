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
from scorelog.store import OutcomeConflictError, OutcomeRow, ScoreLog
from serving import outcome_events
from serving.deps import scorelog
from serving.json_body import api_router
from serving.openapi import problems
from serving.problems import ProblemError
from serving.schemas import OutcomeOut, idempotency_key, outcome_model, spec_stages
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
                s409="The idempotency key was used for a different outcome",
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
        )
        try:
            new = await run_in_threadpool(outcome_events.record, log, row)
        except OutcomeConflictError:
            raise ProblemError(
                409,
                "Idempotency key reused",
                "This idempotency_key was already used for a different outcome; "
                "nothing was recorded. Send a new key for a new event.",
            ) from None
        body = {"lead_id": row.lead_id, "recorded": new, "idempotency_key": key}
        return JSONResponse(body, status_code=201 if new else 200)

    return api
