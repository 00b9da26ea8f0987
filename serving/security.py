"""API keys by role, and a brake on callers who keep presenting wrong ones.

Keys arrive in the ``X-API-Key`` header (a Prometheus scraper may send its key as
``Authorization: Bearer``). Every configured key is compared in constant time
(``hmac.compare_digest``), and all of them are always compared, so neither the answer
nor its timing says how close a guess came or which role a key belongs to.

Failed authentications are counted per client address (:class:`FailedAuthLimiter`):
past the allowance the caller gets 429 with ``Retry-After`` instead of 401. A request
with a valid key is never counted, delayed or refused by it, so a CRM sharing an
address (a NAT, a proxy) with a misconfigured neighbour keeps working. Keys are at
least 24 random characters, so the brake is not what stops guessing: it stops a
storm of wrong keys from costing CPU and filling dashboards, and tells the caller to
back off.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Annotated, Literal

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from serving.problems import ProblemError
from serving.settings import Role, ServingSettings

API_KEY_HEADER = "X-API-Key"
#: RFC 9110 wants a challenge on every 401; this one names where the key goes.
WWW_AUTHENTICATE = f'APIKey realm="leadscore", header="{API_KEY_HEADER}"'
_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Your role's API key.")
_ROLES: tuple[Role, ...] = ("crm", "sales", "admin", "metrics")


class KeyRing:
    """The configured keys, encoded once; answers which roles a presented key holds."""

    def __init__(self, settings: ServingSettings) -> None:
        problems = settings.key_problems()
        if problems:
            raise ValueError("unsafe API keys: " + "; ".join(problems))
        self._keys = [
            (role, key.get_secret_value().encode())
            for role in _ROLES
            for key in settings.keys_for(role)
        ]

    def roles_of(self, presented: str) -> set[Role]:
        given = presented.encode("utf-8", "surrogateescape")
        found: set[Role] = set()
        for role, key in self._keys:  # no early exit: constant work per request
            if hmac.compare_digest(given, key):
                found.add(role)
        return found


class FailedAuthLimiter:
    """A token bucket of failed authentications per client address.

    Each address may fail ``allowed`` times at once, refilled at ``allowed`` per
    ``window_s``. Memory is bounded: the least recently seen addresses are forgotten
    past ``max_addresses`` (forgetting only ever lets someone fail again, never
    blocks anyone). Used from the event loop only, so no lock.
    """

    def __init__(self, allowed: int, window_s: float, *, max_addresses: int = 10_000) -> None:
        self.allowed = float(allowed)
        self.rate = allowed / window_s
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def failure(self, address: str, now: float | None = None) -> int | None:
        """Count one failure; None while within the allowance, else seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(address, (self.allowed, now))
        tokens = min(self.allowed, tokens + (now - last) * self.rate)
        wait = None
        if tokens >= 1:
            tokens -= 1
        else:
            wait = max(1, math.ceil((1 - tokens) / self.rate))
        self._buckets[address] = (tokens, now)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
        return wait


def client_address(request: Request) -> str:
    """The peer address (the proxy's client when uvicorn trusts its forwarded headers)."""
    return request.client.host if request.client else "unknown"


def refuse(request: Request, detail: str) -> ProblemError:
    """401 with a challenge, or 429 + Retry-After once the address failed too often."""
    limiter: FailedAuthLimiter = request.app.state.auth_limiter
    wait = limiter.failure(client_address(request))
    if wait is not None:
        return ProblemError(
            429,
            "Too many failed authentications",
            f"Too many requests without a valid API key from this address; retry in {wait} s.",
            headers={"Retry-After": str(wait)},
        )
    return ProblemError(401, "Unauthorized", detail, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


def require(role: Role | Literal["any"]) -> Callable[..., object]:
    """A dependency that lets a request through only with a key of ``role`` (or any role)."""

    async def check(request: Request, presented: Annotated[str | None, Security(_header)]) -> None:
        _check(request, presented, None if role == "any" else (role,))

    return check


def require_any(*roles: Role) -> Callable[..., object]:
    """A dependency that lets a request through with a key of any of ``roles``."""
    if not roles:
        raise ValueError("name at least one role")

    async def check(request: Request, presented: Annotated[str | None, Security(_header)]) -> None:
        _check(request, presented, roles)

    return check


def require_scraper() -> Callable[..., object]:
    """/metrics: a metrics or admin key, in X-API-Key or as ``Authorization: Bearer``."""

    async def check(request: Request, presented: Annotated[str | None, Security(_header)]) -> None:
        if not presented:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            presented = token.strip() if scheme.lower() == "bearer" else None
        _check(request, presented, ("metrics", "admin"))

    return check


def _check(request: Request, presented: str | None, allowed: Iterable[Role] | None) -> None:
    if not presented:
        raise refuse(request, f"Send your API key in the {API_KEY_HEADER} header.")
    roles = request.app.state.keyring.roles_of(presented)
    if not roles:
        raise refuse(request, "The API key is not valid.")
    wanted = tuple(allowed) if allowed is not None else None
    if wanted is not None and roles.isdisjoint(wanted):
        raise ProblemError(
            403,
            "Forbidden",
            f"This key's role may not use this endpoint ({' or '.join(wanted)} only).",
        )
