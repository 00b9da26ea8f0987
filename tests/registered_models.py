"""Registering a trained model folder as the champion, and service settings that fetch it.

Shared by the tests that need a real MLflow registry behind the service (model store,
hardening, replay, batch and Spark scoring), so each does not carry its own copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd

from models.pyfunc import ARTIFACT_KEY, ReadinessPyfunc, signature
from models.readiness import ReadinessModel
from serving.settings import ServingSettings
from training import registry

MODEL = "lead-readiness"


def register_champion(model_dir: Path, run_metric: float = 0.4) -> str:
    """Log ``model_dir`` as an MLflow model, register it and make it champion; its version."""
    model = ReadinessModel.load(model_dir)
    golden = json.loads((model_dir / "golden.json").read_text())["records"]
    with mlflow.start_run() as run:
        mlflow.log_metric("test_sql_pr_auc", run_metric)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ReadinessPyfunc(),
            artifacts={ARTIFACT_KEY: str(model_dir)},
            signature=signature(model.builder.spec, model.stages),
            input_example=pd.DataFrame(golden[:2]),
            pip_requirements=["mlflow"],
        )
    version = registry.register(info.model_uri, name=MODEL, run_id=run.info.run_id)
    registry.promote(MODEL, metric="test_sql_pr_auc", force=True)
    return version.version


def registry_settings(home: Path, tracking_uri: str, **extra: object) -> ServingSettings:
    """Service settings that fetch the champion from ``tracking_uri`` into ``home/cache``."""
    return ServingSettings(  # type: ignore[call-arg]
        _env_file=None,
        home=home,
        tracking_uri=tracking_uri,
        model_cache_dir=home / "cache",
        **extra,
    )
