"""The OpenAPI document: every error response described as what it is, a Problem.

FastAPI documents a route's extra responses with an empty schema and its 422 with its
own ``HTTPValidationError`` shape, which this API never sends; a client generated from
that document parses every error as nothing. :func:`install_openapi` rewrites the
generated document once: each 4xx/5xx response of each operation is
``application/problem+json`` with the :class:`~serving.problems.Problem` schema, every
operation lists the errors any request can meet (500, and 503 when the service sheds
load), and every authenticated one lists 401, 403 and 429.

Where the document is served is a setting (``LEADSCORE_DOCS``): ``off`` (the default:
no /openapi.json, /docs or /redoc), ``key`` (/openapi.json for any valid API key, no
HTML pages) or ``public``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from serving.problems import PROBLEM_JSON, Problem
from serving.security import require

STATUS_WORDS: dict[int, str] = {
    400: "Malformed JSON",
    401: "No API key, or an unknown one (see WWW-Authenticate)",
    403: "A key of another role",
    404: "Not found",
    409: "Conflicts with what is already there",
    413: "Body too large",
    415: "Not application/json",
    422: "A field is invalid; `errors` names each field and what is wrong",
    429: "Too many failed authentications from this address; see Retry-After",
    500: "Unexpected error; quote the request_id",
    502: "The new model could not be fetched or failed its checks; the old one serves on",
    503: "Overloaded, no model loaded, or the scoring log unavailable; see Retry-After",
}
_ALWAYS = (500, 503)
_AUTHENTICATED = (401, 403, 429)
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problems(*statuses: int, **special: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these statuses, described; schemas are added later.

    ``special`` overrides a description: ``problems(409, s409="A reload is running")``.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        words = special.get(f"s{status}", STATUS_WORDS.get(status, "Error"))
        out[status] = {"description": words}
    return out


def describe_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a generated document so every error response is a Problem (in place)."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path in document.get("paths", {}).values():
        for operation in path.values():
            if isinstance(operation, dict) and "responses" in operation:
                _describe_operation(operation)
    return document


def _describe_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    wanted: Iterable[int] = _ALWAYS + (_AUTHENTICATED if operation.get("security") else ())
    for code in wanted:
        responses.setdefault(str(code), {"description": STATUS_WORDS[code]})
    for status, response in responses.items():
        if not status.isdigit() or int(status) < 400:
            continue
        if int(status) == 422:
            response["description"] = STATUS_WORDS[422]
        response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
    operation["responses"] = dict(sorted(responses.items()))


def install_openapi(app: FastAPI, exposure: str) -> None:
    """Serve the rewritten document as ``exposure`` says (``off``, ``key``, ``public``).

    The app must have been created with ``openapi_url=None`` and no docs URLs: the
    routes here replace FastAPI's own.
    """
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cached:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            cached.update(describe_errors(document))
        return cached

    app.openapi = openapi  # type: ignore[method-assign]
    if exposure == "off":
        return
    guard = [] if exposure == "public" else [Depends(require("any"))]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def document() -> JSONResponse:
        return JSONResponse(openapi())

    if exposure != "public":
        return  # a browser cannot send the key with the page's own requests

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")
