"""API keys by role: the CRM scores and records outcomes, sales read, admins reload.

Keys arrive in the ``X-API-Key`` header. Every configured key is compared in constant
time (``hmac.compare_digest``), and all of them are always compared, so neither the
answer nor its timing says how close a guess came or which role a key belongs to.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from serving.problems import ProblemError
from serving.settings import Role, ServingSettings

API_KEY_HEADER = "X-API-Key"
_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Your role's API key.")


class KeyRing:
    """The configured keys, encoded once; answers which roles a presented key holds."""

    def __init__(self, settings: ServingSettings) -> None:
        roles: tuple[Role, ...] = ("crm", "sales", "admin")
        self._keys = [
            (role, key.get_secret_value().encode())
            for role in roles
            for key in settings.keys_for(role)
        ]

    def roles_of(self, presented: str) -> set[Role]:
        given = presented.encode()
        found: set[Role] = set()
        for role, key in self._keys:  # no early exit: constant work per request
            if hmac.compare_digest(given, key):
                found.add(role)
        return found


def require(role: Role | Literal["any"]) -> Callable[..., object]:
    """A dependency that lets a request through only with a key of ``role`` (or any role)."""

    async def check(request: Request, presented: Annotated[str | None, Security(_header)]) -> None:
        if not presented:
            raise ProblemError(
                401, "Unauthorized", f"Send your API key in the {API_KEY_HEADER} header."
            )
        roles = request.app.state.keyring.roles_of(presented)
        if not roles:
            raise ProblemError(401, "Unauthorized", "The API key is not valid.")
        if role != "any" and role not in roles:
            raise ProblemError(
                403, "Forbidden", f"This key's role may not use this endpoint ({role} only)."
            )

    return check
