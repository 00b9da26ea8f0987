"""GET /v1/monitoring: drift and live calibration of the served model (admin).

Thin: the report is built by :mod:`monitoring.report` (the same code as ``leadscore
monitor``) and cached per worker by :class:`serving.monitoring.ReportCache`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from serving.deps import served_model
from serving.json_body import api_router
from serving.model_store import ServedModel
from serving.monitoring import ReportCache
from serving.monitoring_schemas import MonitoringOut
from serving.openapi import problems
from serving.security import require


def report_cache(request: Request) -> ReportCache:
    value: ReportCache = request.app.state.monitoring
    return value


def router() -> APIRouter:
    api = api_router(prefix="/v1", tags=["monitoring"])

    @api.get(
        "/monitoring",
        response_model=MonitoringOut,
        dependencies=[Depends(require("admin"))],
        summary="Drift (PSI) and live calibration of the served model: ok, watch or act",
        responses=problems(422),
    )
    async def monitoring(
        served: Annotated[ServedModel, Depends(served_model)],
        cache: Annotated[ReportCache, Depends(report_cache)],
        refresh: Annotated[
            bool, Query(description="Recompute now instead of using a recent report.")
        ] = False,
    ) -> JSONResponse:
        report = await run_in_threadpool(cache.get, served, refresh=refresh)
        return JSONResponse(report.to_dict())

    return api
