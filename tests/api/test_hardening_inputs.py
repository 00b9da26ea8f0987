"""Issue #13, inputs: every value the API accepts can be stored and scored; the rest is a 422.

One regression test per case of the issue, each with the exact status and body, through
the real app (local model, SQLite log, TestClient with its lifespan).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ServingSettings
from tests.api.test_api import CRM, SALES, count_rows, crm, lead, make_settings

NUL = "a\x00b"
OUT_OF_RANGE = "must be between 1900-01-01 and 2199-12-31 (UTC)"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path) -> ServingSettings:
    return make_settings(tmp_path_factory.mktemp("inputs"), trained_model_dir)


@pytest.fixture(scope="module")
def client(settings: ServingSettings) -> Any:
    with TestClient(create_app(settings)) as c:
        yield c


def invalid(*errors: tuple[str, str], request_id: str) -> dict[str, Any]:
    fields = len({f for f, _ in errors})
    return {
        "type": "/problems/validation-error",
        "title": "Invalid request",
        "status": 422,
        "detail": "1 field is invalid." if fields == 1 else f"{fields} fields are invalid.",
        "request_id": request_id,
        "errors": [{"field": f, "problem": p} for f, p in errors],
    }


def post_raw(client: TestClient, path: str, body: str, key: str = CRM) -> Any:
    headers = {"X-API-Key": key, "Content-Type": "application/json", "X-Request-ID": "req-1"}
    return client.post(path, content=body.encode("utf-8", "surrogatepass"), headers=headers)


def outcome(**fields: Any) -> dict[str, Any]:
    body = {"lead_id": "L-1", "outcome": "won", "occurred_at": "2026-03-02T10:00:00Z"}
    return body | fields


# -- text the database cannot store (issue case 2) -----------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/score", lead(seniority=NUL), "seniority"),
        ("/v1/score", lead(department=NUL), "department"),
        ("/v1/score", lead(industry=NUL), "industry"),
        ("/v1/score", lead(country=NUL), "country"),
        ("/v1/score", lead(acquisition_source=NUL), "acquisition_source"),
        (
            "/v1/score",
            lead(actions=[{"type": NUL, "at": "2026-02-28T15:02:00Z"}]),
            "actions[0].type",
        ),
        ("/v1/score/batch", {"leads": [lead("L-2"), lead(industry=NUL)]}, "leads[1].industry"),
        ("/v1/outcomes", outcome(note=NUL), "note"),
    ],
    ids=lambda v: v if isinstance(v, str) and not v.startswith("/") else None,
)
def test_nul_is_refused_in_every_string_field(
    client: TestClient, settings: ServingSettings, path: str, body: dict[str, Any], field: str
) -> None:
    before = count_rows(settings, "scores"), count_rows(settings, "outcomes")
    response = post_raw(client, path, json.dumps(body))
    assert response.status_code == 422
    assert response.json() == invalid(
        (field, "must not contain NUL characters"), request_id="req-1"
    )
    assert (count_rows(settings, "scores"), count_rows(settings, "outcomes")) == before


def test_a_lone_surrogate_is_refused(client: TestClient) -> None:
    body = json.dumps(lead()).replace('"software"', '"soft\\ud800ware"')
    response = post_raw(client, "/v1/score", body)
    assert response.status_code == 422
    assert response.json() == invalid(
        ("industry", "must be valid Unicode text"), request_id="req-1"
    )
    note = json.dumps(outcome()).replace('"won"', '"won", "note": "\\udfff"')
    response = post_raw(client, "/v1/outcomes", note)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "note", "problem": "must be valid Unicode text"}]


def test_nul_in_a_cursor_is_refused(client: TestClient) -> None:
    cursor = base64.urlsafe_b64encode(b"50:L\x001").decode().rstrip("=")
    response = client.get(
        "/v1/leads/ranked", params={"cursor": cursor}, headers={"X-API-Key": SALES}
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "cursor", "problem": "not a cursor from this API"}
    ]


# -- the calendar's edges (issue case 3) --------------------------------------------------

EDGES = [
    "0001-01-01T00:00:00+01:00",  # year 1 with a positive offset: before year 1 in UTC
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
    "1899-12-31T23:59:59Z",
    "2200-01-01T00:00:00Z",
]


@pytest.mark.parametrize("stamp", EDGES)
@pytest.mark.parametrize("where", ["as_of", "created_at", "actions[0].at"])
def test_timestamps_at_the_calendars_edges_are_a_422(
    client: TestClient, stamp: str, where: str
) -> None:
    body = lead()
    if where == "actions[0].at":
        body["actions"] = [{"type": "pricing_page", "at": stamp}]
    else:
        body[where] = stamp
    response = post_raw(client, "/v1/score", json.dumps(body))
    assert response.status_code == 422
    assert response.json() == invalid((where, OUT_OF_RANGE), request_id="req-1")


@pytest.mark.parametrize("stamp", EDGES[:3])
def test_an_outcome_at_the_calendars_edges_is_a_422(client: TestClient, stamp: str) -> None:
    response = post_raw(client, "/v1/outcomes", json.dumps(outcome(occurred_at=stamp)))
    assert response.status_code == 422
    assert response.json() == invalid(("occurred_at", OUT_OF_RANGE), request_id="req-1")


def test_the_range_ends_are_accepted_and_offsets_normalised(client: TestClient) -> None:
    early = lead(created_at="1900-01-01T00:00:00Z", as_of="2026-03-01T00:00:00Z")
    assert post_raw(client, "/v1/score", json.dumps(early)).status_code == 200
    utc = client.post("/v1/score", json=lead(as_of="2026-03-01T00:00:00Z"), headers=crm())
    shifted = client.post("/v1/score", json=lead(as_of="2026-03-01T02:00:00+02:00"), headers=crm())
    assert utc.status_code == shifted.status_code == 200
    assert utc.json()["probabilities"] == shifted.json()["probabilities"]


# -- cursors and integer ranges (issue case 3) ---------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"99999999999999999999999:L-1",  # OverflowError on SQLite, out of range on PostgreSQL
        b"-1:L-1",
        b"101:L-1",
        b"+5:L-1",
        b"05:L-1",
        b"50:" + b"x" * 129,
        b"50:1; DROP TABLE scores",
    ],
)
def test_a_cursor_out_of_range_is_a_422(client: TestClient, raw: bytes) -> None:
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = client.get(
        "/v1/leads/ranked",
        params={"cursor": cursor},
        headers={"X-API-Key": SALES, "X-Request-ID": "req-2"},
    )
    assert response.status_code == 422
    assert response.json() == {
        "type": "about:blank",
        "title": "Invalid cursor",
        "status": 422,
        "detail": "Use the next_cursor value from the previous page as it is.",
        "request_id": "req-2",
        "errors": [{"field": "cursor", "problem": "not a cursor from this API"}],
    }


def test_a_huge_limit_is_a_422_not_a_500(client: TestClient) -> None:
    response = client.get(
        "/v1/leads/ranked", params={"limit": 10**30}, headers={"X-API-Key": SALES}
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "query.limit", "problem": "must be at most 500"}]


# -- the small gaps of case 7 --------------------------------------------------------------


def test_a_fraction_in_a_whole_number_field_is_a_422(client: TestClient) -> None:
    response = post_raw(client, "/v1/score", json.dumps(lead(company_size=1.5)))
    assert response.status_code == 422
    assert response.json() == invalid(
        ("company_size", "must be a whole number"), request_id="req-1"
    )
    assert post_raw(client, "/v1/score", json.dumps(lead(company_size=250.0))).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/score",
            '{"lead_id": "L-1", "company_size": 10, "company_size": 5000}',
            "company_size",
        ),
        (
            "/v1/score",
            '{"lead_id": "L-1", "actions": [{"type": "webinar", "type": "demo_request",'
            ' "at": "2026-02-28T15:02:00Z"}]}',
            "actions[0].type",
        ),
        (
            "/v1/score/batch",
            '{"leads": [{"lead_id": "L-1"}, {"lead_id": "L-2", "lead_id": "L-3"}]}',
            "leads[1].lead_id",
        ),
        (
            "/v1/outcomes",
            '{"lead_id": "L-1", "outcome": "won", "outcome": "lost",'
            ' "occurred_at": "2026-03-02T10:00:00Z"}',
            "outcome",
        ),
    ],
)
def test_a_duplicate_json_key_is_a_422_naming_it(
    client: TestClient, settings: ServingSettings, path: str, body: str, field: str
) -> None:
    before = count_rows(settings, "scores")
    response = post_raw(client, path, body)
    assert response.status_code == 422
    assert response.json() == invalid(
        (field, "appears more than once in its object"), request_id="req-1"
    )
    assert count_rows(settings, "scores") == before


def test_an_outcome_retried_with_only_a_corrected_note_is_the_same_event(
    client: TestClient, settings: ServingSettings
) -> None:
    first = client.post("/v1/outcomes", json=outcome(lead_id="L-note", note="cals"), headers=crm())
    again = client.post("/v1/outcomes", json=outcome(lead_id="L-note", note="calls"), headers=crm())
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {
        "lead_id": "L-note",
        "recorded": False,
        "idempotency_key": first.json()["idempotency_key"],
        "lead_scored": False,
    }
    keyed = outcome(lead_id="L-note", idempotency_key="crm-evt-7", note="one")
    assert client.post("/v1/outcomes", json=keyed, headers=crm()).status_code == 201
    changed = client.post("/v1/outcomes", json=keyed | {"note": "two"}, headers=crm())
    assert changed.status_code == 200 and changed.json()["recorded"] is False
    other = client.post("/v1/outcomes", json=keyed | {"outcome": "lost"}, headers=crm())
    assert other.status_code == 409
    assert other.json()["title"] == "Idempotency key reused"


def test_an_unknown_field_never_repeats_the_callers_key(client: TestClient) -> None:
    secret = "sk_live_abcdefghijklmnopqrstuvwxyz"
    body = json.dumps(lead() | {secret: 1, "actions": [{"type": "webinar",
                      "at": "2026-02-28T15:02:00Z", secret: 2}]})  # fmt: skip
    response = post_raw(client, "/v1/score", body)
    assert response.status_code == 422
    assert response.json() == invalid(
        ("actions[0]", "contains an unknown field"),
        ("body", "contains an unknown field"),
        request_id="req-1",
    )
    assert secret not in response.text
