"""Tracking settings and the MLflow run context for training jobs.

Where MLflow lives is decided in one place for training and serving alike,
:mod:`models.mlflow_location`: ``MLFLOW_TRACKING_URI`` (and ``MLFLOW_REGISTRY_URI``) when set,
else the embedded ``sqlite:///<home>/mlflow.db`` with artifacts under ``<home>/mlruns/``
(``LEADSCORE_HOME``, default the current directory; both git-ignored).

The experiment and the registered model's name come from the training config; the
environment overrides them (``LEADSCORE_EXPERIMENT``, ``LEADSCORE_MODEL_NAME``), so a CI job
can train the same config into a scratch model.

MLflow itself is imported lazily so that reading :class:`TrackingSettings` does not pay
MLflow's multi-second import.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models import mlflow_location
from models.mlflow_location import EMBEDDED_ARTIFACTS, EMBEDDED_DB, redact_uri

__all__ = [
    "EMBEDDED_ARTIFACTS",
    "EMBEDDED_DB",
    "HTTP_LIMITS",
    "RegistryError",
    "TrackingError",
    "TrackingSettings",
    "configure",
    "mlflow_params",
    "redact_uri",
    "resolve_tracking_uri",
]

DEFAULT_NAME = "lead-readiness"

# MLflow's HTTP defaults are 7 retries with exponential backoff (factor 2, capped at 120 s) and a
# 120 s timeout per attempt: an unreachable server makes every call hang for about four minutes,
# a hung one for far longer. For a CLI or a training job that is indistinguishable from a
# deadlock, so we bound both; a user's explicit environment values still win (setdefault).
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

#: What MLflow accepts in a parameter name; anything else becomes "_" (see mlflow_params).
_PARAM_NAME_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")
#: MLflow refuses parameter values longer than this.
_PARAM_VALUE_MAX = 6000


class TrackingError(RuntimeError):
    """The tracking store could not be used (unreachable, misconfigured, deleted experiment)."""


class RegistryError(RuntimeError):
    """A registry operation cannot proceed; the message says why and what to do.

    Defined here, beside :class:`TrackingError`, so the command line can recognise it
    without importing MLflow (``training.registry`` does).
    """


class TrackingSettings(BaseSettings):
    """Tracking configuration, read from the environment when instantiated (never on import).

    ``LEADSCORE_EXPERIMENT``, ``LEADSCORE_MODEL_NAME`` and ``LEADSCORE_HOME`` come from the
    prefix; the URIs use MLflow's own variable names. The prefix matters: without it
    pydantic-settings would also read bare ``HOME`` into ``home``. Keyword arguments use the
    field names (``TrackingSettings(home=...)``) and typos are rejected, not ignored.
    (``LEADSCORE_TRACKING_URI`` / ``LEADSCORE_REGISTRY_URI`` are accepted as fallbacks.)
    """

    model_config = SettingsConfigDict(
        env_prefix="LEADSCORE_", populate_by_name=True, extra="forbid"
    )

    tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    registry_uri: str | None = Field(default=None, validation_alias="MLFLOW_REGISTRY_URI")
    experiment: str = DEFAULT_NAME
    model_name: str = DEFAULT_NAME
    home: Path = Field(default_factory=Path.cwd)

    @field_validator("tracking_uri", "registry_uri", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """``MLFLOW_TRACKING_URI=`` (exported but empty) means "not set", not an empty URI."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def for_names(self, *, experiment: str, model_name: str) -> TrackingSettings:
        """These settings with a config's experiment and model name, unless the environment
        (or a keyword argument) already named them: an explicit setting always wins."""
        update = {
            key: value
            for key, value in (("experiment", experiment), ("model_name", model_name))
            if key not in self.model_fields_set
        }
        return self.model_copy(update=update)


def embedded_tracking_uri(home: Path) -> str:
    """The SQLite store inside the project folder, as an absolute URI."""
    return mlflow_location.embedded_tracking_uri(home)


def resolve_tracking_uri(settings: TrackingSettings) -> str:
    """The tracking store these settings name (:func:`models.mlflow_location.tracking_uri`)."""
    return mlflow_location.tracking_uri(settings.home, settings.tracking_uri)


def experiment_artifact_location(settings: TrackingSettings) -> str:
    """Absolute ``file://`` URI for the experiment's artifacts: ``<home>/mlruns/<experiment>``.

    Absolute because a relative location would be resolved against the current directory of
    whichever process logs next, scattering artifacts across the machine.
    """
    return (settings.home.resolve() / EMBEDDED_ARTIFACTS / settings.experiment).as_uri()


def bound_http_retries() -> None:
    """Make calls to an unreachable or hung tracking server fail in seconds, not minutes."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)


def configure(settings: TrackingSettings) -> str:
    """Point MLflow at the configured stores, make the experiment active, return its id.

    Sets the process-wide tracking and registry URIs (MLflow also exports them as environment
    variables so subprocesses inherit them).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    bound_http_retries()
    tracking_uri = resolve_tracking_uri(settings)
    if mlflow_location.is_embedded(tracking_uri, settings.home):
        # SQLite creates the database file but not its folder.
        settings.home.resolve().mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(
        mlflow_location.registry_uri(settings.home, settings.registry_uri, tracking=tracking_uri)
    )
    experiment_id = _ensure_experiment(settings, tracking_uri)
    try:
        mlflow.set_experiment(experiment_id=experiment_id)
    except MlflowException as exc:
        raise TrackingError(
            f"Cannot use experiment {settings.experiment!r}: {exc.message}"
        ) from exc
    return experiment_id


def _ensure_experiment(settings: TrackingSettings, tracking_uri: str) -> str:
    """Get the experiment, creating it (with a pinned artifact location for local stores)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        existing = client.get_experiment_by_name(settings.experiment)
        if existing is not None:
            return str(existing.experiment_id)
        artifact_location = None
        if not mlflow_location.is_server(tracking_uri):
            artifact_location = experiment_artifact_location(settings)
        return client.create_experiment(settings.experiment, artifact_location=artifact_location)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_ALREADY_EXISTS":  # created concurrently by another process
            raced = client.get_experiment_by_name(settings.experiment)
            if raced is not None:
                return str(raced.experiment_id)
        raise TrackingError(
            f"Cannot use the MLflow tracking store at {redact_uri(tracking_uri)}: {exc.message}"
        ) from exc


def mlflow_params(values: dict[str, Any]) -> dict[str, Any]:
    """A nested config flattened into MLflow parameters that MLflow accepts.

    Keys are joined with ``.``; characters MLflow refuses in a name (a threshold's ``"*"``
    default, a column name with ``%`` or parentheses) become ``_`` (so ``thresholds.*`` is
    logged as ``thresholds._``); lists and dicts are logged as JSON, and values are cut to
    MLflow's length limit. Two keys that clean to the same name get a numeric suffix rather
    than one silently replacing the other. The config itself is also logged whole, as JSON.
    """
    import json

    out: dict[str, Any] = {}
    for key, value in _flatten(values).items():
        name = _PARAM_NAME_BAD.sub("_", key) or "_"
        unique, n = name, 2
        while unique in out:
            unique, n = f"{name}_{n}", n + 1
        if isinstance(value, list | dict):
            value = json.dumps(value)
        text = value if not isinstance(value, str) else value[:_PARAM_VALUE_MAX]
        out[unique] = text
    return out


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
