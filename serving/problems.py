"""Every error the API returns is an RFC 9457 problem document (``application/problem+json``).

A client sees one shape for all failures: ``type``, ``title``, ``status``, ``detail``, the
``request_id`` to quote in a support ticket and, for invalid input, one ``errors`` entry
per field in our own words. Two rules hold everywhere in this module:

* **The input never comes back.** Pydantic's ``msg`` and ``ctx`` sometimes quote the
  value that failed, and a lead's fields are personal data. Problems are written from
  the error *type* and the schema's own limits only; field names the client invented
  are shown only when they look like field names.
* **A rejected request logs nothing.** A 4xx is the client's mistake and its body may
  hold personal data; logs get 5xx only, the unexpected ones with their traceback.

FastAPI's default rendering also breaks (a 500) on a NaN or a lone surrogate in the
input it echoes; rendering our own bodies with ``ensure_ascii`` and without input
closes that hole too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from scorelog.engine import describe_error, is_unavailable

PROBLEM_JSON = "application/problem+json"

VALIDATION_TYPE = "/problems/validation-error"
MALFORMED_JSON_TYPE = "/problems/malformed-json"
INTERNAL_TYPE = "/problems/internal-error"
STORAGE_TYPE = "/problems/storage-unavailable"
#: How long a client should wait before retrying a 503 (seconds, as Retry-After says it).
RETRY_AFTER_S = 1

logger = logging.getLogger("leadscore.serving.problems")


class FieldError(BaseModel):
    """One invalid field: where it is and what is wrong, never what was sent."""

    field: str = Field(
        description="Path into the body: 'company_size', 'leads[3].company_size', "
        "'actions[0].at', or 'body' for the body as a whole.",
        examples=["leads[3].company_size"],
    )
    problem: str = Field(description="What is wrong, in words.", examples=["must be a number"])


class Problem(BaseModel):
    """An RFC 9457 problem document; ``errors`` and ``request_id`` are extension members."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": VALIDATION_TYPE,
                    "title": "Invalid request",
                    "status": 422,
                    "detail": "1 field is invalid.",
                    "request_id": "4f1c2a9e0b7d4e21",
                    "errors": [{"field": "company_size", "problem": "must be a number"}],
                }
            ]
        }
    )

    type: str = Field(
        default="about:blank",
        description="'about:blank' (the status says it all) or a relative URI naming the "
        "kind of problem, e.g. '/problems/validation-error'.",
    )
    title: str = Field(description="Short summary of the kind of problem; same for every case.")
    status: int = Field(ge=100, le=599, description="The HTTP status code.")
    detail: str = Field(description="What went wrong in this occurrence.")
    instance: str | None = Field(default=None, description="URI reference of this occurrence.")
    request_id: str | None = Field(default=None, description="Quote it when reporting a problem.")
    errors: list[FieldError] | None = Field(
        default=None, description="One entry per invalid field."
    )


class ProblemError(Exception):
    """Raised by a route to answer with a problem document instead of a result.

    ``detail`` is sent to the client as written, so it must never quote the input.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: Sequence[FieldError] | None = None,
        type: str = "about:blank",
        instance: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.type = type
        self.instance = instance
        self.headers = dict(headers) if headers else None


class InvalidBody(StarletteHTTPException):
    """A body that parsed as JSON but cannot be taken as it is (e.g. a duplicate key).

    An HTTPException because FastAPI lets only those out of its body parsing unchanged
    (anything else becomes a bare 400); rendered as the 422 problem of ``errors``.
    """

    def __init__(self, errors: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(status_code=422, detail="invalid body")
        self.errors = list(errors)


def storage_unavailable(detail: str | None = None) -> ProblemError:
    """503 + Retry-After: the scoring log cannot be used right now; nothing was stored."""
    return ProblemError(
        503,
        "Scoring log unavailable",
        detail or "The scoring log cannot be reached right now; nothing was stored. Retry shortly.",
        type=STORAGE_TYPE,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class ProblemResponse(JSONResponse):
    """``application/problem+json``, ASCII-only so no lone surrogate can fail the encoding."""

    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode("ascii")


# --------------------------------------------------------------------------- rendering


def request_id_of(request: Request) -> str | None:
    """The id the app put in ``request.state`` (absent when the app sets none)."""
    value = getattr(request.state, "request_id", None)
    return None if value is None else str(value)


def problem_response(
    problem: Problem, *, headers: Mapping[str, str] | None = None
) -> ProblemResponse:
    """Render a problem; members without a value are left out, as RFC 9457 allows."""
    return ProblemResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=problem.status,
        headers=dict(headers) if headers else None,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# --------------------------------------------------------------------------- field errors


def _number(value: Any) -> str:
    """500000.0 → '500000', 1e12 → '1000000000000', 0.5 → '0.5' (limits read as written)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


def _min_items(ctx: Mapping[str, Any], noun: str) -> str:
    least = ctx.get("min_length")
    if least == 1:
        return f"{noun} must not be empty"
    return f"{noun} too short (min {_number(least)})"


Words = str | Callable[[Mapping[str, Any]], str]

#: pydantic error type → the problem in our words. Only limits from ``ctx`` that come
#: from the schema are used (ge, le, max_length, expected, ...), never ``input`` nor
#: ``ctx['error']``, which may quote the value.
ERROR_WORDS: dict[str, Words] = {
    "missing": "required",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "finite_number": "must not be NaN or infinite",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "string_unicode": "must be valid Unicode text",
    "string_too_long": lambda c: f"text too long (max {_number(c.get('max_length'))})",
    "string_too_short": lambda c: _min_items(c, "text"),
    "string_pattern_mismatch": lambda c: f"must match the pattern {c.get('pattern')}",
    "greater_than": lambda c: f"must be greater than {_number(c.get('gt'))}",
    "greater_than_equal": lambda c: f"must be at least {_number(c.get('ge'))}",
    "less_than": lambda c: f"must be less than {_number(c.get('lt'))}",
    "less_than_equal": lambda c: f"must be at most {_number(c.get('le'))}",
    "too_long": lambda c: f"list too long (max {_number(c.get('max_length'))})",
    "too_short": lambda c: _min_items(c, "list"),
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "literal_error": lambda c: f"must be one of {c.get('expected')}",
    "enum": lambda c: f"must be one of {c.get('expected')}",
    "timezone_aware": "must include a timezone",
    "timezone_naive": "must not include a timezone",
    "datetime_type": "not a valid timestamp",
    "datetime_parsing": "not a valid timestamp",
    "datetime_from_date_parsing": "not a valid timestamp",
    "datetime_object_invalid": "not a valid timestamp",
    # Raised by serving.schemas validators with these types.
    "timestamp_invalid": "not a valid timestamp",
    "stage_required": "required when outcome is stage_reached",
    "stage_not_allowed": "only allowed when outcome is stage_reached",
    "reason_not_allowed": "only allowed when outcome is disqualified or lost",
    "timestamp_too_far_ahead": "must not be more than 1 day in the future",
    "timestamp_out_of_range": "must be between 1900-01-01 and 2199-12-31 (UTC)",
    "text_nul": "must not contain NUL characters",
    "text_surrogate": "must be valid Unicode text (no lone surrogates)",
    "whole_number": "must be a whole number",
    "duplicate_key": "appears more than once in its object",
    # A key the client invented is never repeated: the error names the object holding it.
    "extra_forbidden": "contains an unknown field",
}
GENERIC_WORDS = "invalid value"

_SAFE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_ -]{0,63}$")
REDACTED_KEY = "<redacted>"


def problem_words(error_type: str, ctx: Mapping[str, Any] | None) -> str:
    """What is wrong, from the error type alone (plus schema limits for a few types)."""
    words = ERROR_WORDS.get(error_type, GENERIC_WORDS)
    return words if isinstance(words, str) else words(ctx or {})


def field_path(loc: Sequence[int | str]) -> str:
    """``('body', 'leads', 3, 'company_size')`` → ``'leads[3].company_size'``.

    A key that does not look like a field name (a client can send any key, including
    its secrets or a lone surrogate) is shown as ``<redacted>``.
    """
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = part if _SAFE_KEY.match(part) else REDACTED_KEY
            path += f".{name}" if path else name
    return path or "body"


def field_errors(errors: Sequence[Mapping[str, Any]]) -> list[FieldError]:
    """One FieldError per pydantic error, in our words; duplicates (same words) folded.

    An unknown field is reported on the object that holds it: its name is whatever the
    client typed there, which may be a secret pasted into the wrong place.
    """
    out: dict[tuple[str, str], FieldError] = {}
    for e in errors:
        loc = tuple(e.get("loc", ()))
        kind = str(e.get("type", ""))
        if kind == "extra_forbidden":
            loc = loc[:-1]
        item = FieldError(field=field_path(loc), problem=problem_words(kind, e.get("ctx")))
        out.setdefault((item.field, item.problem), item)
    return list(out.values())


# --------------------------------------------------------------------------- malformed JSON

#: CPython's json messages → ours. Matched by prefix; one of them quotes the offending
#: character, so the message itself is never passed through.
_JSON_WORDS: tuple[tuple[str, str], ...] = (
    ("Expecting value", "expected a value"),
    ("Expecting ',' delimiter", "expected ','"),
    ("Expecting ':' delimiter", "expected ':'"),
    ("Expecting property name", "expected a property name in double quotes"),
    ("Unterminated string", "unterminated string"),
    ("Invalid control character", "control character in a string"),
    ("Invalid \\uXXXX escape", "invalid \\u escape"),
    ("Invalid \\escape", "invalid escape"),
    ("Extra data", "unexpected data after the JSON value"),
    ("Illegal trailing comma", "trailing comma"),
)
_SERDE_POSITION = re.compile(r"at line (\d+) column (\d+)")


def _json_words(message: str) -> str:
    for prefix, words in _JSON_WORDS:
        if message.startswith(prefix):
            return words
    return "syntax error"


def _line_column(doc: str, pos: int) -> tuple[int, int]:
    line = doc.count("\n", 0, pos) + 1
    return line, pos - (doc.rfind("\n", 0, pos) + 1) + 1


def malformed_json(request: Request, error: Mapping[str, Any], body: Any) -> Problem:
    """400 for a body that is not JSON: where it broke, never what is there.

    FastAPI reports Python's JSONDecodeError as a ``json_invalid`` error with the
    character offset in ``loc`` and the document in ``body``; pydantic's own JSON
    parser gives 'at line L column C' in its message.
    """
    ctx = error.get("ctx") or {}
    message = str(ctx.get("error", ""))
    loc = tuple(error.get("loc", ()))
    where = ""
    if len(loc) == 2 and isinstance(loc[1], int) and isinstance(body, str):
        line, column = _line_column(body, loc[1])
        where = f" at line {line}, column {column}"
    elif match := _SERDE_POSITION.search(message):
        where = f" at line {match[1]}, column {match[2]}"
    return Problem(
        type=MALFORMED_JSON_TYPE,
        title="Malformed JSON",
        status=400,
        detail=f"The request body is not valid JSON: {_json_words(message)}{where}.",
        request_id=request_id_of(request),
    )


# --------------------------------------------------------------------------- handlers


async def validation_handler(request: Request, exc: Exception) -> Response:
    """422 with one FieldError per problem, or 400 when the body is not JSON at all."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if broken is not None:
        return problem_response(malformed_json(request, broken, exc.body))
    return invalid_request(request, errors)


def invalid_request(request: Request, errors: Sequence[Mapping[str, Any]]) -> Response:
    """The 422 problem document for pydantic-style errors."""
    items = field_errors(errors)
    count = len({e.field for e in items})
    detail = "1 field is invalid." if count == 1 else f"{count} fields are invalid."
    return problem_response(
        Problem(
            type=VALIDATION_TYPE,
            title="Invalid request",
            status=422,
            detail=detail,
            request_id=request_id_of(request),
            errors=items,
        )
    )


async def json_decode_handler(request: Request, exc: Exception) -> Response:
    """A route that parses the body itself (``await request.json()``) and meets bad JSON."""
    assert isinstance(exc, json.JSONDecodeError)
    error = {"loc": ("body", exc.pos), "ctx": {"error": exc.msg}}
    return problem_response(malformed_json(request, error, exc.doc))


def _unreadable_body(request: Request, cause: BaseException | None) -> Problem | None:
    """FastAPI turns a body json.loads cannot even decode into a bare 400; name why."""
    if isinstance(cause, UnicodeDecodeError):
        detail = f"The request body is not valid UTF-8 (byte {cause.start})."
    elif isinstance(cause, RecursionError):
        detail = "The request body is not valid JSON: nested too deeply."
    else:
        return None
    return Problem(
        type=MALFORMED_JSON_TYPE,
        title="Malformed JSON",
        status=400,
        detail=detail,
        request_id=request_id_of(request),
    )


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """404, 405, 413, ... as problems; keeps the exception's headers (405's Allow)."""
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, InvalidBody):
        return invalid_request(request, exc.errors)
    headers = getattr(exc, "headers", None)
    if exc.status_code in (204, 304) or exc.status_code < 200:
        return Response(status_code=exc.status_code, headers=headers)
    special = _unreadable_body(request, exc.__cause__) if exc.status_code == 400 else None
    phrase = _phrase(exc.status_code)
    problem = special or Problem(
        title=phrase,
        status=exc.status_code,
        detail=exc.detail if isinstance(exc.detail, str) and exc.detail else phrase,
        request_id=request_id_of(request),
    )
    if problem.status >= 500:
        _log_server_problem(request, problem)
    return problem_response(problem, headers=headers)


async def problem_error_handler(request: Request, exc: Exception) -> Response:
    """A route's deliberate refusal: its own status, title, detail and errors."""
    assert isinstance(exc, ProblemError)
    problem = Problem(
        type=exc.type,
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        instance=exc.instance,
        request_id=request_id_of(request),
        errors=exc.errors,
    )
    if problem.status >= 500:
        _log_server_problem(request, problem)
    return problem_response(problem, headers=exc.headers)


async def database_error_handler(request: Request, exc: Exception) -> Response:
    """A database error no route handled: 503 when the database is unavailable, else 500.

    Logged without the error's text, which can quote the values of a statement.
    """
    if is_unavailable(exc):
        problem = storage_unavailable()
        readiness = getattr(request.app.state, "readiness", None)
        if readiness is not None:  # not ready until the storage watcher sees it back
            readiness.storage_failed()
        logger.warning(
            "%s %s: the scoring log is unavailable: %s (request_id=%s)",
            request.method,
            _route_of(request),
            describe_error(exc),
            request_id_of(request),
        )
        return await problem_error_handler(request, problem)
    logger.error(
        "database error on %s %s: %s (request_id=%s)",
        request.method,
        _route_of(request),
        describe_error(exc),
        request_id_of(request),
    )
    return _internal_error(request)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    """500 that says nothing about the cause; the traceback goes to the log only."""
    if isinstance(exc, SQLAlchemyError | TimeoutError | ConnectionError):
        return await database_error_handler(request, exc)
    logger.error(
        "unhandled %s on %s %s (request_id=%s)",
        type(exc).__name__,
        request.method,
        _route_of(request),
        request_id_of(request),
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return _internal_error(request)


def _internal_error(request: Request) -> Response:
    request_id = request_id_of(request)
    detail = "An unexpected error occurred."
    if request_id:
        detail += f" Quote request id {request_id} when reporting it."
    return problem_response(
        Problem(
            type=INTERNAL_TYPE,
            title="Internal Server Error",
            status=500,
            detail=detail,
            request_id=request_id,
        )
    )


def _route_of(request: Request) -> str:
    """The route template ('/v1/leads/{lead_id}') rather than a path holding an id."""
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else request.url.path


def _log_server_problem(request: Request, problem: Problem) -> None:
    """A deliberate 5xx (model not loaded, database down): a warning, no traceback."""
    logger.warning(
        "%s %s answered %d %s (request_id=%s)",
        request.method,
        _route_of(request),
        problem.status,
        problem.title,
        problem.request_id,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` a problem document.

    A ``JSONDecodeError`` escaping a route is taken as the client's body being bad JSON
    (routes parse request bodies, not files). ``Exception`` is handled by Starlette's
    outermost ServerErrorMiddleware, which sends our 500 and then re-raises so the
    server (and a TestClient) still see the error.
    The app must not run with ``debug=True``, which would answer with a traceback.
    """
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(ProblemError, problem_error_handler)
    app.add_exception_handler(json.JSONDecodeError, json_decode_handler)
    app.add_exception_handler(SQLAlchemyError, database_error_handler)
    app.add_exception_handler(TimeoutError, database_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
