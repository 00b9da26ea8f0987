"""Monitoring where people look: the admin endpoint, the board page, Prometheus, the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from leadscore.cli import main
from serving.app import create_app
from serving.settings import ServingSettings
from tests.api.test_api import ADMIN, CRM, SALES, lead, make_settings


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> Iterator[tuple[TestClient, ServingSettings]]:
    """The real app with a few dozen scores in its log (scored now: the drift window)."""
    settings = make_settings(tmp_path_factory.mktemp("monitor"), trained_model_dir)
    with TestClient(create_app(settings)) as client:
        leads = [
            lead(f"M-{i}", seniority=["VP", "Manager", "IC"][i % 3], as_of=None) for i in range(30)
        ]
        for lo in range(0, 30, 10):
            body = {"leads": leads[lo : lo + 10]}
            response = client.post("/v1/score/batch", json=body, headers={"X-API-Key": CRM})
            assert response.status_code == 200, response.text
        yield client, settings


def test_the_endpoint_is_for_admins_and_reports_states(
    served: tuple[TestClient, ServingSettings],
) -> None:
    client, _ = served
    assert client.get("/v1/monitoring", headers={"X-API-Key": CRM}).status_code == 403
    assert client.get("/v1/monitoring").status_code == 401
    response = client.get("/v1/monitoring", headers={"X-API-Key": ADMIN})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == client.app.state.store.current.version
    assert body["drift_rows"] == 30 and body["drift_sampled"] == 30
    # 30 leads are too few to judge drift, and nothing has matured: unknown, not ok.
    assert body["state"] == "unknown" and body["reasons"] == []
    assert {d["name"] for d in body["scores"]} == {"mql", "sql"}
    seniority = next(d for d in body["features"] if d["name"] == "seniority")
    assert seniority["state"] == "unknown" and seniority["psi"] > 0 and seniority["rows"] == 30
    assert [s["stage"] for s in body["stages"]] == ["mql", "sql"]
    assert all(s["rows"] == 0 and s["state"] == "unknown" for s in body["stages"])
    assert sum(v["count"] for v in body["volumes"]) == 30
    bad = client.get("/v1/monitoring?refresh=maybe", headers={"X-API-Key": ADMIN})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["errors"][0]["field"] == "query.refresh"


def test_prometheus_shows_the_latest_report(served: tuple[TestClient, ServingSettings]) -> None:
    client, _ = served
    client.get("/v1/monitoring", headers={"X-API-Key": ADMIN})
    text = client.get("/metrics", headers={"X-API-Key": ADMIN}).text
    version = client.app.state.store.current.version
    assert f'leadscore_monitor_state{{model_version="{version}"}} -1.0' in text
    assert 'leadscore_monitor_psi{kind="feature",name="seniority"}' in text
    assert 'leadscore_monitor_psi{kind="score",name="sql"}' in text


def test_the_manager_sees_a_server_rendered_page(
    served: tuple[TestClient, ServingSettings],
) -> None:
    client, _ = served
    assert client.get("/board/monitoring", follow_redirects=False).status_code == 303
    login = client.post("/board/login", data={"api_key": SALES}, follow_redirects=False)
    assert login.status_code == 303
    board = client.get("/board")
    assert '<a href="/board/monitoring">Monitoring</a>' in board.text  # one click from the board
    page = client.get("/board/monitoring")
    assert page.status_code == 200
    html = page.text
    assert 'data-state="unknown"' in html and "Too few scores to judge yet" in html
    assert "<svg" in html and "<script" not in html
    assert 'data-drift="score:sql"' in html
    assert html.count('data-drift="feature:') == 10  # none flagged: the ten that moved most
    assert 'data-category="nurture"' in html
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    client.cookies.clear()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_monitor_command_prints_the_report(
    served: tuple[TestClient, ServingSettings],
    trained_model_dir: Path,
    mlflow_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, settings = served
    url = settings.database_url_resolved()
    argv = ["monitor", "--model-uri", str(trained_model_dir), "--log-url", url]
    code, out, _ = _run([*argv, "--json", "--no-mlflow"], capsys)
    assert code == 0
    report: dict[str, Any] = json.loads(out)
    assert report["drift_rows"] == 30 and report["state"] == "unknown"
    code, out, _ = _run(argv, capsys)
    assert code == 0
    assert "state UNKNOWN" in out and "Feature drift (PSI)" in out and "Too few scores" in out
    assert "\n  sql " in out  # the score drift and live tables name each stage
    assert "Logged to MLflow run" in out
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.kind = 'monitor'")
    assert len(runs) == 1 and runs.iloc[0]["tags.state"] == "unknown"


def test_monitor_refuses_a_missing_log(
    tmp_path: Path, trained_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    argv = ["monitor", "--model-uri", str(trained_model_dir), "--log-url", missing, "--no-mlflow"]
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert err.strip() == f"error: scoring log not found: no SQLite file at {tmp_path}/none.db"
    assert not (tmp_path / "none.db").exists()


def test_train_from_an_empty_window_registers_nothing(
    served: tuple[TestClient, ServingSettings],
    sample_dir: Path,
    mlflow_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Scores made just now have no matured outcome: one line, exit 2, no model, no run."""
    _, settings = served
    config = mlflow_home / "config.yaml"
    config.write_text(
        f"spec: sample_crm\nleads: {sample_dir / 'leads.csv'}\n"
        f"from_log: {{url: '{settings.database_url_resolved()}'}}\n"
    )
    code, _, err = _run(["train", "--from-log", "--config", str(config)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "no matured score with its input from the log's start to " in err
    assert "(0 scores in the window: " in err
    assert "30 newer scores wait for their 90-day horizon); no model was trained" in err
    from mlflow import MlflowClient

    assert MlflowClient().search_registered_models() == []
    assert MlflowClient().search_runs(experiment_ids=["0"]) == []


def test_the_default_log_is_the_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``monitor`` and ``retrain`` in the project folder read what the service writes there."""
    from training.config import load_config, scoring_log_url

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEADSCORE_DATABASE_URL", raising=False)
    service = ServingSettings(_env_file=None, home=tmp_path)  # type: ignore[call-arg]
    assert scoring_log_url(None) == service.database_url_resolved()
    monkeypatch.setenv("LEADSCORE_DATABASE_URL", "postgresql+psycopg://db/log")
    assert scoring_log_url(None) == "postgresql+psycopg://db/log"
    config = load_config("sample")
    assert scoring_log_url(config, "sqlite:///x.db") == f"sqlite:///{tmp_path}/x.db"


def test_retrain_from_an_empty_window_changes_nothing(
    served: tuple[TestClient, ServingSettings],
    sample_dir: Path,
    mlflow_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``retrain --dry-run`` and ``retrain`` read the log first: no rows, no run, no version."""
    _, settings = served
    config = mlflow_home / "config.yaml"
    config.write_text(f"spec: sample_crm\nleads: {sample_dir / 'leads.csv'}\n")
    for extra in (["--dry-run"], []):
        argv = ["retrain", "--config", str(config), "--log-url", settings.database_url_resolved()]
        code, out, err = _run([*argv, *extra], capsys)
        assert code == 2 and out == ""
        assert err.startswith("error: from_log: no matured score with its input from ")
    from mlflow import MlflowClient

    assert MlflowClient().search_registered_models() == []
