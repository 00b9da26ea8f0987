"""One MLflow location for training, serving and the CLI (models.mlflow_location)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import mlflow_location
from serving.settings import ServingSettings
from training.tracking import TrackingSettings, mlflow_params, resolve_tracking_uri

_ENV = (
    "MLFLOW_TRACKING_URI",
    "LEADSCORE_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "LEADSCORE_REGISTRY_URI",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def test_without_configuration_everything_uses_the_embedded_store(tmp_path: Path) -> None:
    embedded = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert mlflow_location.tracking_uri(tmp_path) == embedded
    assert mlflow_location.registry_uri(tmp_path) == embedded
    assert resolve_tracking_uri(TrackingSettings(home=tmp_path)) == embedded
    assert ServingSettings(home=tmp_path).resolved_tracking_uri() == embedded


def test_mlflow_tracking_uri_reaches_training_and_serving_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert resolve_tracking_uri(TrackingSettings(home=tmp_path)) == "http://mlflow.internal:5000"
    assert ServingSettings(home=tmp_path).resolved_tracking_uri() == "http://mlflow.internal:5000"
    assert ServingSettings(home=tmp_path).resolved_registry_uri() == "http://mlflow.internal:5000"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "http://registry.internal")
    assert ServingSettings(home=tmp_path).resolved_registry_uri() == "http://registry.internal"


def test_precedence_explicit_then_mlflow_then_leadscore_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADSCORE_TRACKING_URI", "http://old-style")
    assert mlflow_location.tracking_uri(tmp_path) == "http://old-style"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow-var")
    assert mlflow_location.tracking_uri(tmp_path) == "http://mlflow-var"
    assert mlflow_location.tracking_uri(tmp_path, "http://explicit") == "http://explicit"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "  ")  # exported but blank: unset
    assert mlflow_location.tracking_uri(tmp_path) == "http://old-style"


def test_redact_drops_credentials() -> None:
    assert mlflow_location.redact_uri("https://u:secret@host:8443/x") == "https://host:8443/x"
    assert mlflow_location.redact_uri("sqlite:///a/b.db") == "sqlite:///a/b.db"


def test_mlflow_params_are_names_mlflow_accepts_and_keep_every_key() -> None:
    params = mlflow_params(
        {"thresholds": {"*": "precision:0.8", "sql": "top:5%"}, "lists": [1, 2],
         "cols": {"Rate (%)": 1, "Rate [%]": 2}, "empty": {}}
    )  # fmt: skip
    assert params == {
        "thresholds._": "precision:0.8",
        "thresholds.sql": "top:5%",
        "lists": "[1, 2]",
        "cols.Rate ___": 1,
        "cols.Rate ____2": 2,
        "empty": "{}",
    }
