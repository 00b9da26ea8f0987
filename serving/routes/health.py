"""Liveness, readiness and Prometheus metrics.

``/livez`` and ``/readyz`` are for probes and need no key; ``/metrics`` needs a metrics
or admin key unless ``LEADSCORE_METRICS=public`` (or is served on its own port with
``LEADSCORE_METRICS_PORT``, or not at all with ``off``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from serving import metrics
from serving.deps import readiness, store
from serving.json_body import api_router
from serving.model_store import ModelStore
from serving.openapi import problems
from serving.problems import ProblemError
from serving.readiness import Readiness
from serving.security import require_scraper
from serving.settings import ServingSettings


def router(settings: ServingSettings) -> APIRouter:
    api = api_router(tags=["operations"])

    @api.get("/livez", summary="The process is up")
    async def livez() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @api.get(
        "/readyz",
        summary="A request sent now would be scored and stored",
        responses=problems(503),
    )
    async def readyz(
        models: Annotated[ModelStore, Depends(store)],
        state: Annotated[Readiness, Depends(readiness)],
    ) -> JSONResponse:
        reasons = state.problems()
        served = models.current
        if served is None:
            reasons.append(models.public_problem)
        if reasons or served is None:
            raise ProblemError(503, "Not ready", " ".join(reasons), headers={"Retry-After": "1"})
        body: dict[str, Any] = {
            "status": "ready",
            "model": {"name": served.name, "version": served.version, "source": served.source},
        }
        if models.fallback is not None:
            body["warnings"] = [models.fallback]
        return JSONResponse(body)

    if settings.metrics == "off" or settings.metrics_port is not None:
        return api
    guard = [] if settings.metrics == "public" else [Depends(require_scraper())]

    @api.get("/metrics", summary="Prometheus metrics", include_in_schema=False, dependencies=guard)
    async def prometheus(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return api
