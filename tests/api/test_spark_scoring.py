"""Scoring on Spark (``leadscore score --engine spark``) gives ``leadscore score``'s answers.

The same registered model, the same 10,000 generated leads with their raw actions: the
single-machine job and the Spark job (features per lead group with Arrow, scores through
``mlflow.pyfunc.spark_udf``) must agree row by row. The 100,000-lead run is a benchmark
(``python -m benchmarks.spark_scoring``). A missing or corrupt model version fails before
Spark starts, with one line and nothing written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import synthetic
from leadscore.cli import main as leadscore
from serving.batch import job as batch_job
from serving.settings import ServingSettings
from tests.api.test_hardening_models import register_broken, truncated
from tests.registered_models import MODEL, register_champion

#: One SparkSession per test process: make test's ``--dist loadgroup`` keeps these together.
pytestmark = pytest.mark.xdist_group("spark")

AS_OF = pd.Timestamp("2026-03-01T00:00:00Z")
N_LEADS = 10_000


@pytest.fixture(scope="module")
def ten_thousand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10,000 generated leads and their actions (another seed than the training sample)."""
    out = tmp_path_factory.mktemp("spark-leads")
    synthetic.write(synthetic.generate(synthetic.SampleConfig(n_leads=N_LEADS, seed=23)), out)
    return out


def settings_for(home: Path) -> ServingSettings:
    import mlflow

    return ServingSettings(  # type: ignore[call-arg]
        _env_file=None,
        home=home,
        spec="sample_crm",
        tracking_uri=mlflow.get_tracking_uri(),
        model_cache_dir=home / "cache",
    )


def local_scores(leads: Path, actions: Path, out: Path, settings: ServingSettings) -> pd.DataFrame:
    options = batch_job.Options(
        leads=leads,
        actions=actions,
        out=out,
        model=f"models:/{MODEL}@champion",
        as_of=AS_OF,
        reasons=0,
        progress=False,
    )
    batch_job.run(options, settings)
    return pd.read_parquet(out)


def same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Row by row, in the single-machine file's order: probabilities to 1e-9, the rest equal."""
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    got = got.set_index("lead_id").loc[want["lead_id"]].reset_index()
    for stage in [c for c in want.columns if c.startswith("p_")]:
        np.testing.assert_allclose(got[stage], want[stage], rtol=0, atol=1e-9)
    for column in ("lead_id", "score", "grade", "category", "model_version"):
        assert got[column].tolist() == want[column].tolist(), column


@pytest.mark.slow
def test_spark_scores_equal_the_single_machine_scores_row_by_row(
    spark: Any,
    mlflow_home: Path,
    trained_model_dir: Path,
    ten_thousand: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from serving.batch.spark import score_tables

    assert register_champion(trained_model_dir) == "1"
    settings = settings_for(mlflow_home)
    leads, actions = ten_thousand / "leads.csv", ten_thousand / "actions.csv"
    want = local_scores(leads, actions, mlflow_home / "local.parquet", settings)
    assert want["category"].nunique() == 3  # every category occurs: the check has teeth

    # The documented command, from raw events.
    for name, value in {
        "LEADSCORE_SPEC": "sample_crm",
        "LEADSCORE_TRACKING_URI": settings.resolved_tracking_uri(),
        "LEADSCORE_MODEL_CACHE_DIR": str(mlflow_home / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    out = mlflow_home / "spark.parquet"
    capsys.readouterr()
    code = leadscore(
        [
            "score", "--engine", "spark", "--model", f"models:/{MODEL}@champion",
            "--leads", str(leads), "--actions", str(actions), "--out", str(out),
            "--as-of", AS_OF.isoformat(), "--reasons", "0",
            "--features-out", str(mlflow_home / "features.parquet"),
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"scored {N_LEADS:,} leads with {MODEL} version 1 on Spark" in err
    same_rows(pd.read_parquet(out), want)

    # The importable function on a pre-aggregated table: the feature table the command
    # wrote beside the scores (one row per lead, aggregates as columns).
    aggregated = spark.read.parquet(str(mlflow_home / "features.parquet"))
    assert aggregated.count() == N_LEADS
    scores = score_tables(
        spark, aggregated, None, f"models:/{MODEL}@champion", as_of=AS_OF, settings=settings
    )
    same_rows(scores.toPandas(), want)


@pytest.mark.parametrize("version", ["missing", "corrupt"])
def test_a_missing_or_corrupt_version_fails_in_one_line_before_any_output(
    mlflow_home: Path,
    trained_model_dir: Path,
    sample_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    version: str,
) -> None:
    pytest.importorskip("pyspark")
    import mlflow

    assert register_champion(trained_model_dir) == "1"
    if version == "corrupt":
        assert (
            register_broken(truncated(trained_model_dir, tmp_path / "b"), trained_model_dir, 0.5)
            == "2"
        )
    uri = f"models:/{MODEL}/{'9' if version == 'missing' else '2'}"
    for name, value in {
        "LEADSCORE_SPEC": "sample_crm",
        "LEADSCORE_TRACKING_URI": mlflow.get_tracking_uri(),
        "LEADSCORE_MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "scores.parquet"
    started: list[int] = []
    capsys.readouterr()  # the registration's own output
    monkeypatch.setattr("features.spark.local_session", lambda *a, **k: started.append(1))
    code = leadscore(
        [
            "score", "--engine", "spark", "--model", uri, "--no-progress",
            "--leads", str(sample_dir / "leads.csv"), "--actions", str(sample_dir / "actions.csv"),
            "--out", str(out),
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: cannot load the model: ") and err.count("\n") == 1, err
    if version == "missing":
        assert "9" in err
    else:
        assert "truncated or corrupt" in err
    assert not started  # Spark was never started
    assert not out.exists() and not list(tmp_path.glob(".scores.parquet.*"))


@pytest.mark.slow
def test_a_file_the_loaders_refuse_is_refused_on_spark_with_their_message(
    spark: Any, sample_dir: Path
) -> None:
    from features.loaders import DataError
    from features.spark import lead_features, spark_refusal
    from features.spec import load_spec

    spec = load_spec("sample_crm")
    leads = pd.read_csv(sample_dir / "leads.csv", dtype=str, keep_default_na=False).head(300)
    actions = pd.read_csv(sample_dir / "actions.csv", dtype=str, keep_default_na=False)
    actions = actions[actions["lead_id"].isin(leads["lead_id"])].head(2000)
    stranger = actions.head(1).assign(lead_id="L9999999")
    bad_number = leads.copy()
    bad_number.loc[7, "company_size"] = "lots"
    cases = [
        (leads, pd.concat([actions, stranger]), "actions: column 'lead_id': 1 action belongs "
         "to a lead that is not in the leads table"),
        (bad_number, actions, "leads: column 'company_size': 1 value is not a number"),
    ]  # fmt: skip
    for lead_rows, action_rows, message in cases:
        table = lead_features(
            spark.createDataFrame(lead_rows), spark.createDataFrame(action_rows), spec,
            as_of=AS_OF, leads_per_group=100,
        )  # fmt: skip
        with pytest.raises(Exception) as caught:
            table.collect()
        refusal = spark_refusal(caught.value)
        assert isinstance(refusal, DataError)
        assert str(refusal) == message  # one line, no row numbers (not file lines on Spark)


def test_a_version_logged_before_spark_scoring_is_refused_not_mis_scored(
    mlflow_home: Path, trained_model_dir: Path
) -> None:
    """Its signature lacks the aggregate columns: MLflow would drop them without a word."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema

    from features.batch import aggregated_columns
    from models.pyfunc import ARTIFACT_KEY, ReadinessPyfunc, signature
    from models.readiness import ReadinessModel
    from serving.batch.job import UsageError
    from serving.batch.spark import check_model
    from training import registry

    model = ReadinessModel.load(trained_model_dir)
    spec = model.builder.spec
    current = signature(spec, model.stages)
    aggregates = set(aggregated_columns(spec))
    older = ModelSignature(
        inputs=Schema([c for c in current.inputs.inputs if c.name not in aggregates]),
        outputs=current.outputs,
    )
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ReadinessPyfunc(),
            artifacts={ARTIFACT_KEY: str(trained_model_dir)},
            signature=older,
            pip_requirements=["mlflow"],
        )
    registry.register(info.model_uri, name=MODEL, run_id=run.info.run_id)
    with pytest.raises(UsageError, match="was logged before Spark scoring"):
        check_model(f"models:/{MODEL}/1", settings_for(mlflow_home))
