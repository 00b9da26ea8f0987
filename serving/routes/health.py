"""Liveness, readiness and Prometheus metrics (unauthenticated: probes and scrapers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from serving import metrics
from serving.deps import store
from serving.model_store import ModelStore
from serving.problems import ProblemError


def router() -> APIRouter:
    api = APIRouter(tags=["operations"])

    @api.get("/livez", summary="The process is up")
    async def livez() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @api.get("/readyz", summary="A model is loaded and requests can be scored")
    async def readyz(models: Annotated[ModelStore, Depends(store)]) -> JSONResponse:
        served = models.current
        if served is None:
            raise ProblemError(503, "Not ready", models.public_problem)
        return JSONResponse(
            {"status": "ready", "model": {"name": served.name, "version": served.version}}
        )

    @api.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return api
