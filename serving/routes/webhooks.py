"""/v1/webhooks: subscriptions to score-change events, managed with an admin key.

    POST   /v1/webhooks                          subscribe (the secret is shown once)
    GET    /v1/webhooks                          every subscription with its delivery status
    GET    /v1/webhooks/{id}                     one subscription
    DELETE /v1/webhooks/{id}                     unsubscribe (pending deliveries dropped)
    GET    /v1/webhooks/{id}/deliveries          its deliveries, newest first (?status=dead)
    POST   /v1/webhooks/{id}/replay              every dead delivery gets a new round of tries
    POST   /v1/webhooks/{id}/deliveries/{n}/replay   one dead delivery, same webhook-id

The URL is checked when subscribing (http(s) only, no internal address unless
``LEADSCORE_WEBHOOKS_ALLOW_INTERNAL``: see ``serving.webhooks.targets``) and again before
every try. Errors name the field and never quote the URL or the secret.
"""

# No `from __future__ import annotations`: FastAPI evaluates the route signatures.
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from scorelog.event_tables import MAX_URL_LENGTH
from scorelog.events import EVENT_TYPES
from scorelog.webhooks import (
    DeliveryStatus,
    Subscription,
    SubscriptionLimitError,
    create_subscription,
    delete_subscription,
    deliveries,
    delivery_status,
    get_subscription,
    list_subscriptions,
    replay,
)
from serving.deps import settings as settings_of
from serving.json_body import api_router
from serving.openapi import problems
from serving.problems import VALIDATION_TYPE, FieldError, ProblemError
from serving.schemas import StorableText
from serving.security import require
from serving.settings import ServingSettings
from serving.webhooks import signing, targets

EventType = cast(Any, Literal)[EVENT_TYPES]
SUBSCRIPTION_ID_PATTERN = r"^sub_[A-Za-z0-9_-]{1,40}$"


class SubscriptionIn(StorableText):
    """A new subscription."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="Where events are POSTed: an http(s) URL on a public address.",
        examples=["https://crm.example.com/hooks/leadscore"],
    )
    event_types: list[EventType] = Field(  # type: ignore[valid-type]
        min_length=1,
        max_length=len(EVENT_TYPES),
        description=f"Which events to receive: any of {', '.join(EVENT_TYPES)}.",
    )
    secret: str | None = Field(
        default=None,
        max_length=signing.MAX_SECRET_LENGTH,
        description="whsec_ + base64 of 24-64 bytes; omitted: one is generated and returned once.",
    )
    description: str | None = Field(default=None, max_length=200)


def router() -> APIRouter:
    api = api_router(prefix="/v1/webhooks", tags=["webhooks"])
    admin = [Depends(require("admin"))]
    SubscriptionId = Annotated[str, Path(max_length=44, pattern=SUBSCRIPTION_ID_PATTERN)]

    @api.post(
        "",
        dependencies=admin,
        status_code=201,
        summary="Subscribe to score-change events",
        responses=problems(409, 422, s409="The service has as many subscriptions as it allows"),
    )
    async def subscribe(
        body: Annotated[SubscriptionIn, Body()],
        request: Request,
        config: Annotated[ServingSettings, Depends(settings_of)],
    ) -> JSONResponse:
        url = await run_in_threadpool(_check_target, body.url, config.webhooks_allow_internal)
        secret = body.secret or signing.new_secret()
        problem = signing.secret_problem(secret)
        if problem is not None:
            raise _invalid("secret", problem)
        try:
            created = await run_in_threadpool(
                lambda: create_subscription(
                    _engine(request),
                    url=url,
                    event_types=[t for t in EVENT_TYPES if t in body.event_types],
                    secret=secret,
                    description=body.description,
                    max_subscriptions=config.webhook_max_subscriptions,
                )
            )
        except SubscriptionLimitError as exc:
            raise ProblemError(
                409, "Too many subscriptions", f"The service allows {exc}."
            ) from None
        out = _describe(created, DeliveryStatus())
        out["secret"] = secret  # shown this once: the receiver needs it to verify
        return JSONResponse(
            out, status_code=201, headers={"Location": f"/v1/webhooks/{created.id}"}
        )

    @api.get("", dependencies=admin, summary="Every subscription with its delivery status")
    async def list_all(request: Request) -> JSONResponse:
        engine = _engine(request)

        def read() -> list[dict[str, Any]]:
            subscriptions = list_subscriptions(engine)
            status = delivery_status(engine, [s.id for s in subscriptions])
            return [_describe(s, status[s.id]) for s in subscriptions]

        return JSONResponse({"items": await run_in_threadpool(read)})

    @api.get(
        "/{subscription_id}",
        dependencies=admin,
        summary="One subscription with its delivery status",
        responses=problems(404),
    )
    async def get_one(subscription_id: SubscriptionId, request: Request) -> JSONResponse:
        engine = _engine(request)
        found = await run_in_threadpool(_existing, engine, subscription_id)
        status = await run_in_threadpool(delivery_status, engine, [found.id])
        return JSONResponse(_describe(found, status[found.id]))

    @api.delete(
        "/{subscription_id}",
        dependencies=admin,
        status_code=204,
        summary="Unsubscribe; undelivered events are dropped",
        responses=problems(404),
    )
    async def unsubscribe(subscription_id: SubscriptionId, request: Request) -> Response:
        if not await run_in_threadpool(delete_subscription, _engine(request), subscription_id):
            raise _not_found()
        return Response(status_code=204)

    @api.get(
        "/{subscription_id}/deliveries",
        dependencies=admin,
        summary="A subscription's deliveries, newest first",
        responses=problems(404, 422),
    )
    async def list_deliveries(
        subscription_id: SubscriptionId,
        request: Request,
        status: Annotated[Literal["pending", "delivered", "dead"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> JSONResponse:
        engine = _engine(request)
        await run_in_threadpool(_existing, engine, subscription_id)
        found = await run_in_threadpool(
            lambda: deliveries(engine, subscription_id, status=status, limit=limit)
        )
        return JSONResponse({"items": [d.to_dict() for d in found]})

    @api.post(
        "/{subscription_id}/replay",
        dependencies=admin,
        summary="Try every dead delivery again (same webhook-id)",
        responses=problems(404),
    )
    async def replay_all(subscription_id: SubscriptionId, request: Request) -> JSONResponse:
        engine = _engine(request)
        await run_in_threadpool(_existing, engine, subscription_id)
        count = await run_in_threadpool(replay, engine, subscription_id)
        _wake(request)
        return JSONResponse({"replayed": count})

    @api.post(
        "/{subscription_id}/deliveries/{delivery_id}/replay",
        dependencies=admin,
        summary="Try one dead delivery again (same webhook-id)",
        responses=problems(404, 409, s409="The delivery is not dead"),
    )
    async def replay_one(
        subscription_id: SubscriptionId,
        delivery_id: Annotated[int, Path(ge=1, le=2**62)],
        request: Request,
    ) -> JSONResponse:
        engine = _engine(request)
        await run_in_threadpool(_existing, engine, subscription_id)
        count = await run_in_threadpool(replay, engine, subscription_id, delivery_id)
        if not count:
            raise ProblemError(
                409, "Not dead", "Only a dead delivery of this subscription can be replayed."
            )
        _wake(request)
        return JSONResponse({"replayed": count})

    return api


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _wake(request: Request) -> None:
    worker = getattr(request.app.state, "webhook_worker", None)
    if worker is not None:
        worker.wake()


def _check_target(url: str, allow_internal: bool) -> str:
    """The URL to store (non-ASCII encoded), or a 422 naming ``url``."""
    try:
        stored = targets.normalise(url)
        targets.check(stored, allow_internal=allow_internal)
    except targets.TargetError as exc:
        raise _invalid("url", str(exc)) from None
    if len(stored) > MAX_URL_LENGTH:
        raise _invalid("url", f"is longer than {MAX_URL_LENGTH} characters once percent-encoded")
    return stored


def _existing(engine: Engine, subscription_id: str) -> Subscription:
    found = get_subscription(engine, subscription_id)
    if found is None:
        raise _not_found()
    return found


def _invalid(field: str, problem: str) -> ProblemError:
    return ProblemError(
        422,
        "Invalid request",
        "1 field is invalid.",
        type=VALIDATION_TYPE,
        errors=[FieldError(field=field, problem=problem)],
    )


def _not_found() -> ProblemError:
    return ProblemError(404, "Not Found", "No such subscription.")


def _describe(subscription: Subscription, status: DeliveryStatus) -> dict[str, Any]:
    """A subscription as the API shows it: never its secret (shown once, at creation)."""
    return {
        "id": subscription.id,
        "url": subscription.url,
        "event_types": subscription.event_types,
        "description": subscription.description,
        "created_at": subscription.created_at.isoformat(),
        "deliveries": status.to_dict(),
    }
