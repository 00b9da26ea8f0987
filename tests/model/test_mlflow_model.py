"""A tracked training run end to end: what lands in MLflow, and that MLflow can serve it."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from features.batch import frames_to_records
from features.loaders import load_actions, load_leads
from features.spec import FeatureSpec
from models.pyfunc import score_records
from models.readiness import ReadinessModel
from tests.sample import small_config
from tests.servers import env_without_mlflow, free_port, running
from training import registry
from training.run import RunResult, run_training
from training.tracking import TrackingSettings

MODEL = "lead-readiness"


@pytest.fixture
def first_run(mlflow_home: Path, sample_dir: Path) -> RunResult:
    return run_training(small_config(sample_dir, plots=True), TrackingSettings())


def _records(sample_dir: Path, spec: FeatureSpec, n: int = 40) -> list[dict]:
    leads = load_leads(sample_dir / "leads.csv", spec).head(n)
    actions = load_actions(sample_dir / "actions.csv", spec)
    as_of = pd.Timestamp("2026-03-01T00:00:00Z")
    return frames_to_records(spec, leads, actions, as_of)


def test_run_logs_metrics_plots_card_and_registers_a_challenger(first_run: RunResult) -> None:
    client = MlflowClient()
    run = client.get_run(first_run.run_id)
    for key in (
        "test_sql_pr_auc",
        "test_mql_roc_auc",
        "test_sql_ece",
        "baseline_test_sql_roc_auc",
        "oracle_test_sql_roc_auc",
        "oracle_share_test_mql_roc_auc",
        "threshold_sql",
        "val_sql_expected_volume_share",
    ):
        assert key in run.data.metrics, key
    assert run.data.params["spec"] == "sample_crm"
    assert run.data.tags["split"] == "time"
    artifacts = {a.path for a in client.list_artifacts(first_run.run_id)}
    assert {"config.json", "data_fingerprint.json", "model_card.md", "plots"} <= artifacts
    plots = {Path(a.path).name for a in client.list_artifacts(first_run.run_id, "plots")}
    assert {
        "roc.png",
        "precision_recall.png",
        "reliability.png",
        "cumulative_gains.png",
        "score_histogram_mql.png",
        "score_histogram_sql.png",
        "feature_importance_sql.png",
        "shap_summary_sql.png",
    } <= plots
    card = mlflow.artifacts.load_text(f"runs:/{first_run.run_id}/model_card.md")
    assert "sample_crm" in card and "sql" in card
    assert first_run.version is not None
    assert first_run.version.version == "1"
    assert registry.get_alias(MODEL, registry.CHALLENGER).version == "1"  # type: ignore[union-attr]


def test_pyfunc_round_trip_gives_identical_predictions_and_reasons(
    first_run: RunResult, sample_dir: Path, sample_spec: FeatureSpec
) -> None:
    records = _records(sample_dir, sample_spec)
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL}@{registry.CHALLENGER}")
    via_mlflow = loaded.predict(pd.DataFrame(records))
    direct = score_records(first_run.outcome.model, records)
    pd.testing.assert_frame_equal(via_mlflow, direct)
    assert json.loads(via_mlflow["reasons"][0]).keys() == {"positive", "negative"}
    schema = loaded.metadata.get_input_schema()
    assert {c.name for c in schema.inputs} >= {"seniority", "company_size", "actions", "as_of"}
    assert not any(c.required for c in schema.inputs)


def test_a_lead_missing_fields_still_scores_through_mlflow(
    first_run: RunResult, sample_spec: FeatureSpec
) -> None:
    loaded = mlflow.pyfunc.load_model(first_run.model_uri)
    out = loaded.predict(pd.DataFrame([{"lead_id": "x1", "as_of": "2026-03-01T00:00:00Z"}]))
    assert out["lead_id"].tolist() == ["x1"]
    assert out["category"].iloc[0] in {"nurture", "mql", "sql"}
    assert 0 <= out["score"].iloc[0] <= 100


def test_worse_retrained_model_is_refused_by_the_promotion_gate(
    first_run: RunResult, sample_dir: Path
) -> None:
    assert registry.promote(MODEL, metric="test_sql_pr_auc").promoted
    worse = small_config(sample_dir, baseline=False)
    worse = worse.model_copy(
        update={"lightgbm": worse.lightgbm.model_copy(update={"max_rounds": 1})}
    )
    second = run_training(worse, TrackingSettings())
    assert second.version is not None and second.version.version == "2"
    decision = registry.promote(MODEL, metric="test_sql_pr_auc")
    assert not decision.promoted
    assert decision.challenger_value < decision.champion_value  # type: ignore[operator]
    assert registry.get_alias(MODEL, registry.CHAMPION).version == "1"  # type: ignore[union-attr]


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_same_scores(
    first_run: RunResult, sample_dir: Path, sample_spec: FeatureSpec, tmp_path: Path
) -> None:
    port = free_port()
    venv_bin = Path(sys.executable).parent
    # `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH.
    env = {**env_without_mlflow(), "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    command = [
        str(venv_bin / "mlflow"),
        "models", "serve",
        "-m", f"models:/{MODEL}@{registry.CHALLENGER}",
        "--env-manager", "local",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    records = _records(sample_dir, sample_spec, n=5)
    with running(
        command,
        health_url=f"http://127.0.0.1:{port}/ping",
        log=tmp_path / "serve.log",
        cwd=tmp_path,
        env=env,
        timeout=120,
    ):
        body = json.dumps({"dataframe_records": records}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    served = pd.DataFrame(answer["predictions"])
    direct = score_records(first_run.outcome.model, records)
    np.testing.assert_allclose(served["p_sql"], direct["p_sql"], rtol=0, atol=1e-12)
    assert served["category"].tolist() == direct["category"].tolist()
    assert served["reasons"].tolist() == direct["reasons"].tolist()


def test_the_pyfunc_is_logged_from_code_without_a_pickle(first_run: RunResult) -> None:
    """Models from code: MLflow stores our code file and runs it at load time."""
    local = Path(mlflow.artifacts.download_artifacts(first_run.model_uri))
    files = {p.name for p in local.rglob("*")}
    assert not {f for f in files if f.endswith((".pkl", ".pickle"))}
    flavor = mlflow.models.Model.load(str(local / "MLmodel")).flavors["python_function"]
    assert flavor["model_code_path"].endswith("mlflow_entry.py")
    assert "python_model" not in flavor or not str(flavor["python_model"]).endswith(".pkl")
    assert {"model.json", "mlflow_entry.py", "features", "models"} <= files


def test_saved_model_folder_has_versions_and_no_pickle(
    first_run: RunResult, tmp_path: Path
) -> None:
    folder = first_run.outcome.model.save(tmp_path / "m")
    doc = json.loads((folder / "model.json").read_text())
    assert doc["format"] == 1
    assert set(doc["library_versions"]) >= {"lightgbm", "numpy", "scikit-learn"}
    assert sorted(p.name for p in folder.iterdir()) == [
        "head_mql.txt",
        "head_sql.txt",
        "model.json",
    ]
    assert ReadinessModel.load(folder).stages == ["mql", "sql"]


@pytest.mark.slow
@pytest.mark.xdist_group("spark")  # one SparkSession per test process (make test: loadgroup)
def test_spark_udf_scores_like_the_model_when_pyspark_is_installed(
    first_run: RunResult, sample_dir: Path, sample_spec: FeatureSpec, spark: Any
) -> None:
    """``mlflow.pyfunc.spark_udf`` on the registered model (PySpark is an optional extra)."""
    from pyspark.sql.functions import struct

    # Profile fields only: a flat table is what a Spark job hands over (actions arrive
    # aggregated there); the scores must still be the model's own.
    records = [
        {k: v for k, v in r.items() if k != "actions"}
        for r in _records(sample_dir, sample_spec, n=8)
    ]
    flat = pd.DataFrame(records)
    udf = mlflow.pyfunc.spark_udf(
        spark, f"models:/{MODEL}@{registry.CHALLENGER}", env_manager="local",
        result_type="p_sql double",
    )  # fmt: skip
    frame = spark.createDataFrame(flat)
    # A struct passes the columns by name (positional columns would be matched to the
    # signature's order, and the optional ones left out filled with nulls).
    scored = frame.withColumn("out", udf(struct(*flat.columns))).toPandas()
    direct = score_records(first_run.outcome.model, records)
    np.testing.assert_allclose(scored["out"].map(lambda r: r["p_sql"]), direct["p_sql"], atol=1e-12)


def test_a_run_that_fails_is_marked_failed_with_the_reason(
    mlflow_home: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.run

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("cannot choose a threshold: no positive outcomes")

    monkeypatch.setattr(training.run, "train", broken)
    with pytest.raises(ValueError, match="no positive outcomes"):
        run_training(small_config(sample_dir), TrackingSettings())
    (failed,) = mlflow.search_runs(experiment_names=[MODEL], output_format="list")
    assert failed.info.status == "FAILED"
    assert failed.data.tags["failure_reason"] == (
        "ValueError: cannot choose a threshold: no positive outcomes"
    )
