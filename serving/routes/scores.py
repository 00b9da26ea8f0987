"""GET /v1/scores/{score_id}: the audit trail of one score, and its replay.

Sales managers and admins (regulators, through them) ask "why did this lead get an A on
that day": the answer comes with the input it was computed from, the model version and
the policy that turned probabilities into a grade. ``?replay=true`` rescores the stored
input with that model version (fetched from the registry and checked like any model it
serves) and says whether the answer is identical.

Every way a replay cannot happen is a problem document naming why: no such score (404),
its input pruned by retention (410), never stored or unreadable (409), its model version
no longer loadable (409) or the registry unreachable right now (503 + Retry-After).
"""

# No `from __future__ import annotations`: FastAPI must see the real annotations.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from features.batch import FeatureError
from models.registry_fetch import ModelFetchError, ModelNotFoundError
from scorelog.history import ScoreDetail, get_score_detail
from scorelog.store import ScoreLog
from serving import replay as replays
from serving.deps import scorelog, store
from serving.json_body import api_router
from serving.model_store import ModelLoadError, ModelStore, ServedModel
from serving.openapi import problems
from serving.problems import RETRY_AFTER_S, ProblemError
from serving.response_models import LoggedScoreOut
from serving.security import require_any
from serving.settings import ServingSettings

_MAX_ID = 2**63 - 1
NOT_FOUND_TYPE = "/problems/score-not-found"
PRUNED_TYPE = "/problems/input-pruned"
NOT_REPLAYABLE_TYPE = "/problems/not-replayable"


def router(settings: ServingSettings) -> APIRouter:
    api = api_router(prefix="/v1", tags=["audit"])

    @api.get(
        "/scores/{score_id}",
        response_model=LoggedScoreOut,
        dependencies=[Depends(require_any("sales", "admin"))],
        summary="One logged score with its input; replay it with the model that made it",
        responses=problems(
            404,
            409,
            410,
            422,
            503,
            s404="No score with this id",
            s409="The score cannot be replayed (input never stored or unreadable, or its "
            "model version can no longer be loaded)",
            s410="The score's input was pruned by retention; the score itself is kept",
            s503="The registry or the scoring log cannot be reached right now",
        ),
    )
    async def logged_score(
        score_id: Annotated[int, Path(ge=1, le=_MAX_ID, description="From a score response.")],
        log: Annotated[ScoreLog, Depends(scorelog)],
        models: Annotated[ModelStore, Depends(store)],
        replay: Annotated[
            bool, Query(description="Rescore the stored input with the same model version.")
        ] = False,
    ) -> JSONResponse:
        detail = await run_in_threadpool(get_score_detail, log.engine, score_id)
        if detail is None:
            raise ProblemError(
                404, "Score not found", "No score with this id.", type=NOT_FOUND_TYPE
            )
        body = _document(detail)
        if replay:
            body["replay"] = await _replay(detail, body["answer"], models, settings.reasons)
        return JSONResponse(body)

    return api


def _document(detail: ScoreDetail) -> dict[str, Any]:
    logged = detail.score
    return {
        "score_id": logged.score_id,
        "lead_id": logged.lead_id,
        "scored_at": logged.scored_at.isoformat(),
        "request_id": detail.request_id,
        "model": {"name": logged.model_name, "version": logged.model_version},
        "spec_version": logged.spec_version,
        "policy_version": logged.policy_version,
        "answer": replays.stored_answer(detail),
        "input": None if logged.record is None else replays.input_document(logged.record),
        "input_state": detail.input_state,
    }


async def _replay(
    detail: ScoreDetail, stored: dict[str, Any], models: ModelStore, reasons: int
) -> dict[str, Any]:
    record = _replayable_input(detail)
    served = await _model_of(detail, models)
    try:
        answer = await run_in_threadpool(replays.rescore, served.model, record, reasons)
    except FeatureError:
        raise _not_replayable(
            "The stored input cannot be scored by its model version any more."
        ) from None
    differences = replays.compare(stored, answer)
    return {
        "answer": answer,
        "model": {"name": served.name, "version": served.version},
        "policy_version": served.model.policy_version,
        "identical": not differences,
        "differences": differences,
    }


def _replayable_input(detail: ScoreDetail) -> dict[str, Any]:
    record = detail.score.record
    if record is not None:
        return record
    if detail.input_state == "pruned":
        raise ProblemError(
            410,
            "Input pruned",
            "This score's input was pruned by retention (LEADSCORE_INPUT_RETENTION_DAYS), so "
            "it cannot be replayed; the score itself is kept.",
            type=PRUNED_TYPE,
        )
    if detail.input_state == "damaged":
        raise _not_replayable("This score's stored input cannot be read; the service log says why.")
    raise _not_replayable(
        "This score was logged without its input (before inputs were kept, or by batch "
        "scoring), so it cannot be replayed."
    )


async def _model_of(detail: ScoreDetail, models: ModelStore) -> ServedModel:
    """The model version that produced the score, loaded and checked (or a problem)."""
    name, version = detail.score.model_name, detail.score.model_version
    current = models.current
    if current is not None and (current.name, current.version) == (name, version):
        return current
    if current is not None and current.name != name:
        raise _not_replayable(
            f"This score was made by model '{name}'; this service serves '{current.name}'."
        )
    try:
        return await run_in_threadpool(models.model_version, version)
    except ModelLoadError as exc:
        if _registry_down(exc):
            raise ProblemError(
                503,
                "Model version unavailable",
                f"Model version {version} could not be fetched from the registry right now; "
                "retry shortly.",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        raise _not_replayable(
            f"Model version {version} can no longer be loaded (it is not in the registry this "
            "service uses, or it fails its checks), so this score cannot be replayed."
        ) from None


def _registry_down(error: ModelLoadError) -> bool:
    """A fetch that failed for a reason that may pass (not: no such version, a local model)."""
    cause = error.__cause__
    return (
        error.kind == "fetch"
        and isinstance(cause, ModelFetchError)
        and not isinstance(cause, ModelNotFoundError)
    )


def _not_replayable(detail: str) -> ProblemError:
    return ProblemError(409, "Not replayable", detail, type=NOT_REPLAYABLE_TYPE)
