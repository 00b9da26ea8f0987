"""Replay pins the model version: after a promotion and after a rollback, every stored score
is rescored by the version that produced it, and gives its answer again, byte for byte.

Two registered versions that really disagree: version 2 is version 1 with another policy
(every threshold and grade band moved), so a replay by the wrong version would change
grades and categories, and the test would see it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from fastapi.testclient import TestClient

from models.golden import write_golden
from models.readiness import ReadinessModel
from serving import replay as replays
from serving.app import create_app
from tests.api.test_api import ADMIN, SALES, crm, lead, make_settings
from tests.registered_models import MODEL, register_champion
from training import registry

pytestmark = pytest.mark.slow  # two registrations and model checks in subprocesses (~20 s)


def register(folder: Path) -> str:
    """Register ``folder`` and make it champion."""
    return register_champion(folder, run_metric=0.5)


def other_policy(folder: Path, target: Path) -> Path:
    """The same heads under a policy that grades and categorises differently."""
    shutil.copytree(folder, target)
    model = ReadinessModel.load(target)
    for head in model.heads:
        head.threshold = 0.05
    model.grade_bands = {"A": 10.0, "B": 5.0, "C": 2.0}
    model.save(target)
    records = json.loads((folder / "golden.json").read_text())["records"]
    write_golden(ReadinessModel.load(target), records, target)
    return target


@pytest.fixture
def client(mlflow_home: Path, trained_model_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    assert register(trained_model_dir) == "1"
    settings = make_settings(
        tmp_path,
        trained_model_dir,
        model_uri=f"models:/{MODEL}@champion",
        tracking_uri=mlflow.get_tracking_uri(),
        home=mlflow_home,
        model_follow_s=0,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def score(client: TestClient, n: int, prefix: str) -> list[dict[str, Any]]:
    # lukewarm leads: graded C or D by version 1's policy, A by version 2's
    leads = [
        lead(
            f"{prefix}-{i}",
            seniority="intern",
            business_email=False,
            company_size=3 + 97 * i,
            actions=[{"type": "email_open", "at": "2026-02-20T08:00:00Z"}] * (i % 3),
        )
        for i in range(n)
    ]
    response = client.post("/v1/score/batch", json={"leads": leads}, headers=crm())
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def replay(client: TestClient, sent: dict[str, Any]) -> dict[str, Any]:
    response = client.get(
        f"/v1/scores/{sent['score_id']}?replay=true", headers={"X-API-Key": SALES}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    answer = {k: sent[k] for k in replays.ANSWER_KEYS}
    assert body["answer"] == answer
    assert json.dumps(body["replay"]["answer"], sort_keys=True) == json.dumps(
        answer, sort_keys=True
    )
    assert (body["replay"]["identical"], body["replay"]["differences"]) == (True, [])
    assert body["replay"]["model"] == sent["model"] == body["model"]
    return body


def reload(client: TestClient) -> str:
    response = client.post("/admin/reload", headers={"X-API-Key": ADMIN})
    assert response.status_code == 200, response.text
    version: str = client.get("/v1/model", headers={"X-API-Key": ADMIN}).json()["version"]
    return version


def test_replay_uses_the_version_that_scored_after_promotion_and_rollback(
    client: TestClient, trained_model_dir: Path, tmp_path: Path
) -> None:
    first = score(client, 6, "A")
    assert {s["model"]["version"] for s in first} == {"1"}

    assert register(other_policy(trained_model_dir, tmp_path / "v2")) == "2"
    assert reload(client) == "2"
    second = score(client, 6, "A")  # the same leads, now graded by version 2's policy
    assert {s["model"]["version"] for s in second} == {"2"}
    assert [s["grade"] for s in second] != [s["grade"] for s in first]
    for sent in first + second:
        replay(client, sent)
    v1_policy = replay(client, first[0])["policy_version"]
    assert replay(client, second[0])["policy_version"] != v1_policy

    registry.rollback(MODEL)
    assert reload(client) == "1"
    for sent in second + first:
        replay(client, sent)
