"""Thirty bad requests, each with its documented status and whole problem body.

Every case also checks the promises that hold for all of them: the body is
``application/problem+json``, it carries the request id, it never contains the
caller's bad value (a marker string is planted where possible), no traceback, and
nothing was written to the scoring log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.api.test_api import CRM, count_rows, lead, make_settings

MARK = "SECRET-VALUE-123"
VALIDATION = "/problems/validation-error"
MALFORMED = "/problems/malformed-json"


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


def _actions(n: int) -> list[dict[str, str]]:
    return [{"type": "page_view", "at": "2026-02-20T08:00:00Z"}] * n


def invalid(*errors: tuple[str, str]) -> dict[str, Any]:
    """The whole 422 body, but for the request id (checked separately)."""
    fields = {f for f, _ in errors}
    return {
        "type": VALIDATION,
        "title": "Invalid request",
        "status": 422,
        "detail": "1 field is invalid."
        if len(fields) == 1
        else f"{len(fields)} fields are invalid.",
        "errors": [{"field": f, "problem": p} for f, p in errors],
    }


def malformed(detail: str) -> dict[str, Any]:
    return {"type": MALFORMED, "title": "Malformed JSON", "status": 400, "detail": detail}


# (case id, path, raw body, extra headers, expected status, expected body minus request_id)
CASES: list[tuple[str, str, bytes, dict[str, str], int, dict[str, Any]]] = [
    ("malformed", "/v1/score", b'{"lead_id": "L1",', {}, 400,
     malformed(
         "The request body is not valid JSON: expected a property name in double quotes"
         " at line 1, column 18."
     )),
    ("truncated", "/v1/score", _json(lead())[:40], {}, 400, None),
    ("not an object", "/v1/score", b"[1, 2, 3]", {}, 422, invalid(("body", "must be an object"))),
    ("empty body", "/v1/score", b"", {}, 422, invalid(("body", "required"))),
    ("string number", "/v1/score", _json(lead(company_size="250")), {}, 422,
     invalid(("company_size", "must be a number"))),
    ("NaN", "/v1/score", _json(lead()).replace(b'"company_size": 250', b'"company_size": NaN'), {},
     422, invalid(("company_size", "must not be NaN or infinite"))),
    ("Infinity", "/v1/score",
     _json(lead()).replace(b'"annual_revenue": 32000000.0', b'"annual_revenue": Infinity'), {},
     422, invalid(("annual_revenue", "must not be NaN or infinite"))),
    ("negative size", "/v1/score", _json(lead(company_size=-5)), {}, 422,
     invalid(("company_size", "must be at least 1"))),
    ("huge revenue", "/v1/score", _json(lead(annual_revenue=1e15)), {}, 422,
     invalid(("annual_revenue", "must be at most 1000000000000"))),
    ("unknown field", "/v1/score", _json(lead(favourite_colour=MARK)), {}, 422,
     invalid(("body", "contains an unknown field"))),
    ("bool as text", "/v1/score", _json(lead(business_email="yes")), {}, 422,
     invalid(("business_email", "must be true or false"))),
    ("number as category", "/v1/score", _json(lead(industry=7)), {}, 422,
     invalid(("industry", "must be a string"))),
    ("too long text", "/v1/score", _json(lead(industry=MARK * 30)), {}, 422,
     invalid(("industry", "text too long (max 200)"))),
    ("sql id", "/v1/score", _json(lead(lead_id="1; DROP TABLE scores;--")), {}, 422,
     invalid(("lead_id", "must match the pattern ^[A-Za-z0-9._:@-]+$"))),
    ("empty id", "/v1/score", _json(lead(lead_id="")), {}, 422,
     invalid(("lead_id", "text must not be empty"))),
    ("missing id", "/v1/score", _json({k: v for k, v in lead().items() if k != "lead_id"}), {},
     422, invalid(("lead_id", "required"))),
    ("naive timestamp", "/v1/score", _json(lead(as_of="2026-03-01T00:00:00")), {}, 422,
     invalid(("as_of", "must include a timezone"))),
    ("bad timestamp", "/v1/score", _json(lead(created_at=MARK)), {}, 422,
     invalid(("created_at", "not a valid timestamp"))),
    ("action unknown key", "/v1/score",
     _json(lead(actions=[{"type": "page_view", "at": "2026-02-20T08:00:00Z", "x": MARK}])), {},
     422, invalid(("actions[0]", "contains an unknown field"))),
    ("too many actions", "/v1/score", _json(lead(actions=_actions(1001))), {}, 422,
     invalid(("actions", "list too long (max 1000)"))),
    ("odd unicode", "/v1/score", b'{"lead_id": "L1", "industry": "\\ud800' + MARK.encode() + b'"}',
     {}, 422, invalid(("industry", "must be valid Unicode text"))),
    ("not utf-8", "/v1/score", b'{"lead_id": "L1", "industry": "\xff\xfe"}', {}, 400, None),
    ("wrong content type", "/v1/score", _json(lead()), {"Content-Type": "text/plain"}, 415, None),
    ("huge body", "/v1/score", _json(lead(note="x" * 300_000)), {}, 413, None),
    ("empty batch", "/v1/score/batch", _json({"leads": []}), {}, 422,
     invalid(("leads", "list must not be empty"))),
    ("oversized batch", "/v1/score/batch", _json({"leads": [lead(f"L{i}") for i in range(51)]}),
     {}, 422, invalid(("leads", "list too long (max 50)"))),
    ("one bad lead in a batch", "/v1/score/batch",
     _json({"leads": [lead("L0"), lead("L1"), lead("L2", company_size="big")]}), {}, 422,
     invalid(("leads[2].company_size", "must be a number"))),
    ("outcome unknown kind", "/v1/outcomes",
     _json({"lead_id": "L1", "outcome": "bought_a_boat", "occurred_at": "2026-03-01T00:00:00Z"}),
     {}, 422, None),
    ("outcome stage missing", "/v1/outcomes",
     _json({"lead_id": "L1", "outcome": "stage_reached", "occurred_at": "2026-03-01T00:00:00Z"}),
     {}, 422, invalid(("stage", "required when outcome is stage_reached"))),
    ("outcome in the future", "/v1/outcomes",
     _json({"lead_id": "L1", "outcome": "won", "occurred_at": "2199-01-01T00:00:00Z"}), {}, 422,
     invalid(("occurred_at", "must not be more than 1 day in the future"))),
]  # fmt: skip


@pytest.fixture(scope="module")
def app_and_settings(
    tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> Iterator[tuple[TestClient, Any]]:
    settings = make_settings(
        tmp_path_factory.mktemp("bad"), trained_model_dir, max_body_bytes=200_000
    )
    with TestClient(create_app(settings)) as client:
        yield client, settings


@pytest.mark.parametrize(
    ("path", "raw", "headers", "status", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_request_gets_its_status_and_problem_body_and_writes_nothing(
    app_and_settings: tuple[TestClient, Any],
    caplog: pytest.LogCaptureFixture,
    path: str,
    raw: bytes,
    headers: dict[str, str],
    status: int,
    expected: dict[str, Any] | None,
) -> None:
    client, settings = app_and_settings
    sent = {"X-API-Key": CRM, "Content-Type": "application/json", **headers}
    response = client.post(path, content=raw, headers=sent)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body.pop("request_id") == response.headers["x-request-id"]
    if expected is not None:
        assert body == expected
    else:
        assert body["status"] == status and body["title"] and body["detail"]
    assert MARK not in response.text and "Traceback" not in response.text
    assert count_rows(settings, "scores") == 0
    assert count_rows(settings, "outcomes") == 0
    assert not [r for r in caplog.records if r.levelname in {"WARNING", "ERROR"}]


def test_every_case_is_a_different_request() -> None:
    """A copied case tests nothing new: no two cases send the same path, body and headers."""
    requests = {(c[1], c[2], tuple(sorted(c[3].items()))) for c in CASES}
    assert len(requests) == len(CASES) >= 25
