"""A data scientist's whole path, end to end, through the one command line.

init -> check -> cv -> train -> promote, then the real service scores a row of the file
and answers exactly what ``mlflow.pyfunc`` answers for the registered model. Runs on the
real X Education file when ``../shared`` is there, and on generated tables of several
shapes always (other delimiters and encodings, no id, sentinels, odd headers).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.batch import frames_to_records
from features.loaders import load_leads
from features.spec import load_spec
from leadscore.cli import main as leadscore
from serving.app import create_app
from serving.settings import ServingSettings
from tests.tables import SHAPES, write_table
from training.config import load_config

X_EDUCATION = Path(__file__).resolve().parents[2].parent / "shared/data/x_education/Leads.csv"
CRM = "e2e-crm-key-0123456789abcdefghijklmnop"


def run(*argv: str) -> None:
    assert leadscore(list(argv)) == 0, f"leadscore {' '.join(argv)} failed"


def served_equals_pyfunc(config_path: Path, home: Path, rows: int = 5) -> None:
    """Serve the champion with the real app; the API's probabilities are the pyfunc's."""
    config = load_config(config_path)
    spec = load_spec(config.spec)
    leads = load_leads(config.leads, spec).head(rows)
    records = frames_to_records(spec, leads)
    uri = f"models:/{config.model_name}@champion"
    expected = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame(records))
    settings = ServingSettings(
        _env_file=None,  # type: ignore[call-arg]
        spec=config.spec,
        model_uri=uri,
        tracking_uri=mlflow.get_tracking_uri(),
        home=home,
        database_url=f"sqlite:///{home / 'scores.db'}",
        model_cache_dir=home / "serving-cache",
        api_keys_crm=[CRM],
    )
    stage = spec.scored_stages[-1]
    with TestClient(create_app(settings)) as client:
        for record, (_, want) in zip(records, expected.iterrows(), strict=True):
            body = _request(record, spec.id_column)
            response = client.post("/v1/score", json=body, headers={"X-API-Key": CRM})
            assert response.status_code == 200, response.text
            got = response.json()
            assert got["probabilities"][stage] == pytest.approx(want[f"p_{stage}"], abs=1e-12)
            assert (got["score"], got["category"]) == (want["score"], want["category"])


def _request(record: dict[str, Any], id_column: str) -> dict[str, Any]:
    body = {k: v for k, v in record.items() if v is not None and k != id_column}
    body = {k: v for k, v in body.items() if not (isinstance(v, float) and math.isnan(v))}
    body["lead_id"] = str(record[id_column])
    return body


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_new_table_goes_from_init_to_a_served_model_in_four_commands(
    shape: str, tmp_path: Path, mlflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_table(shape, tmp_path / "data", n=1500, seed=3)
    project = tmp_path / "project"
    monkeypatch.chdir(tmp_path)
    spec, config = project / "spec.yaml", project / "config.yaml"
    run("init", str(data), "--label", SHAPES[shape].label, "--out", str(project))
    run("check", str(spec), str(config))
    run("cv", "--config", str(config), "--folds", "3")
    run("train", "--config", str(config))  # command 3 of init -> model (cv is optional)
    run("promote", "--config", str(config))  # command 4
    served_equals_pyfunc(config, tmp_path / "serving")


@pytest.mark.slow
@pytest.mark.shared
def test_x_education_trains_registers_promotes_and_serves_what_mlflow_predicts(
    tmp_path: Path, mlflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not X_EDUCATION.exists():
        pytest.skip("../shared/data/x_education/Leads.csv is not here")
    bundled = load_config("x_education")
    config = tmp_path / "x_education.yaml"
    lightgbm = bundled.lightgbm.model_dump(mode="json")
    head = bundled.head.model_dump(mode="json")
    config.write_text(
        "\n".join(
            [
                "spec: x_education",
                "model_name: x-education-leads",
                "experiment: x-education",
                f"leads: {X_EDUCATION.resolve()}",
                "actions: null",
                "history: null",
                "truth: null",
                "thresholds: {'*': 'precision:0.8'}",  # the bundled "*" once crashed MLflow
                "plots: false",
                f"lightgbm: {lightgbm}",
                f"head: {head}",
            ]
        )
    )
    monkeypatch.chdir(tmp_path)
    run("train", "--config", str(config))
    run("promote", "--config", str(config))
    run_ = mlflow.search_runs(experiment_names=["x-education"], output_format="list")[0]
    assert run_.info.status == "FINISHED"
    assert run_.data.params["thresholds._"] == "precision:0.8"
    assert run_.data.tags["promotion_metric"] == "test_customer_pr_auc"
    served_equals_pyfunc(config, tmp_path / "serving", rows=10)
