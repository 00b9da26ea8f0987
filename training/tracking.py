"""Where MLflow keeps leadscore's runs, artifacts and registered models.

Without configuration everything lives inside the project folder (``LEADSCORE_HOME``, default
the current directory): a SQLite store ``mlflow.db`` and artifacts under ``mlruns/``. Both are
git-ignored. Setting ``MLFLOW_TRACKING_URI`` (and optionally ``MLFLOW_REGISTRY_URI``) points
the same code at a shared tracking server instead.

MLflow itself is imported lazily so that reading :class:`TrackingSettings` (e.g. from the
serving app) does not pay MLflow's multi-second import.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_DB = "mlflow.db"
EMBEDDED_ARTIFACTS = "mlruns"

# MLflow's HTTP defaults are 7 retries with exponential backoff (factor 2, capped at 120 s) and a
# 120 s timeout per attempt: an unreachable server makes every call hang for about four minutes,
# a hung one for far longer. For a CLI or a training job that is indistinguishable from a
# deadlock, so we bound both; a user's explicit environment values still win (setdefault).
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

# Stores reached over HTTP pick their own artifact location (the server's
# --default-artifact-root or artifact proxy); every other store is opened by this process, and
# MLflow's client-side default there is ``./mlruns`` relative to whoever runs it.
_SERVER_SCHEMES = frozenset({"http", "https", "databricks", "databricks-uc", "uc"})


class TrackingError(RuntimeError):
    """The tracking store could not be used (unreachable, misconfigured, deleted experiment)."""


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
    experiment: str = "lead-readiness"
    model_name: str = "lead-readiness"
    home: Path = Field(default_factory=Path.cwd)

    @field_validator("tracking_uri", "registry_uri", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """``MLFLOW_TRACKING_URI=`` (exported but empty) means "not set", not an empty URI."""
        if isinstance(value, str) and not value.strip():
            return None
        return value


def embedded_tracking_uri(home: Path) -> str:
    """The SQLite store inside the project folder, as an absolute URI."""
    return f"sqlite:///{home.resolve() / EMBEDDED_DB}"


def resolve_tracking_uri(settings: TrackingSettings) -> str:
    """The explicit tracking URI if one is set, else the embedded SQLite store under ``home``."""
    return settings.tracking_uri or embedded_tracking_uri(settings.home)


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
    if tracking_uri == embedded_tracking_uri(settings.home):
        # SQLite creates the database file but not its folder.
        settings.home.resolve().mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri or tracking_uri)
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
        if not _is_server(tracking_uri):
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


def _is_server(uri: str) -> bool:
    """True when the store is a remote server that chooses artifact locations itself."""
    return urlparse(uri).scheme.lower() in _SERVER_SCHEMES


def redact_uri(uri: str) -> str:
    """The URI without any ``user:password@`` part, safe to print in error messages."""
    parsed = urlparse(uri)
    if parsed.password is None and parsed.username is None:
        return uri
    host = parsed.hostname or ""
    netloc = f"{host}:{parsed.port}" if parsed.port else host
    return parsed._replace(netloc=netloc).geturl()
