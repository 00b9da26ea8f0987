"""Shared pytest fixtures.

MLflow keeps process-wide state (tracking/registry URI, active experiment) and mirrors it into
environment variables; the fixtures here undo all of it so tests cannot leak into each other
or into the developer's own ``mlflow.db``. MLflow is imported inside the fixtures so test
modules that never touch it do not pay its import time.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import pandas as pd

    from features.spec import FeatureSpec

# Variables MLflow or training.tracking read, or that configure() / mlflow.set_* write.
_TRACKING_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "LEADSCORE_HOME",
    "LEADSCORE_EXPERIMENT",
    "LEADSCORE_MODEL_NAME",
    "LEADSCORE_TRACKING_URI",  # also accepted (env prefix + field name)
    "LEADSCORE_REGISTRY_URI",
)
#: The same names, for module-wide stores built outside these fixtures.
TRACKING_ENV = _TRACKING_ENV


@pytest.fixture
def mlflow_isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No tracking configuration at all on entry; everything MLflow set is undone on exit."""
    import mlflow
    from mlflow.tracking import fluent

    for name in _TRACKING_ENV:
        # setenv first makes monkeypatch record the original value (or its absence), so the
        # variables MLflow writes later are restored too; a bare delenv of an unset variable
        # records nothing.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    # MLflow has no public way to clear the active experiment; restored by monkeypatch.
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    yield
    # None is MLflow's own "unset" (it is what mlflow's _use_tracking_uri restores).
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store, built once per session.

    Creating the schema runs MLflow's alembic migrations (~2 s); copying the file takes
    milliseconds, which keeps each registry test around a second.
    """
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def mlflow_home(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mlflow_isolated: None,
    mlflow_db_template: Path,
) -> Path:
    """A project folder with its own embedded MLflow store, configured and made active.

    Uses the default (no ``MLFLOW_TRACKING_URI``) path of ``training.tracking.configure``,
    so ``<home>/mlflow.db`` and ``<home>/mlruns/`` are what a developer would get.
    """
    from training import tracking

    home = tmp_path / "project"
    home.mkdir()
    shutil.copyfile(mlflow_db_template, home / tracking.EMBEDDED_DB)
    monkeypatch.setenv("LEADSCORE_HOME", str(home))
    tracking.configure(tracking.TrackingSettings())
    return home


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic CRM written to disk once per session (leads, actions, history, truth)."""
    from features import synthetic

    out = tmp_path_factory.mktemp("sample")
    data = synthetic.generate(synthetic.SampleConfig(n_leads=3000, seed=11))
    synthetic.write(data, out)
    return out


@pytest.fixture(scope="session")
def sample_spec() -> FeatureSpec:
    from features.spec import load_spec

    return load_spec("sample_crm")


@pytest.fixture(scope="session")
def sample_tables(
    sample_dir: Path, sample_spec: FeatureSpec
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The sample files loaded through the real loaders: (leads, actions, history)."""
    import pandas as pd

    from features.loaders import load_actions, load_history, load_leads

    leads = load_leads(sample_dir / "leads.csv", sample_spec)
    ids = pd.Index(leads[sample_spec.id_column])
    actions = load_actions(sample_dir / "actions.csv", sample_spec, ids)
    history = load_history(sample_dir / "stage_history.csv", sample_spec, ids)
    return leads, actions, history


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite backend, local artifact root) on a free loopback port."""
    import sys

    from tests.servers import env_without_mlflow, free_port, running

    root = tmp_path / "server"
    root.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'srv.db'}",
        "--default-artifact-root", str(root / "art"),
    ]  # fmt: skip
    with running(
        command, health_url=f"{url}/health", log=root / "server.log", cwd=root,
        env=env_without_mlflow(),
    ):  # fmt: skip
        yield url


@pytest.fixture(scope="session")
def trained_model_dir(
    tmp_path_factory: pytest.TempPathFactory, sample_dir: Path, sample_spec: FeatureSpec
) -> Path:
    """A readiness model trained on the sample CRM and saved with its golden rows."""
    from features.batch import frames_to_records
    from models.golden import write_golden
    from tests.sample import small_config
    from training.dataset import load_training_set, split
    from training.pipeline import train

    config = small_config(sample_dir, baseline=False)
    data = load_training_set(sample_spec, config)
    parts = split(data, sample_spec, config)
    outcome = train(sample_spec, config, data, parts)
    folder = outcome.model.save(tmp_path_factory.mktemp("model") / "readiness")
    golden = frames_to_records(sample_spec, data.subset(parts.test[:20]).leads, data.actions)
    write_golden(outcome.model, golden, folder)
    return folder


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local Spark session for the whole test run (start-up costs 20-90 s here).

    ``local[2]`` like CI's two cores, few shuffle partitions for small tables, no UI.
    Skips when PySpark (the ``spark`` extra) or Java is absent.
    """
    pytest.importorskip("pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs Java 17 (Debian: openjdk-17-jre-headless)")
    from features.spark import local_session

    session = local_session("leadscore-tests", master="local[2]", shuffle_partitions=4)
    yield session
    session.stop()
