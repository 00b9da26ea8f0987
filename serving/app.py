"""The app factory: settings in, a configured FastAPI app out.

Nothing happens at import time. ``create_app`` builds the request models from the
feature spec, wires errors, limits, auth and routes; the lifespan (which runs in each
worker after it forked, as LightGBM requires) starts the scoring log, brings its schema
up (retrying while the database is down: the worker starts not ready and becomes
ready by itself), loads the model, then keeps it current (models published by another
worker, the registry alias moving). SIGTERM makes the worker not ready first, keeps
serving for ``shutdown_grace_s`` with ``Connection: close`` so clients move away, and
only then stops accepting and drains (see :mod:`serving.lifecycle`).
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
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.spec import load_spec
from scorelog.display import DisplayWriter
from scorelog.engine import make_engine
from scorelog.events import ChangeEvents
from scorelog.store import ScoreLog
from serving import board, board_monitoring, lifecycle, metrics, retention, today
from serving.batcher import ScoringBatcher
from serving.limits import BodyLimits, ConcurrencyLimit
from serving.model_store import ModelStore
from serving.monitoring import ReportCache
from serving.openapi import install_openapi
from serving.problems import install_problem_handlers
from serving.readiness import Readiness, watch_storage
from serving.rescore import rescore_if_due
from serving.routes import (
    admin,
    health,
    leads,
    monitoring,
    outcomes,
    scores,
    scoring,
    webhooks,
)
from serving.security import FailedAuthLimiter, KeyRing
from serving.settings import ServingSettings
from serving.webhooks.worker import DeliveryWorker, WorkerConfig

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

DESCRIPTION = """
Scores CRM leads for purchase readiness: calibrated probabilities of becoming a
marketing-qualified (MQL) and sales-qualified lead (SQL), a 0-100 score, an A-D grade,
a category (`sql`, `mql`, `nurture`) and the reasons in words.

Authenticate with the `X-API-Key` header: **crm** keys score leads and record
outcomes, **sales** keys read the ranked leads and a score's audit trail
(`GET /v1/scores/{score_id}`, with **admin** keys too), **admin** keys reload the model.
Errors are RFC 9457 `application/problem+json` documents (the `Problem` schema) naming
the field at fault. Timestamps are ISO-8601 with a timezone, between 1900-01-01 and
2199-12-31 UTC. A worker that is full answers 503 with `Retry-After` at once.
"""


class LeadscoreAPI(FastAPI):
    """FastAPI whose outermost layer is :class:`ResponseGuard`."""

    def build_middleware_stack(self) -> ASGIApp:
        return ResponseGuard(super().build_middleware_stack(), self)


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    spec = load_spec(settings.spec)
    app = LeadscoreAPI(
        title="leadscore",
        version="1",
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.spec = spec
    app.state.keyring = KeyRing(settings)  # refuses unsafe keys: the service does not start
    app.state.auth_limiter = FailedAuthLimiter(
        settings.auth_failures_allowed, settings.auth_failure_window_s
    )
    app.state.readiness = Readiness()
    install_problem_handlers(app)
    app.include_router(scoring.router(spec, settings))
    app.include_router(outcomes.router(spec))
    app.include_router(leads.router(settings))
    app.include_router(scores.router(settings))
    app.include_router(admin.router())
    app.include_router(health.router(settings))
    app.include_router(board.router(settings))
    app.include_router(webhooks.router())
    app.include_router(today.router(settings))
    app.include_router(monitoring.router())
    app.include_router(board_monitoring.router(settings))
    install_openapi(app, settings.docs)
    app.add_middleware(BodyLimits, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(ConcurrencyLimit, limit=settings.max_queue)
    app.add_middleware(RequestContext)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ServingSettings = app.state.settings
    readiness: Readiness = app.state.readiness
    engine = make_engine(
        settings.database_url_resolved(), sqlite_synchronous=settings.sqlite_synchronous
    )
    events = ChangeEvents(min_score_change=settings.events_min_score_change)
    scorelog = ScoreLog(engine, listeners=[events, DisplayWriter()])
    scorelog.start()
    app.state.scorelog = scorelog
    app.state.engine = engine
    app.state.monitoring = ReportCache(engine, settings.monitor_cache_s)
    store = ModelStore(settings)
    app.state.store = store
    batcher = ScoringBatcher(reasons=settings.reasons)
    batcher.start()
    app.state.batcher = batcher
    storage_checked = asyncio.Event()
    tasks = [
        asyncio.create_task(watch_storage(engine, readiness, settings.db_check_s, storage_checked))
    ]
    await run_in_threadpool(store.load_initial)  # meanwhile the schema comes up
    await storage_checked.wait()
    if store.current is not None:
        metrics.set_model(store.current.name, store.current.version)
    tasks.append(asyncio.create_task(_keep_model_current(store, settings)))
    tasks.append(asyncio.create_task(retention.prune_periodically(engine, settings)))
    worker = _start_webhooks(engine, settings, events)
    app.state.webhook_worker = worker
    if settings.rescore_interval_s:
        tasks.append(asyncio.create_task(_rescore_periodically(scorelog, store, events, settings)))
    lifecycle.drain_on_sigterm(readiness, settings.shutdown_grace_s)
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await run_in_threadpool(batcher.close)
        try:
            await run_in_threadpool(scorelog.close)
        except TimeoutError:
            log.error("the scoring log did not finish its last commits before shutdown")
        if worker is not None:
            await run_in_threadpool(worker.stop, settings.shutdown_timeout_s)
        engine.dispose()


def _start_webhooks(
    engine: Engine, settings: ServingSettings, events: ChangeEvents
) -> DeliveryWorker | None:
    """The outbox's delivery thread, woken by every commit that wrote events."""
    if not settings.webhooks_worker:
        return None
    worker = DeliveryWorker(engine, WorkerConfig.from_settings(settings))
    events.subscribe(worker.wake)
    worker.start()
    return worker


async def _rescore_periodically(
    scorelog: ScoreLog, store: ModelStore, events: ChangeEvents, settings: ServingSettings
) -> None:
    """Scores that age (``serving.rescore``): every ``rescore_interval_s``, in one process."""
    while True:
        await asyncio.sleep(lifecycle.jittered(settings.rescore_interval_s))
        try:
            await run_in_threadpool(rescore_if_due, scorelog, store.current, events, settings)
        except Exception:  # the database or the model failed: try again next time
            log.exception("the periodic rescore failed")


async def _keep_model_current(store: ModelStore, settings: ServingSettings) -> None:
    """Adopt what another worker published (every ``model_poll_s``) and follow the alias.

    The alias is asked every ``model_follow_s`` (with ±20 % jitter, so replicas do not
    ask the registry in lockstep); 0 turns following off.
    """
    follow_at = time.monotonic() + lifecycle.jittered(settings.model_follow_s)
    while True:
        await asyncio.sleep(settings.model_poll_s)
        before = store.current
        try:
            changed = await run_in_threadpool(store.poll)
            if settings.model_follow_s and time.monotonic() >= follow_at:
                follow_at = time.monotonic() + lifecycle.jittered(settings.model_follow_s)
                changed = await run_in_threadpool(store.follow) or changed
        except Exception:  # a bad cache or registry must not kill the loop; the model serves on
            log.exception("looking for a new model failed")
            continue
        if changed and store.current is not None:
            previous = (before.name, before.version) if before else None
            metrics.set_model(store.current.name, store.current.version, previous)


class RequestContext:
    """Request id and access metrics, as a pure ASGI layer.

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
        scope.setdefault("state", {})["request_id"] = _request_id(scope)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_count(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            route = _route_of(scope)
            metrics.REQUESTS.labels(route, str(status["code"])).inc()
            metrics.LATENCY.labels(route).observe(time.perf_counter() - started)


#: On every response unless the route chose otherwise (the board's stylesheet is cached).
_DEFAULT_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))


class ResponseGuard:
    """The outermost layer: headers every response carries, and no broken connections.

    * ``X-Request-ID``, ``Cache-Control: no-store`` (scores and keys are not for
      caches), ``X-Content-Type-Options: nosniff``; ``Connection: close`` while the
      worker drains, so keep-alive clients reconnect elsewhere.
    * Starlette re-raises an unexpected error after sending its 500, and uvicorn then
      closes the connection, so the next request of a client's keep-alive pool failed
      too. The error was answered and logged by our handler: once the response is
      complete it stops here and the connection lives on.
    """

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"complete": False}
        readiness: Readiness | None = getattr(self.api.state, "readiness", None)

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = _with_headers(
                    message, scope, readiness is not None and readiness.draining
                )
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                state["complete"] = True
            await send(message)

        try:
            await self.app(scope, receive, send_guarded)
        except Exception:
            if not state["complete"]:
                raise
            log.debug("an error after a complete response was already answered and logged")


def _with_headers(message: Message, scope: Scope, closing: bool) -> Message:
    headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
    present = {name.lower() for name, _ in headers}
    headers += [(name, value) for name, value in _DEFAULT_HEADERS if name not in present]
    request_id = scope.get("state", {}).get("request_id")
    if request_id and b"x-request-id" not in present:
        headers.append((b"x-request-id", str(request_id).encode("ascii")))
    if closing and b"connection" not in present:
        headers.append((b"connection", b"close"))
    return {**message, "headers": headers}


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
