"""Every error is an RFC 9457 problem: exact statuses and whole bodies, no input echoed.

A tiny app in the test (not the service's) isolates the error layer: the problem
handlers, the body limits and the spec-derived lead model, behind a request-id
middleware like the real one. Every bad value carries a marker that must never appear
in a response body, and nothing may be logged for a 4xx.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from features.spec import load_spec
from serving.limits import BodyLimits
from serving.problems import (
    ERROR_WORDS,
    PROBLEM_JSON,
    FieldError,
    ProblemError,
    field_path,
    install_problem_handlers,
    problem_words,
)
from serving.schemas import batch_model, lead_model

SPEC = load_spec("sample_crm")
Lead = lead_model(SPEC)
Batch = batch_model(SPEC, max_leads=5)
MARKER = "SECRET-VALUE-123"
LIMIT = 2000
RID = "req-0001"
JSON = {"content-type": "application/json"}


class FixedRequestId:
    """Stands in for the app's request-id middleware (outermost, sets scope state)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["request_id"] = RID
        await self.app(scope, receive, send)


def make_app(*, request_id: bool = True) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(BodyLimits, max_body_bytes=LIMIT)
    if request_id:
        app.add_middleware(FixedRequestId)

    @app.post("/v1/score")
    def score(lead: Lead) -> dict[str, Any]:  # type: ignore[valid-type]
        return {"lead_id": lead.lead_id}  # type: ignore[attr-defined]

    @app.post("/v1/batch")
    def batch(body: Batch) -> dict[str, int]:  # type: ignore[valid-type]
        return {"n": len(body.leads)}  # type: ignore[attr-defined]

    @app.post("/v1/refuse")
    def refuse() -> None:
        raise ProblemError(
            409,
            "Conflict",
            "This lead was merged into another one.",
            type="/problems/lead-merged",
            errors=[FieldError(field="lead_id", problem="merged")],
        )

    @app.post("/v1/unavailable")
    def unavailable() -> None:
        raise ProblemError(503, "Service Unavailable", "No model is loaded yet.")

    @app.post("/v1/crash")
    def crash() -> None:
        raise RuntimeError(f"database password is {MARKER}")

    @app.post("/v1/raw")
    async def raw(request: Request) -> dict[str, Any]:
        return {"keys": sorted(await request.json())}

    @app.post("/other/echo")
    def other() -> dict[str, str]:
        return {"ok": "yes"}

    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(make_app(), raise_server_exceptions=False) as c:
        yield c


class LogPolicy:
    """Set ``expected`` in a test that answers 5xx: only those may log."""

    expected = False


@pytest.fixture(autouse=True)
def log_policy(caplog: pytest.LogCaptureFixture) -> Iterator[LogPolicy]:
    """Nothing but the test client's own request lines may be logged for a rejection."""
    caplog.set_level(logging.DEBUG)
    policy = LogPolicy()
    yield policy
    if not policy.expected:
        records = caplog.get_records("call")
        ours = [r for r in records if not r.name.startswith(("httpx", "httpcore", "asyncio"))]
        assert ours == []


def problem(response: Any, status: int) -> dict[str, Any]:
    """The body of a problem response, after the checks every problem must pass."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert MARKER not in response.text
    assert "Traceback" not in response.text
    body: dict[str, Any] = response.json()
    return body


def post(client: TestClient, path: str, content: bytes | str, **headers: str) -> Any:
    return client.post(path, content=content, headers={**JSON, **headers})


def validation(*errors: tuple[str, str]) -> dict[str, Any]:
    fields = {f for f, _ in errors}
    return {
        "type": "/problems/validation-error",
        "title": "Invalid request",
        "status": 422,
        "detail": "1 field is invalid."
        if len(fields) == 1
        else f"{len(fields)} fields are invalid.",
        "request_id": RID,
        "errors": [{"field": f, "problem": p} for f, p in errors],
    }


def malformed(detail: str) -> dict[str, Any]:
    return {
        "type": "/problems/malformed-json",
        "title": "Malformed JSON",
        "status": 400,
        "detail": detail,
        "request_id": RID,
    }


# --------------------------------------------------------------------------- valid


def test_valid_lead_passes(client: TestClient) -> None:
    response = post(client, "/v1/score", '{"lead_id": "a", "as_of": "2025-03-20T12:00:00Z"}')
    assert response.status_code == 200
    assert response.json() == {"lead_id": "a"}


def test_charset_parameter_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/v1/score",
        content=b'{"lead_id": "a"}',
        headers={"content-type": "Application/JSON; charset=UTF-8"},
    )
    assert response.status_code == 200


# --------------------------------------------------------------------------- malformed bodies


def test_malformed_json(client: TestClient) -> None:
    response = post(client, "/v1/score", '{"lead_id": "a",\n "company_size": ' + MARKER + "}")
    assert problem(response, 400) == malformed(
        "The request body is not valid JSON: expected a value at line 2, column 18."
    )


def test_truncated_json(client: TestClient) -> None:
    response = post(client, "/v1/score", '{"lead_id": "' + MARKER)
    assert problem(response, 400) == malformed(
        "The request body is not valid JSON: unterminated string at line 1, column 13."
    )


def test_trailing_garbage(client: TestClient) -> None:
    response = post(client, "/v1/score", '{"lead_id": "a"} ' + MARKER)
    assert problem(response, 400) == malformed(
        "The request body is not valid JSON: unexpected data after the JSON value at line 1, "
        "column 18."
    )


def test_control_character_is_not_quoted(client: TestClient) -> None:
    response = post(client, "/v1/score", '{"lead_id": "a\x01' + MARKER + '"}')
    assert problem(response, 400) == malformed(
        "The request body is not valid JSON: control character in a string at line 1, column 15."
    )


def test_json_decode_error_raised_by_a_route(client: TestClient) -> None:
    response = post(client, "/v1/raw", '{"a": 1,\n\n  ' + MARKER + "}")
    assert problem(response, 400) == malformed(
        "The request body is not valid JSON: expected a property name in double quotes at "
        "line 3, column 3."
    )
    assert post(client, "/v1/raw", '{"b": 1, "a": 2}').json() == {"keys": ["a", "b"]}


def test_non_utf8_bytes(client: TestClient) -> None:
    body = b'{"lead_id": "a", "industry": "caf\xe9 ' + MARKER.encode() + b'"}'
    assert problem(post(client, "/v1/score", body), 400) == malformed(
        "The request body is not valid UTF-8 (byte 33)."
    )


def test_deeply_nested_json(client: TestClient) -> None:
    body = "[" * 1500 + "]" * 1500
    response = client.post(
        "/v1/score", content=body, headers={**JSON, "content-length": str(len(body))}
    )
    # Over the byte limit before it could reach the parser; the parser's own guard is
    # exercised with a larger limit.
    assert response.status_code == 413
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/deep")
    def deep(lead: Lead) -> None:  # type: ignore[valid-type]
        return None

    with TestClient(app) as c:
        response = c.post("/deep", content="[" * 100_000 + "]" * 100_000, headers=JSON)
    assert problem(response, 400) == {
        "type": "/problems/malformed-json",
        "title": "Malformed JSON",
        "status": 400,
        "detail": "The request body is not valid JSON: nested too deeply.",
    }


def test_empty_body(client: TestClient) -> None:
    response = client.post("/v1/score", headers=JSON)
    assert problem(response, 422) == validation(("body", "required"))


# --------------------------------------------------------------------------- content type, size


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json-patch+json",
        "application/json; charset=latin-1",
        "multipart/form-data; boundary=x",
    ],
)
def test_wrong_content_type(client: TestClient, content_type: str) -> None:
    response = client.post(
        "/v1/score", content='{"lead_id": "a"}', headers={"content-type": content_type}
    )
    assert problem(response, 415) == {
        "type": "about:blank",
        "title": "Unsupported Media Type",
        "status": 415,
        "detail": "The request body must be JSON, sent with Content-Type: application/json.",
        "request_id": RID,
    }


def test_missing_content_type_with_a_body(client: TestClient) -> None:
    response = client.post("/v1/score", content=b'{"lead_id": "a"}')
    assert problem(response, 415)["title"] == "Unsupported Media Type"


def test_body_less_post_needs_no_content_type(client: TestClient) -> None:
    response = client.post("/v1/refuse")
    assert problem(response, 409)["type"] == "/problems/lead-merged"


def test_content_type_is_only_checked_under_the_api_prefixes(client: TestClient) -> None:
    response = client.post("/other/echo", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 200
    response = client.post("/v1x/echo", content=b"x", headers={"content-type": "text/plain"})
    assert problem(response, 404)["status"] == 404


TOO_LARGE = {
    "type": "about:blank",
    "title": "Content Too Large",
    "status": 413,
    "detail": f"The request body exceeds {LIMIT} bytes.",
    "request_id": RID,
}


def test_oversize_body_with_content_length(client: TestClient) -> None:
    body = '{"lead_id": "a", "industry": "' + MARKER + "x" * LIMIT + '"}'
    response = post(client, "/v1/score", body)
    assert problem(response, 413) == TOO_LARGE


def test_oversize_body_streamed_without_content_length(client: TestClient) -> None:
    chunks_sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b'{"lead_id": "a", "industry": "' + MARKER.encode()
        for i in range(100):
            chunks_sent.append(i)
            yield b"x" * 500
        yield b'"}'

    response = client.post("/v1/score", content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert problem(response, 413) == TOO_LARGE


def test_streamed_body_under_the_limit_passes(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"lead_id": '
        yield b'"a"}'

    response = client.post("/v1/score", content=chunks(), headers=JSON)
    assert response.status_code == 200
    assert response.json() == {"lead_id": "a"}


def test_limit_problems_without_a_request_id() -> None:
    with TestClient(make_app(request_id=False)) as c:
        response = c.post("/v1/score", content="x" * (LIMIT + 1), headers=JSON)
        assert problem(response, 413) == {k: v for k, v in TOO_LARGE.items() if k != "request_id"}
        response = c.post("/v1/score", content="{}", headers={"content-type": "text/csv"})
        assert "request_id" not in problem(response, 415)


def test_streamed_overflow_stops_reading_and_replaces_the_answer() -> None:
    """At the ASGI level: the first chunk over the limit is the last one read."""
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 500, "more_body": reads < 100}

    async def send(message: Any) -> None:
        sent.append(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception:
            # An app that swallows the error and answers anyway: its answer is dropped.
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"parse error"})

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/score",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "state": {"request_id": RID},
    }
    asyncio.run(BodyLimits(app, max_body_bytes=LIMIT)(scope, receive, send))
    assert reads == LIMIT // 500 + 1
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 413
    assert (b"content-type", PROBLEM_JSON.encode()) in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == TOO_LARGE


def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def nothing() -> dict[str, Any]:
        raise AssertionError("not read")

    async def ignore(message: Any) -> None:
        raise AssertionError("not sent")

    asyncio.run(BodyLimits(app, max_body_bytes=1)({"type": "lifespan"}, nothing, ignore))
    assert seen == ["lifespan"]


# --------------------------------------------------------------------------- invalid values


def test_unknown_field(client: TestClient) -> None:
    response = post(client, "/v1/score", '{"lead_id": "a", "favourite": "' + MARKER + '"}')
    assert problem(response, 422) == validation(("body", "contains an unknown field"))


def test_numbers_as_strings(client: TestClient) -> None:
    body = '{"lead_id": "a", "company_size": "12", "annual_revenue": "' + MARKER + '"}'
    assert problem(post(client, "/v1/score", body), 422) == validation(
        ("company_size", "must be a number"), ("annual_revenue", "must be a number")
    )


def test_nan_literal(client: TestClient) -> None:
    body = '{"lead_id": "a", "company_size": NaN, "annual_revenue": -Infinity}'
    assert problem(post(client, "/v1/score", body), 422) == validation(
        ("company_size", "must not be NaN or infinite"),
        ("annual_revenue", "must not be NaN or infinite"),
    )


def test_nan_in_an_unknown_field(client: TestClient) -> None:
    body = '{"lead_id": "a", "score_hint": NaN}'
    assert problem(post(client, "/v1/score", body), 422) == validation(
        ("body", "contains an unknown field")
    )


def test_lone_surrogate(client: TestClient) -> None:
    body = '{"lead_id": "a", "industry": "\\ud800' + MARKER + '"}'
    assert problem(post(client, "/v1/score", body), 422) == validation(
        ("industry", "must be valid Unicode text")
    )


def test_lone_surrogate_as_a_key_is_not_echoed(client: TestClient) -> None:
    body = '{"lead_id": "a", "\\ud800' + MARKER + '": 1}'
    assert problem(post(client, "/v1/score", body), 422) == validation(
        ("body", "must be valid Unicode text")
    )


def test_bounds_lengths_booleans_and_times(client: TestClient) -> None:
    body = (
        '{"lead_id": "1; DROP TABLE leads", "company_size": 600000, "annual_revenue": -1,'
        ' "industry": "' + MARKER * 20 + '", "business_email": "yes",'
        ' "as_of": "2025-03-20T12:00:00", "created_at": "' + MARKER + '",'
        ' "actions": [{"type": "webinar", "at": "2025-03-20T12:00:00Z", "by": "x"}, 3]}'
    )
    assert problem(post(client, "/v1/score", body), 422) == validation(
        ("lead_id", "must match the pattern ^[A-Za-z0-9._:@-]+$"),
        ("industry", "text too long (max 200)"),
        ("company_size", "must be at most 500000"),
        ("annual_revenue", "must be at least 0"),
        ("business_email", "must be true or false"),
        ("created_at", "not a valid timestamp"),
        ("as_of", "must include a timezone"),
        ("actions[0]", "contains an unknown field"),
        ("actions[1]", "must be an object"),
    )


def test_missing_and_empty(client: TestClient) -> None:
    body = '{"company_size": 3, "actions": "' + MARKER + '"}'
    assert problem(post(client, "/v1/score", body), 422) == validation(
        ("lead_id", "required"), ("actions", "must be a list")
    )
    assert problem(post(client, "/v1/score", '{"lead_id": ""}'), 422) == validation(
        ("lead_id", "text must not be empty")
    )


def test_batch_paths_name_the_lead(client: TestClient) -> None:
    body = '{"leads": [{"lead_id": "a"}, {"lead_id": "b", "company_size": "' + MARKER + '"}]}'
    assert problem(post(client, "/v1/batch", body), 422) == validation(
        ("leads[1].company_size", "must be a number")
    )
    assert problem(post(client, "/v1/batch", '{"leads": []}'), 422) == validation(
        ("leads", "list must not be empty")
    )
    six = '{"leads": [' + ", ".join(['{"lead_id": "a"}'] * 6) + "]}"
    assert problem(post(client, "/v1/batch", six), 422) == validation(
        ("leads", "list too long (max 5)")
    )


def test_body_not_an_object(client: TestClient) -> None:
    assert problem(post(client, "/v1/score", '["' + MARKER + '"]'), 422) == validation(
        ("body", "must be an object")
    )


# --------------------------------------------------------------------------- routing, routes


def test_not_found(client: TestClient) -> None:
    assert problem(client.get("/nowhere"), 404) == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "Not Found",
        "request_id": RID,
    }


def test_method_not_allowed_keeps_allow_header(client: TestClient) -> None:
    response = client.get("/v1/score")
    assert problem(response, 405) == {
        "type": "about:blank",
        "title": "Method Not Allowed",
        "status": 405,
        "detail": "Method Not Allowed",
        "request_id": RID,
    }
    assert response.headers["allow"] == "POST"


def test_problem_error(client: TestClient) -> None:
    assert problem(client.post("/v1/refuse", headers=JSON), 409) == {
        "type": "/problems/lead-merged",
        "title": "Conflict",
        "status": 409,
        "detail": "This lead was merged into another one.",
        "request_id": RID,
        "errors": [{"field": "lead_id", "problem": "merged"}],
    }


def test_problem_error_5xx_is_logged_without_traceback(
    client: TestClient, caplog: pytest.LogCaptureFixture, log_policy: LogPolicy
) -> None:
    log_policy.expected = True
    assert problem(client.post("/v1/unavailable", headers=JSON), 503) == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "No model is loaded yet.",
        "request_id": RID,
    }
    (record,) = [r for r in caplog.records if r.name.startswith("leadscore")]
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert RID in record.getMessage()


def test_unexpected_exception(
    client: TestClient, caplog: pytest.LogCaptureFixture, log_policy: LogPolicy
) -> None:
    log_policy.expected = True
    response = client.post("/v1/crash", headers=JSON)
    assert problem(response, 500) == {
        "type": "/problems/internal-error",
        "title": "Internal Server Error",
        "status": 500,
        "detail": f"An unexpected error occurred. Quote request id {RID} when reporting it.",
        "request_id": RID,
    }
    assert "RuntimeError" not in response.text and "password" not in response.text
    (record,) = [r for r in caplog.records if r.name.startswith("leadscore")]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert "/v1/crash" in record.getMessage() and RID in record.getMessage()


# --------------------------------------------------------------------------- words


def test_field_paths() -> None:
    assert field_path(("body", "leads", 3, "company_size")) == "leads[3].company_size"
    assert field_path(("body", "actions", 0, "at")) == "actions[0].at"
    assert field_path(("body",)) == "body"
    assert field_path(()) == "body"
    assert field_path(("query", "limit")) == "query.limit"
    assert field_path(("body", "x" * 65)) == "<redacted>"
    assert field_path(("body", "a;b")) == "<redacted>"


def test_words_never_use_the_input() -> None:
    """Every mapped type renders from schema limits alone, even with a hostile ctx."""
    limits = {"ge": 1, "le": 2.5, "gt": 0, "lt": 9, "max_length": 3, "min_length": 2}
    hostile = {"error": MARKER, "input": MARKER, "expected": "'a' or 'b'", **limits}
    for error_type in ERROR_WORDS:
        assert MARKER not in problem_words(error_type, hostile)
    assert problem_words("value_error", hostile) == "invalid value"
    assert problem_words("less_than_equal", {"le": 2.5}) == "must be at most 2.5"
    assert problem_words("less_than_equal", {"le": 1e12}) == "must be at most 1000000000000"
