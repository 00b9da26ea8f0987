"""The app factory: settings in, a configured FastAPI app out.

Nothing happens at import time. ``create_app`` builds the request models from the
feature spec, wires errors, limits, auth and routes; the lifespan (which runs in each
worker after it forked, as LightGBM requires) opens the scoring log and loads the
model, then keeps looking for models published by a reload in another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.spec import load_spec
from scorelog.engine import make_engine, migrate
from scorelog.store import ScoreLog
from serving import board, metrics
from serving.batcher import ScoringBatcher
from serving.limits import BodyLimits
from serving.model_store import ModelStore
from serving.problems import install_problem_handlers
from serving.routes import admin, health, leads, outcomes, scoring
from serving.security import KeyRing
from serving.settings import ServingSettings

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

DESCRIPTION = """
Scores CRM leads for purchase readiness: calibrated probabilities of becoming a
marketing-qualified (MQL) and sales-qualified lead (SQL), a 0-100 score, an A-D grade,
a category (`sql`, `mql`, `nurture`) and the reasons in words.

Authenticate with the `X-API-Key` header: **crm** keys score leads and record
outcomes, **sales** keys read the ranked leads, **admin** keys reload the model.
Errors are RFC 9457 `application/problem+json` documents naming the field at fault.
"""


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    spec = load_spec(settings.spec)
    docs = settings.docs_enabled
    app = FastAPI(
        title="leadscore",
        version="1",
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.state.spec = spec
    app.state.keyring = KeyRing(settings)
    install_problem_handlers(app)
    app.include_router(scoring.router(spec, settings))
    app.include_router(outcomes.router(spec))
    app.include_router(leads.router(settings))
    app.include_router(admin.router())
    app.include_router(health.router())
    app.include_router(board.router(settings))
    app.add_middleware(BodyLimits, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ServingSettings = app.state.settings
    engine = make_engine(
        settings.database_url_resolved(), sqlite_synchronous=settings.sqlite_synchronous
    )
    await run_in_threadpool(migrate, engine)
    scorelog = ScoreLog(engine)
    scorelog.start()
    store = ModelStore(settings)
    await run_in_threadpool(store.load_initial)
    if store.current is not None:
        metrics.set_model(store.current.name, store.current.version)
    batcher = ScoringBatcher(reasons=settings.reasons)
    batcher.start()
    app.state.scorelog = scorelog
    app.state.store = store
    app.state.batcher = batcher
    poller = asyncio.create_task(_poll_models(store, settings.model_poll_s))
    try:
        yield
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await run_in_threadpool(batcher.close)
        await run_in_threadpool(scorelog.close)
        engine.dispose()


async def _poll_models(store: ModelStore, every: float) -> None:
    """Adopt a model that a reload in another worker published to the shared cache."""
    while True:
        await asyncio.sleep(every)
        before = store.current
        try:
            if await run_in_threadpool(store.poll) and store.current is not None:
                previous = (before.name, before.version) if before else None
                metrics.set_model(store.current.name, store.current.version, previous)
        except Exception:  # a bad cache must not kill the poller; the old model serves on
            log.exception("looking for a newly published model failed")


class RequestContext:
    """Request id, access metrics and the X-Request-ID header, as a pure ASGI layer.

    Pure ASGI (not BaseHTTPMiddleware) keeps the hot path free of extra tasks and body
    buffering. The id is the caller's ``X-Request-ID`` when it is a safe token, so a
    CRM can correlate its logs with ours, else a fresh UUID.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _route_of(scope)
            metrics.REQUESTS.labels(route, str(status["code"])).inc()
            metrics.LATENCY.labels(route).observe(time.perf_counter() - started)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
    return uuid.uuid4().hex


def _route_of(scope: Scope) -> str:
    """The route template (bounded label values), never the raw path."""
    route: Any = scope.get("route")
    return str(getattr(route, "path", "unmatched"))
