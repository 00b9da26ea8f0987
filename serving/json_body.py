"""Request bodies parsed strictly: a JSON object with a key twice is refused, not guessed at.

JSON allows duplicate keys and Python keeps the last one, so ``{"company_size": 10,
"company_size": 5000}`` would silently score a company of 5,000, while another parser
in the CRM's path (a gateway, a log pipeline) may have seen 10. The API refuses such a
body with a 422 naming the key's path (``leads[3].company_size``).

Routes opt in with ``APIRouter(route_class=StrictJSONRoute)`` (see :func:`api_router`):
their requests parse ``request.json()`` with a pairs hook that notices repeats. The
hook costs one dict build per object, as ``json.loads`` does anyway; finding the path
of a repeat walks the document only when there is one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from serving.problems import InvalidBody


class _Object(dict[str, Any]):
    """A parsed JSON object that remembers which of its keys came more than once."""

    repeated: tuple[str, ...] = ()


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for key, _ in pairs:
        if key in seen:
            repeated[key] = None
        seen.add(key)
    marked = _Object(obj)
    marked.repeated = tuple(repeated)
    return marked


def _repeats(value: Any, path: tuple[int | str, ...]) -> list[tuple[int | str, ...]]:
    """Paths of every repeated key in a parsed document (called only when there is one)."""
    found: list[tuple[int | str, ...]] = []
    if isinstance(value, dict):
        found += [(*path, key) for key in getattr(value, "repeated", ())]
        for key, item in value.items():
            found += _repeats(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _repeats(item, (*path, i))
    return found


def loads_strict(body: bytes | str) -> Any:
    """``json.loads`` that raises :class:`InvalidBody` (422) on a repeated key."""
    repeated = False

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        obj = _pairs(pairs)
        repeated = repeated or isinstance(obj, _Object)
        return obj

    document = json.loads(body, object_pairs_hook=hook)
    if repeated:
        errors = [
            {"type": "duplicate_key", "loc": ("body", *path)} for path in _repeats(document, ())
        ]
        raise InvalidBody(errors)
    return document


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose handler sees a :class:`StrictJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


def api_router(**kwargs: Any) -> APIRouter:
    """An APIRouter whose JSON bodies are parsed strictly (all API routes use one)."""
    return APIRouter(route_class=StrictJSONRoute, **kwargs)
