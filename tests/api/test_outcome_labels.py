"""Outcomes as labels: rejection reasons from the API and the board, and the bad inputs.

Decisions tested here (and documented in README "The learning loop"):

* an outcome for a lead never scored is **accepted** (201, ``lead_scored: false``): the
  CRM's events and its scoring calls arrive in any order, so refusing would lose real
  labels; training from the log joins outcomes to scores that came before them anyway;
* an outcome dated before the lead's first score is accepted too (real history);
* one dated before the lead was created (its ``created_at`` as scored) is a 422;
* the same event sent again is idempotent (200); the same event with another reason is
  a 409 naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scorelog.history import iter_outcomes
from serving.app import create_app
from serving.board_chart import score_chart
from serving.settings import ServingSettings
from tests.api.test_api import count_rows, crm, lead, make_settings
from tests.api.test_board import form_fields, post_outcome, score_row, seed, sign_in

PROBLEM = "application/problem+json"


@pytest.fixture
def settings(tmp_path: Path, trained_model_dir: Path) -> ServingSettings:
    return make_settings(tmp_path, trained_model_dir)


@pytest.fixture
def client(settings: ServingSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def rejection(**fields: Any) -> dict[str, Any]:
    body = {
        "lead_id": "L-1",
        "outcome": "disqualified",
        "reason": "bad_timing",
        "occurred_at": "2026-03-02T10:00:00Z",
    }
    return body | fields


def post(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/v1/outcomes", json=body, headers=crm())


def test_a_rejection_with_its_reason_is_a_label(
    client: TestClient, settings: ServingSettings
) -> None:
    client.post("/v1/score", json=lead("L-1"), headers=crm())
    response = post(client, rejection())
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "lead_id": "L-1",
        "recorded": True,
        "idempotency_key": body["idempotency_key"],
        "lead_scored": True,
    }
    engine = client.app.state.scorelog.engine  # type: ignore[attr-defined]
    [label] = list(iter_outcomes(engine))
    assert (label.lead_id, label.outcome, label.reason) == ("L-1", "disqualified", "bad_timing")
    assert label.occurred_at == datetime(2026, 3, 2, 10, tzinfo=UTC)


def test_the_reason_vocabulary_is_in_the_openapi_schema(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["OutcomeIn"]
    reason = schema["properties"]["reason"]
    assert reason["anyOf"][0]["enum"] == [
        "not_a_fit",
        "bad_timing",
        "wrong_contact",
        "duplicate",
        "spam",
    ]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"reason": "too_expensive"}, None),
        ({"outcome": "won"}, "only allowed when outcome is disqualified or lost"),
        ({"outcome": "contacted"}, "only allowed when outcome is disqualified or lost"),
    ],
)
def test_a_reason_outside_the_vocabulary_or_with_another_outcome_is_a_422(
    client: TestClient, settings: ServingSettings, change: dict[str, str], problem: str | None
) -> None:
    response = post(client, rejection(**change))
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    [error] = response.json()["errors"]
    assert error["field"] == "reason"
    if problem is not None:
        assert error["problem"] == problem
    assert "too_expensive" not in response.text
    assert count_rows(settings, "outcomes") == 0


def test_a_lost_deal_may_carry_a_reason(client: TestClient) -> None:
    assert post(client, rejection(outcome="lost", reason="not_a_fit")).status_code == 201


def test_an_outcome_for_a_lead_never_scored_is_kept_for_later(
    client: TestClient, settings: ServingSettings
) -> None:
    response = post(client, rejection(lead_id="L-unknown"))
    assert response.status_code == 201
    assert response.json()["lead_scored"] is False
    assert count_rows(settings, "outcomes") == 1


def test_an_outcome_before_the_lead_existed_is_refused(
    client: TestClient, settings: ServingSettings
) -> None:
    client.post("/v1/score", json=lead("L-1"), headers=crm())  # created 2026-02-01 09:00
    response = post(client, rejection(occurred_at="2026-02-01T08:59:59Z"))
    assert response.status_code == 422
    body = response.json()
    assert body == {
        "type": "about:blank",
        "title": "Outcome before the lead existed",
        "status": 422,
        "detail": "The outcome is dated before the lead was created (its created_at when it "
        "was scored); nothing was recorded.",
        "request_id": body["request_id"],
        "errors": [{"field": "occurred_at", "problem": "before the lead was created"}],
    }
    assert count_rows(settings, "outcomes") == 0
    # after creation but before the first score (2026-03-01 as of, scored now): real history
    early = post(client, rejection(occurred_at="2026-02-01T09:00:00Z"))
    assert (early.status_code, early.json()["lead_scored"]) == (201, True)


def test_a_duplicate_is_idempotent_and_another_reason_is_a_conflict(
    client: TestClient, settings: ServingSettings
) -> None:
    first = post(client, rejection())
    again = post(client, rejection(note="called twice"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["recorded"] is False
    response = post(client, rejection(reason="spam"))
    assert response.status_code == 409
    body = response.json()
    assert body == {
        "type": "about:blank",
        "title": "Conflicting outcome",
        "status": 409,
        "detail": "This outcome of this lead at this time is already recorded with another "
        "reason; nothing was recorded. An outcome's reason cannot be changed by sending it "
        "again.",
        "request_id": body["request_id"],
        "errors": [{"field": "reason", "problem": "differs from the recorded outcome"}],
    }
    keyed = rejection(idempotency_key="crm-77")
    assert post(client, keyed).status_code == 201
    assert post(client, keyed | {"reason": "spam"}).json()["title"] == "Idempotency key reused"
    assert count_rows(settings, "outcomes") == 2


# --- the board ------------------------------------------------------------------------


def test_the_lead_page_rejects_with_a_reason_and_charts_the_history(client: TestClient) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    seed(client, [score_row("L-5", 30, grade="C", at=now - timedelta(days=6))])
    seed(client, [score_row("L-5", 62, grade="B", at=now - timedelta(days=3))])
    seed(client, [score_row("L-5", 81, grade="A", category="sql", at=now - timedelta(days=1))])
    sign_in(client)
    page = client.get("/board/leads/L-5").text
    svg = re.search(r"<svg .*?</svg>", page, re.S)
    assert svg is not None
    points = re.findall(r'<circle class="point" cx="([\d.]+)" cy="([\d.]+)"', svg.group(0))
    assert [float(y) for _, y in points] == [124.0, 72.8, 42.4]  # 30, 62, 81 of 0-100
    assert [float(x) for x, _ in points] == sorted(float(x) for x, _ in points)
    assert "3 scores from" in svg.group(0) and "from 30 to 81 (grade A)" in svg.group(0)
    assert len(re.findall(r'<line class="band"', svg.group(0))) == 3  # the served model's bands

    fields = form_fields(page)
    status, location = post_outcome(
        client, "L-5", fields, outcome="disqualified", reason="wrong_contact"
    )
    assert (status, location) == (
        303,
        "/board/leads/L-5?result=recorded&outcome=disqualified&reason=wrong_contact",
    )
    page = client.get(location or "").text
    assert "Outcome recorded: disqualified (wrong contact)." in page
    assert re.search(r'<line class="marker rejected"', page)
    log = client.app.state.scorelog  # type: ignore[attr-defined]
    [row] = log.outcomes("L-5")
    assert (row.outcome, row.reason) == ("disqualified", "wrong_contact")


@pytest.mark.parametrize("change", [{"reason": "because"}, {"outcome": "won", "reason": "spam"}])
def test_a_board_rejection_with_a_bad_reason_writes_nothing(
    client: TestClient, change: dict[str, str]
) -> None:
    seed(client, [score_row("L-6", 40)])
    sign_in(client)
    fields = {**form_fields(client.get("/board/leads/L-6").text), "outcome": "disqualified"}
    response = client.post(
        "/board/leads/L-6/outcomes", data=fields | change, follow_redirects=False
    )
    assert response.status_code == 422
    assert "a reason goes with disqualified or lost only" in response.text
    assert "because" not in response.text
    assert client.app.state.scorelog.outcomes("L-6") == []  # type: ignore[attr-defined]


def test_the_chart_of_one_score_sits_in_the_middle_and_nothing_is_no_chart() -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    chart = score_chart([score_row("L-1", 50, at=at)])
    assert chart is not None
    assert [(p.x, p.y, p.score) for p in chart.points] == [(332.0, 92.0, 50)]
    assert chart.description == "One score: 50 (grade B) on 2026-03-01."
    assert chart.bands == [] and chart.markers == []
    assert score_chart([]) is None
