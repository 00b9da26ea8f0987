"""POST /v1/score and /v1/score/batch: the CRM's calls, and the hot path.

The hot path builds no DataFrame: the validated body becomes the lead dict the feature
builder reads, the scoring thread scores it together with whatever other requests are
waiting (``serving.batcher``; the event loop keeps serving), and the answer is
returned only after the score is committed to the scoring log.
"""

# No `from __future__ import annotations` here: the body models are built at run time
# from the spec, and FastAPI must see the real classes in the signatures, not strings.
import asyncio
import logging
import weakref
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from features.batch import AS_OF_KEY, FeatureError
from features.spec import FeatureSpec, normalise_token
from models.readiness import LeadScore, ReadinessModel
from scorelog.engine import describe_error, is_unavailable
from scorelog.inputs import pack_input, spec_version_of
from scorelog.rows import ScoreRow
from scorelog.store import ScoreLog
from serving import metrics
from serving.batcher import ScoringBatcher
from serving.deps import readiness, scorelog, scoring_batcher, served_model
from serving.json_body import api_router
from serving.model_store import ServedModel
from serving.openapi import problems
from serving.problems import INTERNAL_TYPE, FieldError, ProblemError, storage_unavailable
from serving.readiness import Readiness
from serving.response_models import BatchOut, ScoreOut
from serving.responses import FastJSONResponse
from serving.schemas import batch_model, lead_model, to_record
from serving.security import require
from serving.settings import ServingSettings

_SOURCE_FIELD = "acquisition_source"
#: The most reasons a side a request may ask for (the setting has the same bound).
MAX_REASONS = 10


def router(spec: FeatureSpec, settings: ServingSettings) -> APIRouter:
    Lead = lead_model(spec, max_actions=settings.max_actions)
    Batch = batch_model(spec, max_leads=settings.max_batch, max_actions=settings.max_actions)
    Reasons = Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_REASONS,
            description=f"Reasons per side (0: none, the fastest). Default: {settings.reasons}.",
        ),
    ]
    wait_s = settings.commit_timeout_s
    api = api_router(prefix="/v1", tags=["scoring"])

    @api.post(
        "/score",
        response_model=ScoreOut,
        dependencies=[Depends(require("crm"))],
        summary="Score one lead",
        responses=_ERRORS,
    )
    async def score(
        lead: Annotated[Lead, Body()],  # type: ignore[valid-type]
        request: Request,
        served: Annotated[ServedModel, Depends(served_model)],
        log: Annotated[ScoreLog, Depends(scorelog)],
        batcher: Annotated[ScoringBatcher, Depends(scoring_batcher)],
        state: Annotated[Readiness, Depends(readiness)],
        reasons: Reasons = None,
    ) -> FastJSONResponse:
        record = _pinned(to_record(lead))
        try:
            result = await batcher.score(served.model, record, reasons=reasons)
        except FeatureError as exc:
            raise _unscorable(exc, prefix="") from None
        request_id = request.state.request_id
        display = lead.display_values()  # type: ignore[attr-defined]
        row = _row(result, record, served, request_id, spec, display)
        (score_id,) = await _durably(log, [row], state, wait_s)
        metrics.SCORES.labels(result.category).inc()
        return FastJSONResponse(_body(result, served, request_id, score_id))

    @api.post(
        "/score/batch",
        response_model=BatchOut,
        dependencies=[Depends(require("crm"))],
        summary=f"Score up to {settings.max_batch} leads, all or nothing",
        responses=_ERRORS,
    )
    async def score_batch(
        batch: Annotated[Batch, Body()],  # type: ignore[valid-type]
        request: Request,
        served: Annotated[ServedModel, Depends(served_model)],
        log: Annotated[ScoreLog, Depends(scorelog)],
        state: Annotated[Readiness, Depends(readiness)],
        reasons: Reasons = None,
    ) -> FastJSONResponse:
        records = [_pinned(to_record(lead)) for lead in batch.leads]  # type: ignore[attr-defined]
        request_id = request.state.request_id
        k = settings.reasons if reasons is None else reasons
        try:
            results, rows = await run_in_threadpool(
                _score_batch,
                served,
                records,
                k,
                request_id,
                spec,
                [lead.display_values() for lead in batch.leads],  # type: ignore[attr-defined]
            )
        except FeatureError as exc:
            raise _unscorable(exc, prefix="leads") from None
        ids = await _durably(log, rows, state, wait_s)  # one transaction: all or nothing
        for r in results:
            metrics.SCORES.labels(r.category).inc()
        return FastJSONResponse(
            {
                "results": [
                    _body(r, served, request_id, i) for r, i in zip(results, ids, strict=True)
                ],
                "model": {"name": served.name, "version": served.version},
                "request_id": request_id,
            }
        )

    return api


def _pinned(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its cut-off made explicit: "now" becomes this request's time.

    The builder would take "now" itself, a moment later and nowhere recorded; pinned
    here, the stored input holds the very time that was scored, so a replay is exact.
    """
    if record.get(AS_OF_KEY) is None:
        record[AS_OF_KEY] = datetime.now(UTC)
    return record


def _score_batch(
    served: ServedModel,
    records: list[dict[str, Any]],
    reasons: int,
    request_id: str,
    spec: FeatureSpec,
    displays: list[dict[str, str]],
) -> tuple[list[LeadScore], list[ScoreRow]]:
    """Score and pack a batch off the event loop (packing 1,000 inputs takes milliseconds)."""
    results = served.model.score_many(records, reasons=reasons)
    rows = [
        _row(r, rec, served, request_id, spec, shown)
        for r, rec, shown in zip(results, records, displays, strict=True)
    ]
    return results, rows


async def _durably(
    log: ScoreLog, rows: list[ScoreRow], state: Readiness, wait_s: float
) -> list[int]:
    """Commit the scores or answer 503: nothing is acknowledged that is not stored.

    An outage also makes the worker not ready at once (the storage watcher makes it
    ready again); the error is logged without its text, which may quote other leads.
    A commit that has not returned after ``wait_s`` (a database that stopped answering
    without closing the connection) is a 503 too: the rows may still be stored later,
    but they were never acknowledged.
    """
    try:
        ids = await asyncio.wait_for(log.record_scores(rows), timeout=wait_s)
    except TimeoutError:
        state.storage_failed()
        logging.getLogger(__name__).warning("the scoring log did not commit within %g s", wait_s)
        raise storage_unavailable(
            "The score could not be stored in time, so it is not returned; retry shortly."
        ) from None
    except (SQLAlchemyError, RuntimeError, OSError, ValueError) as exc:
        logger = logging.getLogger(__name__)
        if is_unavailable(exc):
            state.storage_failed()
        if is_unavailable(exc) or isinstance(exc, RuntimeError):  # down, or shutting down
            logger.warning("the scoring log could not commit: %s", describe_error(exc))
            raise storage_unavailable(
                "The score could not be stored, so it is not returned; retry shortly."
            ) from None
        # This request's own rows were refused (its neighbours were committed): a retry
        # would fail the same way, so no 503 that invites one.
        logger.error("the scoring log refused a request's rows: %s", describe_error(exc))
        raise ProblemError(
            500,
            "Internal Server Error",
            "The score could not be stored and is not returned; quote the request id.",
            type=INTERNAL_TYPE,
        ) from None
    state.storage_ok()
    return ids


def _row(
    result: LeadScore,
    record: dict[str, Any],
    served: ServedModel,
    request_id: str,
    spec: FeatureSpec,
    display: dict[str, str] | None = None,
) -> ScoreRow:
    """The log row of one answer, with the input it was computed from (packed)."""
    source = record.get(_SOURCE_FIELD)
    return ScoreRow(
        request_id=request_id,
        lead_id=str(result.lead_id),
        scored_at=datetime.now(UTC),
        model_name=served.name,
        model_version=served.version,
        probabilities=result.probabilities,
        score=result.score,
        grade=result.grade,
        category=result.category,
        reasons={k: [r.to_dict() for r in v] for k, v in result.reasons.items()},
        warnings=result.warnings,
        acquisition_source=None if source is None else normalise_token(str(source))[:64],
        spec_version=spec_version_of(spec),
        policy_version=_policy_version(served.model),
        input=pack_input(record, spec),
        display=display or None,
    )


_POLICIES: weakref.WeakKeyDictionary[ReadinessModel, str] = weakref.WeakKeyDictionary()


def _policy_version(model: ReadinessModel) -> str:
    """The model's policy hash, computed once per loaded model rather than per request."""
    version = _POLICIES.get(model)
    if version is None:
        version = _POLICIES[model] = model.policy_version
    return version


def _body(result: LeadScore, served: ServedModel, request_id: str, score_id: int) -> dict[str, Any]:
    body = result.to_dict()
    body["score_id"] = score_id
    body["reasons"].setdefault("positive", [])
    body["reasons"].setdefault("negative", [])
    body["model"] = {"name": served.name, "version": served.version}
    body["request_id"] = request_id
    return body


def _unscorable(exc: FeatureError, *, prefix: str) -> ProblemError:
    """A value the schema let through but the model cannot use: 422 naming the field."""
    if prefix:
        field = f"{prefix}[{exc.rows[0]}].{exc.field}" if exc.rows else f"{prefix}.{exc.field}"
    else:
        field = exc.field
    return ProblemError(
        422,
        "Unprocessable lead",
        "A field cannot be scored.",
        errors=[FieldError(field=field, problem=exc.problem)],
    )


_ERRORS = problems(400, 413, 415, 422)
