"""GET /v1/model and POST /admin/reload: what is served, and replacing it without downtime."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from serving import metrics
from serving.deps import served_model, store
from serving.json_body import api_router
from serving.model_store import ModelLoadError, ModelStore, ReloadBusyError, ServedModel
from serving.openapi import problems
from serving.problems import ProblemError
from serving.response_models import ModelInfo
from serving.security import require


def router() -> APIRouter:
    api = api_router()

    @api.get(
        "/v1/model",
        response_model=ModelInfo,
        tags=["model"],
        dependencies=[Depends(require("any"))],
        summary="The served model: version, stages, thresholds, grade bands, metrics",
    )
    async def model_info(
        served: Annotated[ServedModel, Depends(served_model)],
        models: Annotated[ModelStore, Depends(store)],
    ) -> JSONResponse:
        return JSONResponse(describe(served, models))

    @api.post(
        "/admin/reload",
        tags=["admin"],
        dependencies=[Depends(require("admin"))],
        summary="Load the current champion, check it in a separate process, then swap",
        responses=problems(
            409,
            502,
            s409="A reload is already running",
            s502="The new model could not be fetched or failed its checks; the old one serves on",
        ),
    )
    async def reload(models: Annotated[ModelStore, Depends(store)]) -> JSONResponse:
        try:
            before, served = await run_in_threadpool(models.reload)
        except ReloadBusyError as exc:
            metrics.RELOADS.labels("busy").inc()
            raise ProblemError(409, "Reload in progress", str(exc)) from None
        except ModelLoadError as exc:
            metrics.RELOADS.labels("failed").inc()
            current = models.current.version if models.current else "none"
            raise ProblemError(
                502, "Reload failed", f"{exc}. Still serving version {current}."
            ) from None
        metrics.RELOADS.labels("ok").inc()
        previous = (served.name, before) if before and before != served.version else None
        metrics.set_model(served.name, served.version, previous)
        return JSONResponse({"previous_version": before, **describe(served, models)})

    return api


def describe(served: ServedModel, models: ModelStore) -> dict[str, Any]:
    model = served.model
    spec = model.builder.spec
    fallback = None
    if models.fallback is not None and served is models.current:
        fallback = {"message": models.fallback, "reason": models.fallback_reason}
    return {
        "name": served.name,
        "version": served.version,
        "source": served.source,
        "loaded_at": served.loaded_at,
        "fallback": fallback,
        "stages": model.stages,
        "thresholds": model.thresholds,
        "grade_bands": model.grade_bands,
        "metrics": model.metadata.get("metrics", {}),
        "training_window": model.metadata.get("training_window"),
        "spec": {"name": spec.name, "version": spec.version},
    }
