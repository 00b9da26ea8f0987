"""The API against the other ways of running the same model, and against a hard kill."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from features.batch import frames_to_records
from features.spec import FeatureSpec
from models.pyfunc import ARTIFACT_KEY, ReadinessPyfunc, signature
from models.readiness import ReadinessModel
from serving.app import create_app
from tests.api.test_api import CRM, lead, make_settings
from tests.servers import free_port, running, serving_env


def _api_records(sample_tables: Any, spec: FeatureSpec, n: int) -> list[dict[str, Any]]:
    leads, actions, _ = sample_tables
    records = frames_to_records(spec, leads.head(n), actions, pd.Timestamp("2026-03-01T00:00Z"))
    return [{k: v for k, v in r.items() if v is not None} for r in records]


def test_api_probabilities_equal_mlflow_pyfunc_predictions(
    mlflow_home: Path,
    trained_model_dir: Path,
    sample_tables: Any,
    sample_spec: FeatureSpec,
    tmp_path: Path,
) -> None:
    model = ReadinessModel.load(trained_model_dir)
    records = _api_records(sample_tables, sample_spec, 40)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ReadinessPyfunc(),
            artifacts={ARTIFACT_KEY: str(trained_model_dir)},
            signature=signature(sample_spec, model.stages),
            input_example=pd.DataFrame(records[:2]),
            pip_requirements=["mlflow"],
        )
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    expected = pyfunc.predict(pd.DataFrame(records))
    with TestClient(create_app(make_settings(tmp_path, trained_model_dir))) as client:
        answer = client.post("/v1/score/batch", json={"leads": records}, headers={"X-API-Key": CRM})
        singles = [
            client.post("/v1/score", json=r, headers={"X-API-Key": CRM}) for r in records[:10]
        ]
    assert answer.status_code == 200, answer.text[:500]
    results = answer.json()["results"]
    assert [r["probabilities"]["mql"] for r in results] == expected["p_mql"].tolist()
    assert [r["probabilities"]["sql"] for r in results] == expected["p_sql"].tolist()
    assert [r["category"] for r in results] == expected["category"].tolist()
    assert [r["score"] for r in results] == expected["score"].tolist()
    assert [s.json()["probabilities"] for s in singles] == [
        r["probabilities"] for r in results[:10]
    ]


@pytest.mark.slow
def test_a_killed_service_loses_no_acknowledged_score(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    db = tmp_path / "scores.db"
    env = serving_env(tmp_path, trained_model_dir, db, crm=CRM)
    command = [sys.executable, "-m", "serving", "--port", str(port), "--workers", "1"]
    acknowledged: list[str] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        i = 0
        while not stop.is_set():
            request_id = f"w{worker}-{i}"
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/score",
                data=json.dumps(lead(f"L-{worker}-{i}")).encode(),
                headers={"Content-Type": "application/json", "X-API-Key": CRM,
                         "X-Request-ID": request_id},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        acknowledged.append(request_id)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return  # the server is gone
            i += 1

    with running(
        command, health_url=f"http://127.0.0.1:{port}/readyz", log=tmp_path / "serve.log",
        cwd=tmp_path, env=env, timeout=90,
    ) as proc:  # fmt: skip
        threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGKILL)  # no shutdown hook, no final flush
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert len(acknowledged) > 50
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        stored = {row[0] for row in conn.execute(sa.text("SELECT request_id FROM scores"))}
    engine.dispose()
    assert set(acknowledged) <= stored
