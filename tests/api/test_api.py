"""The scoring API end to end through the real app: exact statuses and bodies.

Every test builds the app from settings (a local model folder trained on the sample
CRM, a SQLite scoring log in a temporary folder, known keys) and drives it with
Starlette's TestClient, lifespan included, so the model loads and the log commits
exactly as in production.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from models.registry_fetch import local_version
from serving.app import create_app
from serving.settings import ServingSettings

CRM, CRM_ROTATED = "crm-key-1-0123456789abcdef", "crm-key-2-0123456789abcdef"
SALES, ADMIN = "sales-key-1-0123456789abcdef", "admin-key-1-0123456789abcdef"
AS_OF = "2026-03-01T00:00:00Z"


def make_settings(tmp_path: Path, model_dir: Path, **overrides: Any) -> ServingSettings:
    values: dict[str, Any] = {
        "model_uri": str(model_dir),
        "database_url": f"sqlite:///{tmp_path / 'scores.db'}",
        "home": tmp_path,
        "model_cache_dir": tmp_path / "cache",
        "api_keys_crm": [CRM, CRM_ROTATED],
        "api_keys_sales": [SALES],
        "api_keys_admin": [ADMIN],
        "max_batch": 50,
        "model_poll_s": 0.2,
        "docs": "public",
    }
    values.update(overrides)
    return ServingSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path, trained_model_dir: Path) -> ServingSettings:
    return make_settings(tmp_path, trained_model_dir)


@pytest.fixture
def client(settings: ServingSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def lead(lead_id: str = "L-1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "lead_id": lead_id,
        "seniority": "VP",
        "department": "engineering",
        "industry": "software",
        "company_size": 250,
        "annual_revenue": 32_000_000.0,
        "country": "USA",
        "acquisition_source": "referral",
        "business_email": True,
        "created_at": "2026-02-01T09:00:00Z",
        "as_of": AS_OF,
        "actions": [
            {"type": "pricing_page", "at": "2026-02-28T15:02:00Z"},
            {"type": "demo_request", "at": "2026-02-28T15:09:00Z"},
            {"type": "email_open", "at": "2026-02-20T08:00:00Z"},
        ],
    }
    body.update(fields)
    return body


def crm(**extra: str) -> dict[str, str]:
    return {"X-API-Key": CRM, **extra}


def count_rows(settings: ServingSettings, table: str) -> int:
    engine = sa.create_engine(settings.database_url_resolved())
    with engine.connect() as conn:
        n = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
    engine.dispose()
    return n


# -- scoring ---------------------------------------------------------------------------


def test_score_one_lead_returns_every_part_and_is_logged(
    client: TestClient, settings: ServingSettings, trained_model_dir: Path
) -> None:
    response = client.post("/v1/score", json=lead(), headers=crm(**{"X-Request-ID": "req-42"}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "lead_id", "probabilities", "score", "grade", "category", "reasons", "warnings",
        "model", "request_id", "score_id",
    }  # fmt: skip
    assert body["lead_id"] == "L-1"
    assert body["score_id"] == 1  # the scoring log's id: the first score of a new log
    assert body["request_id"] == "req-42" == response.headers["x-request-id"]
    p = body["probabilities"]
    assert set(p) == {"mql", "sql"} and 0 < p["sql"] <= p["mql"] < 1
    assert body["score"] == round(100 * (p["mql"] + p["sql"]) / 2)
    assert body["grade"] in {"A", "B", "C", "D"}
    assert body["category"] in {"sql", "mql", "nurture"}
    assert set(body["reasons"]) == {"positive", "negative"}
    assert all(set(r) == {"field", "effect", "text"} for r in body["reasons"]["positive"])
    assert body["warnings"] == []
    assert body["model"] == {"name": "local", "version": local_version(trained_model_dir)}
    assert count_rows(settings, "scores") == 1


def test_an_unseen_category_is_scored_with_a_warning_naming_the_field(client: TestClient) -> None:
    response = client.post("/v1/score", json=lead(industry="space mining"), headers=crm())
    assert response.status_code == 200
    assert response.json()["warnings"] == [
        "industry: value not among the known levels, scored as '__other__'"
    ]
    assert "space" not in response.text


def test_batch_scores_equal_single_scores_and_commit_together(
    client: TestClient, settings: ServingSettings
) -> None:
    leads = [lead(f"L-{i}", company_size=10 + 40 * i) for i in range(5)]
    batch = client.post("/v1/score/batch", json={"leads": leads}, headers=crm())
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert [r["lead_id"] for r in results] == [f"L-{i}" for i in range(5)]
    assert [r["score_id"] for r in results] == [1, 2, 3, 4, 5]  # in the batch's order
    for i, (one, item) in enumerate(zip(leads, results, strict=True)):
        single = client.post("/v1/score", json=one, headers=crm()).json()
        assert single["probabilities"] == item["probabilities"]
        assert single["reasons"] == item["reasons"]
        assert single["score_id"] == 6 + i
    assert count_rows(settings, "scores") == 10
    assert count_rows(settings, "score_inputs") == 10


def test_rotated_keys_both_work(client: TestClient) -> None:
    for key in (CRM, CRM_ROTATED):
        assert client.post("/v1/score", json=lead(), headers={"X-API-Key": key}).status_code == 200


# -- auth --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "key", "status"),
    [
        ("post", "/v1/score", None, 401),
        ("post", "/v1/score", "not-a-key", 401),
        ("post", "/v1/score", SALES, 403),
        ("post", "/v1/score", ADMIN, 403),
        ("post", "/v1/score/batch", SALES, 403),
        ("post", "/v1/outcomes", SALES, 403),
        ("get", "/v1/leads/ranked", None, 401),
        ("get", "/v1/leads/ranked", CRM, 403),
        ("post", "/admin/reload", CRM, 403),
        ("post", "/admin/reload", SALES, 403),
        ("get", "/v1/model", None, 401),
    ],
)
def test_keys_and_roles(
    client: TestClient, settings: ServingSettings, method: str, path: str, key: str | None,
    status: int,
) -> None:  # fmt: skip
    headers = {"X-API-Key": key} if key else {}
    response = getattr(client, method)(
        path, headers=headers, **({"json": lead()} if method == "post" else {})
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"] == ("Unauthorized" if status == 401 else "Forbidden")
    for secret in (CRM, CRM_ROTATED, SALES, ADMIN, "not-a-key"):
        assert secret not in response.text
    assert count_rows(settings, "scores") == 0


# -- outcomes, ranked leads, model -------------------------------------------------------


def test_outcomes_are_idempotent(client: TestClient, settings: ServingSettings) -> None:
    outcome = {
        "lead_id": "L-1",
        "outcome": "stage_reached",
        "stage": "sql",
        "occurred_at": "2026-03-02T10:00:00Z",
        "idempotency_key": "crm-event-981",
    }
    first = client.post("/v1/outcomes", json=outcome, headers=crm())
    again = client.post("/v1/outcomes", json=outcome, headers=crm())
    assert (first.status_code, again.status_code) == (201, 200)
    known = {"lead_id": "L-1", "idempotency_key": "crm-event-981", "lead_scored": False}
    assert first.json() == {**known, "recorded": True}
    assert again.json() == {**known, "recorded": False}
    assert count_rows(settings, "outcomes") == 1


def test_ranked_leads_are_latest_score_first_filtered_and_paged(client: TestClient) -> None:
    sizes = [5, 50, 500, 5000, 20, 2000]
    scores = {}
    for i, size in enumerate(sizes):
        body = client.post("/v1/score", json=lead(f"L-{i}", company_size=size), headers=crm())
        scores[f"L-{i}"] = body.json()["score"]
    sales = {"X-API-Key": SALES}
    everything = client.get("/v1/leads/ranked", headers=sales).json()
    assert everything["total"] == 6 and everything["next_cursor"] is None
    ranked = [(i["score"], i["lead_id"]) for i in everything["items"]]
    assert ranked == sorted(((s, lid) for lid, s in scores.items()), key=lambda t: (-t[0], t[1]))
    first = client.get("/v1/leads/ranked", params={"limit": 4}, headers=sales).json()
    rest = client.get(
        "/v1/leads/ranked", params={"limit": 4, "cursor": first["next_cursor"]}, headers=sales
    ).json()
    assert [i["lead_id"] for i in first["items"] + rest["items"]] == [lid for _, lid in ranked]
    category = everything["items"][0]["category"]
    only = client.get("/v1/leads/ranked", params={"category": category}, headers=sales).json()
    assert {i["category"] for i in only["items"]} == {category}
    bad = client.get("/v1/leads/ranked", params={"cursor": "%%%"}, headers=sales)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


def test_model_info_lists_version_stages_thresholds_and_bands(client: TestClient) -> None:
    body = client.get("/v1/model", headers={"X-API-Key": SALES}).json()
    assert body["name"] == "local" and body["stages"] == ["mql", "sql"]
    assert set(body["thresholds"]) == {"mql", "sql"}
    assert set(body["grade_bands"]) == {"A", "B", "C"}
    assert body["spec"] == {"name": "sample_crm", "version": 1}
    assert body["source"] == "local"


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "alive"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model"]["name"] == "local"
    client.post("/v1/score", json=lead(), headers=crm())
    text = client.get("/metrics", headers={"X-API-Key": ADMIN}).text
    assert 'leadscore_http_requests_total{route="/v1/score",status="200"}' in text
    assert "leadscore_scores_total{category=" in text
    assert 'leadscore_model_info{name="local"' in text


def test_docs_can_be_switched_off(tmp_path: Path, trained_model_dir: Path) -> None:
    off = make_settings(tmp_path, trained_model_dir, docs="off")
    with TestClient(create_app(off)) as c:
        assert c.get("/docs").status_code == 404
        assert c.get("/openapi.json").status_code == 404
    on = make_settings(tmp_path, trained_model_dir, docs="public")
    with TestClient(create_app(on)) as c:
        schema = c.get("/openapi.json").json()
        assert {"/v1/score", "/v1/score/batch", "/v1/outcomes", "/v1/leads/ranked"} <= set(
            schema["paths"]
        )


def test_not_ready_without_a_model_says_why(tmp_path: Path) -> None:
    missing = make_settings(tmp_path, tmp_path / "no-model-here")
    with TestClient(create_app(missing)) as c:
        assert c.get("/livez").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["title"] == "Not ready"
        assert ready.json()["detail"] == (
            "The model could not be loaded and there is no last known good copy; "
            "the service log says why."
        )
        assert "no-model-here" not in ready.text
        scored = c.post("/v1/score", json=lead(), headers=crm())
        assert scored.status_code == 503


# -- reload ------------------------------------------------------------------------------


def test_reload_swaps_and_a_failed_reload_keeps_the_old_model(
    client: TestClient, settings: ServingSettings, tmp_path: Path
) -> None:
    admin = {"X-API-Key": ADMIN}
    ok = client.post("/admin/reload", headers=admin)
    assert ok.status_code == 200 and ok.json()["name"] == "local"
    settings.model_uri = str(tmp_path / "broken")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text("{not json")
    failed = client.post("/admin/reload", headers=admin)
    assert failed.status_code == 502
    assert failed.json()["title"] == "Reload failed"
    assert "Still serving version" in failed.json()["detail"]
    assert client.post("/v1/score", json=lead(), headers=crm()).status_code == 200


def test_a_second_reload_while_one_runs_gets_409(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    original = store._fetch

    def slow_fetch(uri: str, **options: Any) -> Any:
        time.sleep(0.5)
        return original(uri)

    monkeypatch.setattr(store, "_fetch", slow_fetch)
    admin = {"X-API-Key": ADMIN}
    first: dict[str, int] = {}
    runner = threading.Thread(
        target=lambda: first.setdefault(
            "status", client.post("/admin/reload", headers=admin).status_code
        )
    )
    runner.start()
    time.sleep(0.1)
    second = client.post("/admin/reload", headers=admin)
    runner.join()
    assert second.status_code == 409 and second.json()["title"] == "Reload in progress"
    assert first["status"] == 200


def test_no_request_fails_during_reloads(client: TestClient) -> None:
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            statuses.append(client.post("/v1/score", json=lead(), headers=crm()).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    reloads = [
        client.post("/admin/reload", headers={"X-API-Key": ADMIN}).status_code for _ in range(3)
    ]
    stop.set()
    for t in threads:
        t.join()
    assert reloads == [200, 200, 200]
    assert len(statuses) > 20 and set(statuses) == {200}


def test_a_score_that_cannot_be_stored_is_not_returned(
    client: TestClient, settings: ServingSettings
) -> None:
    client.app.state.scorelog.close()  # type: ignore[attr-defined]  # the database is gone
    response = client.post("/v1/score", json=lead(), headers=crm())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert (body["title"], body["detail"]) == (
        "Scoring log unavailable",
        "The score could not be stored, so it is not returned; retry shortly.",
    )
    assert "probabilities" not in body
    assert count_rows(settings, "scores") == 0


def test_a_lead_without_dates_is_scored_as_of_now(client: TestClient) -> None:
    body = {k: v for k, v in lead().items() if k not in {"created_at", "as_of"}}
    response = client.post("/v1/score", json=body, headers=crm())
    assert response.status_code == 200
    texts = [r["text"] for side in response.json()["reasons"].values() for r in side]
    assert all("nan" not in t for t in texts)


def test_an_idempotency_key_reused_for_another_outcome_is_refused(
    client: TestClient, settings: ServingSettings
) -> None:
    first = {
        "lead_id": "L-1",
        "outcome": "won",
        "occurred_at": "2026-03-02T10:00:00Z",
        "idempotency_key": "crm-event-7",
    }
    assert client.post("/v1/outcomes", json=first, headers=crm()).status_code == 201
    changed = {**first, "outcome": "lost"}
    response = client.post("/v1/outcomes", json=changed, headers=crm())
    assert response.status_code == 409
    assert response.json()["title"] == "Idempotency key reused"
    assert count_rows(settings, "outcomes") == 1
