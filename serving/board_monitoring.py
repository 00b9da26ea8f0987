"""The board's monitoring page for the manager: calibration curve, drift table, volumes.

Server-rendered like the rest of the board (same session cookie, same templates, no
script): the report is the service's cached one (:class:`serving.monitoring.ReportCache`,
also behind ``GET /v1/monitoring``) and the reliability curve is an inline SVG whose
coordinates are computed here, so the page needs nothing but HTML.
"""

# No `from __future__ import annotations`: FastAPI evaluates the route signatures.
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from monitoring.report import Drift, MonitorReport
from serving.board import (
    COOKIE_PATH,
    SESSION_COOKIE,
    Sessions,
    redirect,
    render_page,
    session_secret,
    stylesheet_url,
    template_environment,
)
from serving.settings import ServingSettings

#: Features listed besides those in watch/act: the ones that moved most.
TOP_FEATURES = 10
#: Chart geometry (SVG user units): a square plot inside margins for the axis labels.
_SIZE, _LEFT, _BOTTOM, _PAD = 320, 44, 36, 10
_COLOURS = ("#1b6ac9", "#c2410c", "#15803d", "#7e22ce")


@dataclass(frozen=True)
class Curve:
    stage: str
    colour: str
    points: str  # "x,y x,y ..." for <polyline>
    dots: list[tuple[float, float, int]]


@dataclass(frozen=True)
class Chart:
    curves: list[Curve]
    top: float  # the axes run from 0 to this probability
    ticks: list[tuple[float, str]]  # (position, label) along both axes
    size: int = _SIZE
    left: int = _LEFT
    bottom: int = _BOTTOM
    pad: int = _PAD


def reliability_chart(report: MonitorReport) -> Chart:
    """Predicted (x) against observed (y) per stage, on axes fitted to the data."""
    values = [
        v for s in report.stages for b in s.reliability for v in (b.mean_predicted, b.observed_rate)
    ]
    top = min(1.0, max([0.05, *values]) * 1.1)
    span = _SIZE - _LEFT - _PAD

    def x(p: float) -> float:
        return round(_LEFT + span * p / top, 1)

    def y(p: float) -> float:
        return round(_SIZE - _BOTTOM - (_SIZE - _BOTTOM - _PAD) * p / top, 1)

    curves = []
    for i, s in enumerate(report.stages):
        dots = [(x(b.mean_predicted), y(b.observed_rate), b.count) for b in s.reliability]
        points = " ".join(f"{a},{b}" for a, b, _ in dots)
        curves.append(Curve(s.stage, _COLOURS[i % len(_COLOURS)], points, dots))
    ticks = [(x(top * k / 4), f"{top * k / 4:.2f}") for k in range(5)]
    return Chart(curves, top, ticks)


def shown_features(features: list[Drift]) -> list[Drift]:
    """Features in watch or act, then the ones that moved most (a few dozen rows at most)."""
    ranked = sorted(features, key=lambda d: -(d.psi or 0.0))
    flagged = [d for d in ranked if d.state in ("watch", "act")]
    return flagged + [d for d in ranked if d not in flagged][:TOP_FEATURES]


def router(settings: ServingSettings) -> APIRouter:
    sessions = Sessions(session_secret(settings))
    env = template_environment()
    env.globals["css_url"] = stylesheet_url()
    api = APIRouter(prefix=COOKIE_PATH, include_in_schema=False)

    @api.get("/monitoring")
    async def monitoring_page(request: Request) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        if not sessions.valid(token) or token is None:
            return redirect(f"{COOKIE_PATH}/login")
        store = request.app.state.store
        served = store.current
        context: dict[str, Any] = {"title": "Monitoring", "csrf": sessions.csrf(token)}
        if served is None:
            context["report"] = None
        else:
            refresh = request.query_params.get("refresh") == "1"
            cache = request.app.state.monitoring
            report = await run_in_threadpool(cache.get, served, refresh=refresh)
            context.update(
                report=report,
                chart=reliability_chart(report),
                features=shown_features(report.features),
            )
        return await render_page(env, "monitoring.html", context)

    return api
