"""GET /v1/scores/{score_id}: the audit trail, replay, and retention of stored inputs.

In-process (TestClient, lifespan included) on a local model; the registry test (replay
after a promotion and after a rollback) is in ``test_score_replay_registry.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from features.batch import frames_to_records
from features.spec import FeatureSpec
from models.readiness import ReadinessModel
from models.registry_fetch import ModelFetchError, local_version
from scorelog import OutcomeRow, ScoreLog, ScoreRow
from scorelog.history import get_score_detail, iter_scores, pruned_through
from scorelog.inputs import pack_input
from scorelog.retention import prune_inputs
from serving import replay as replays
from serving.app import create_app
from serving.model_store import ModelLoadError
from serving.settings import ServingSettings
from tests.api.test_api import ADMIN, CRM, SALES, crm, lead, make_settings
from tests.scorelog_db import db_url, engine

__all__ = ["db_url", "engine"]  # fixtures used by the tests below

PROBLEM = "application/problem+json"


@pytest.fixture
def settings(tmp_path: Path, trained_model_dir: Path) -> ServingSettings:
    return make_settings(tmp_path, trained_model_dir, max_batch=1000)


@pytest.fixture
def client(settings: ServingSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def sales() -> dict[str, str]:
    return {"X-API-Key": SALES}


def log_of(client: TestClient) -> ScoreLog:
    scorelog: ScoreLog = client.app.state.scorelog  # type: ignore[attr-defined]
    return scorelog


def test_a_score_comes_back_with_its_input_and_replays_identically(
    client: TestClient, trained_model_dir: Path
) -> None:
    sent = client.post("/v1/score", json=lead("L-7"), headers=crm()).json()
    response = client.get(f"/v1/scores/{sent['score_id']}?replay=true", headers=sales())
    assert response.status_code == 200, response.text
    body = response.json()
    model = ReadinessModel.load(trained_model_dir)
    version = local_version(trained_model_dir)
    answer = {k: sent[k] for k in replays.ANSWER_KEYS}
    assert body == {
        "score_id": sent["score_id"],
        "lead_id": "L-7",
        "scored_at": body["scored_at"],
        "request_id": sent["request_id"],
        "model": {"name": "local", "version": version},
        "spec_version": "sample_crm:1",
        "policy_version": model.policy_version,
        "answer": answer,
        "input": {
            "lead_id": "L-7",
            "seniority": "VP",
            "department": "engineering",
            "industry": "software",
            "company_size": 250,
            "annual_revenue": 32_000_000.0,
            "country": "USA",
            "acquisition_source": "referral",
            "business_email": True,
            "created_at": "2026-02-01T09:00:00Z",
            "as_of": "2026-03-01T00:00:00Z",
            "actions": [
                {"type": "pricing_page", "at": "2026-02-28T15:02:00Z"},
                {"type": "demo_request", "at": "2026-02-28T15:09:00Z"},
                {"type": "email_open", "at": "2026-02-20T08:00:00Z"},
            ],
        },
        "input_state": "stored",
        "replay": {
            "answer": answer,
            "model": {"name": "local", "version": version},
            "policy_version": model.policy_version,
            "identical": True,
            "differences": [],
        },
    }
    assert datetime.fromisoformat(body["scored_at"]) <= datetime.now(UTC)
    # the stored input, sent again as a request, is the same score
    again = client.post("/v1/score", json=body["input"], headers=crm()).json()
    assert {k: again[k] for k in replays.ANSWER_KEYS} == answer


def test_a_score_without_as_of_is_pinned_to_its_request_time(client: TestClient) -> None:
    before = datetime.now(UTC)
    sent = client.post("/v1/score", json=lead("L-8", as_of=None), headers=crm()).json()
    body = client.get(f"/v1/scores/{sent['score_id']}?replay=true", headers=sales()).json()
    as_of = datetime.fromisoformat(body["input"]["as_of"])
    assert before <= as_of <= datetime.fromisoformat(body["scored_at"])
    assert body["replay"]["identical"] is True


def test_batch_scores_carry_their_ids_and_replay(client: TestClient) -> None:
    leads = [lead(f"B-{i}", company_size=5 + 90 * i) for i in range(4)]
    results = client.post("/v1/score/batch", json={"leads": leads}, headers=crm()).json()["results"]
    for item in results:
        got = client.get(f"/v1/scores/{item['score_id']}?replay=true", headers={"X-API-Key": ADMIN})
        assert got.status_code == 200
        assert got.json()["lead_id"] == item["lead_id"]
        assert got.json()["replay"]["identical"] is True


def test_a_thousand_stored_scores_replay_byte_identically(
    client: TestClient,
    sample_tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    sample_spec: FeatureSpec,
    trained_model_dir: Path,
) -> None:
    leads, actions, _ = sample_tables
    leads = leads.head(1000)
    as_of = pd.to_datetime(leads["created_at"], utc=True) + pd.Timedelta(days=12)
    records = frames_to_records(sample_spec, leads, actions, as_of=as_of)
    body = [{k: v for k, v in r.items() if v is not None} for r in records]
    response = client.post("/v1/score/batch", json={"leads": body}, headers=crm())
    assert response.status_code == 200, response.text[:300]
    sent = {r["score_id"]: r for r in response.json()["results"]}
    model = ReadinessModel.load(trained_model_dir)
    replayed = 0
    for page in iter_scores(log_of(client).engine, batch_size=250):
        for logged in page:
            assert logged.record is not None
            answer = replays.rescore(model, logged.record, reasons=3)
            original = {k: sent[logged.score_id][k] for k in replays.ANSWER_KEYS}
            assert _bytes(answer) == _bytes(original)
            replayed += 1
    assert replayed == 1000


def _bytes(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, sort_keys=True).encode()


# --- what cannot be shown or replayed -------------------------------------------------


@pytest.mark.parametrize(
    ("key", "status"), [(None, 401), (CRM, 403), ("not-a-key-0123456789abcdef", 401)]
)
def test_only_sales_and_admin_keys_read_the_audit_trail(
    client: TestClient, key: str | None, status: int
) -> None:
    response = client.get("/v1/scores/1", headers={"X-API-Key": key} if key else {})
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == status


def test_an_unknown_score_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/v1/scores/424242?replay=true", headers=sales())
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body == {
        "type": "/problems/score-not-found",
        "title": "Score not found",
        "status": 404,
        "detail": "No score with this id.",
        "request_id": body["request_id"],
    }


@pytest.mark.parametrize("bad", ["abc", "0", "-3", "99999999999999999999"])
def test_a_score_id_that_is_not_one_is_a_422_naming_it(client: TestClient, bad: str) -> None:
    response = client.get(f"/v1/scores/{bad}", headers=sales())
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == ["path.score_id"]
    assert bad not in errors[0]["problem"]  # the value is never echoed


def test_a_pruned_input_is_a_410_and_the_score_stays(client: TestClient) -> None:
    sent = client.post("/v1/score", json=lead("L-9"), headers=crm()).json()
    engine = log_of(client).engine
    assert prune_inputs(engine, older_than=datetime.now(UTC) + timedelta(days=1)) == 1
    shown = client.get(f"/v1/scores/{sent['score_id']}", headers=sales()).json()
    assert (shown["input"], shown["input_state"]) == (None, "pruned")
    assert shown["answer"]["score"] == sent["score"]
    response = client.get(f"/v1/scores/{sent['score_id']}?replay=true", headers=sales())
    assert response.status_code == 410
    assert response.json()["type"] == "/problems/input-pruned"
    assert response.json()["detail"] == (
        "This score's input was pruned by retention (LEADSCORE_INPUT_RETENTION_DAYS), so it "
        "cannot be replayed; the score itself is kept."
    )


def _unstored_row(version: str, *, name: str = "local") -> ScoreRow:
    return ScoreRow(
        request_id="r-1",
        lead_id="L-old",
        scored_at=datetime(2026, 1, 5, tzinfo=UTC),
        model_name=name,
        model_version=version,
        probabilities={"mql": 0.5, "sql": 0.2},
        score=35,
        grade="C",
        category="nurture",
        reasons={},
        warnings=[],
        acquisition_source=None,
    )


def test_a_score_logged_without_its_input_is_a_409(client: TestClient) -> None:
    (score_id,) = asyncio.run(log_of(client).record_scores([_unstored_row("x")]))
    shown = client.get(f"/v1/scores/{score_id}", headers=sales()).json()
    assert (shown["input_state"], shown["spec_version"], shown["policy_version"]) == (
        "not_stored",
        None,
        None,
    )
    assert shown["answer"]["reasons"] == {"positive": [], "negative": []}
    response = client.get(f"/v1/scores/{score_id}?replay=true", headers=sales())
    assert response.status_code == 409
    assert response.json()["detail"] == (
        "This score was logged without its input (before inputs were kept, or by batch "
        "scoring), so it cannot be replayed."
    )


def _with_input(client: TestClient, version: str, name: str = "local") -> int:
    """A logged score with a real stored input, said to be made by ``name`` ``version``."""
    sent = client.post("/v1/score", json=lead("L-v"), headers=crm()).json()
    detail = get_score_detail(log_of(client).engine, sent["score_id"])
    assert detail is not None and detail.score.record is not None
    spec = client.app.state.spec  # type: ignore[attr-defined]
    row = ScoreRow(
        **{
            **_unstored_row(version, name=name).__dict__,
            "input": pack_input(detail.score.record, spec),
            "spec_version": "sample_crm:1",
        }
    )
    (score_id,) = asyncio.run(log_of(client).record_scores([row]))
    return int(score_id)


def test_a_version_that_cannot_be_loaded_is_a_409_not_a_500(client: TestClient) -> None:
    score_id = _with_input(client, "not-served")
    response = client.get(f"/v1/scores/{score_id}?replay=true", headers=sales())
    assert response.status_code == 409
    assert response.json()["detail"] == (
        "Model version not-served can no longer be loaded (it is not in the registry this "
        "service uses, or it fails its checks), so this score cannot be replayed."
    )
    other = _with_input(client, "1", name="another-model")
    response = client.get(f"/v1/scores/{other}?replay=true", headers=sales())
    assert response.status_code == 409
    assert response.json()["detail"] == (
        "This score was made by model 'another-model'; this service serves 'local'."
    )


def test_a_registry_outage_during_replay_is_a_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    score_id = _with_input(client, "7")

    def down(version: str) -> None:
        raise ModelLoadError("registry down", kind="fetch") from ModelFetchError("refused")

    monkeypatch.setattr(client.app.state.store, "model_version", down)  # type: ignore[attr-defined]
    response = client.get(f"/v1/scores/{score_id}?replay=true", headers=sales())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"] == (
        "Model version 7 could not be fetched from the registry right now; retry shortly."
    )


# --- retention ------------------------------------------------------------------------


def test_retention_prunes_old_inputs_in_batches_and_keeps_scores_and_outcomes(
    engine: Engine,
) -> None:
    log = ScoreLog(engine)
    log.start()
    now = datetime(2026, 6, 1, tzinfo=UTC)
    try:
        rows = [
            ScoreRow(
                **{
                    **_unstored_row("1").__dict__,
                    "lead_id": f"L{i}",
                    "scored_at": now - timedelta(days=10 - i),
                    "spec_version": "sample_crm:1",
                    "input": f"input-{i}".encode(),
                }
            )
            for i in range(7)
        ]
        asyncio.run(log.record_scores(rows))
        log.record_outcome(OutcomeRow("L0", "won", None, now - timedelta(days=9), None, "k-1"))
    finally:
        log.close()
    cutoff = now - timedelta(days=5)  # the first five scores (days 10..6 ago) are past it
    assert pruned_through(engine) is None
    assert [prune_inputs(engine, older_than=cutoff, batch_size=2) for _ in range(4)] == [
        2,
        2,
        1,
        0,
    ]
    assert pruned_through(engine) == 5
    states = [get_score_detail(engine, i) for i in range(1, 8)]
    assert [s.input_state if s else None for s in states] == ["pruned"] * 5 + ["damaged"] * 2
    assert all(s is not None and s.score.score == 35 for s in states)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM outcomes").scalar() == 1


def test_the_service_prunes_on_its_own(tmp_path: Path, trained_model_dir: Path) -> None:
    settings = make_settings(
        tmp_path, trained_model_dir, input_retention_days=30, input_prune_every_s=0.2,
        input_prune_batch=2,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        engine = log_of(client).engine
        old = ScoreRow(
            **{
                **_unstored_row("1").__dict__,
                "scored_at": datetime.now(UTC) - timedelta(days=31),
                "spec_version": "sample_crm:1",
                "input": b"\x01",
            }
        )
        assert asyncio.run(log_of(client).record_scores([old] * 5)) == [1, 2, 3, 4, 5]
        fresh = client.post("/v1/score", json=lead("L-new"), headers=crm()).json()
        deadline = time.monotonic() + 10
        while pruned_through(engine) != 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        # the five old inputs went, in batches of two; the fresh score keeps its input
        assert pruned_through(engine) == 5
        states = [get_score_detail(engine, i) for i in (1, 5, fresh["score_id"])]
        assert [s.input_state if s else None for s in states] == ["pruned", "pruned", "stored"]
