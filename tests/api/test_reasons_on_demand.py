"""?reasons=0..10 per request: the same scores, as many reasons as asked, the rest unchanged."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.api.test_api import client, crm, lead, settings  # noqa: F401  (fixtures)


def _strip(body: dict[str, Any]) -> dict[str, Any]:
    """A body without what differs between two calls (ids) and the reasons themselves."""
    return {k: v for k, v in body.items() if k not in {"request_id", "score_id", "reasons"}}


def test_reasons_count_per_request_single_batch_and_refused(client: TestClient) -> None:  # noqa: F811
    default = client.post("/v1/score", json=lead(), headers=crm()).json()
    assert default["reasons"]["positive"], "the default (3) shows reasons"
    for k in (0, 1, 2, 5):
        response = client.post(f"/v1/score?reasons={k}", json=lead(), headers=crm())
        assert response.status_code == 200, response.text
        body = response.json()
        assert _strip(body) == _strip(default)
        for side in ("positive", "negative"):
            assert len(body["reasons"][side]) <= k
            assert body["reasons"][side] == default["reasons"][side][:k] or k > 3
    none = client.post("/v1/score?reasons=0", json=lead(), headers=crm()).json()
    assert none["reasons"] == {"positive": [], "negative": []}
    batch = {"leads": [lead("L-1"), lead("L-2", company_size=5)]}
    response = client.post("/v1/score/batch?reasons=1", json=batch, headers=crm())
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["lead_id"] for r in results] == ["L-1", "L-2"]
    assert results[0]["reasons"]["positive"] == default["reasons"]["positive"][:1]
    assert all(len(side) <= 1 for r in results for side in r["reasons"].values())
    # A bad count is refused like any bad input: a problem naming the parameter
    # (checked in the same app: each app start checks the model in a subprocess).
    for bad in ("11", "-1", "two", "1.5"):
        response = client.post(f"/v1/score?reasons={bad}", json=lead(), headers=crm())
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert [e["field"] for e in problem["errors"]] == ["query.reasons"], problem
        assert bad not in response.text.replace("reasons=", "")
