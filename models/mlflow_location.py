"""Where MLflow lives: the one answer training, serving and the CLI all use.

A team that points ``MLFLOW_TRACKING_URI`` at its ``mlflow server`` must get that server
from every part of leadscore (training runs, the registry, the service's model loading);
without it, everything uses the embedded store inside the project folder:
``sqlite:///<home>/mlflow.db`` with artifacts under ``<home>/mlruns/``.

Precedence, the same everywhere (an explicit argument is a caller's own setting, such as
the service's ``LEADSCORE_TRACKING_URI``):

1. the ``explicit`` argument;
2. ``MLFLOW_TRACKING_URI`` (MLflow's own variable, so MLflow's tools agree);
3. ``LEADSCORE_TRACKING_URI`` (accepted for older ``.env`` files);
4. the embedded store under ``home``.

The registry follows the tracking store unless ``MLFLOW_REGISTRY_URI`` (or
``LEADSCORE_REGISTRY_URI``) names another one. The environment is read when a function is
called, never at import; MLflow itself is not imported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

EMBEDDED_DB = "mlflow.db"
EMBEDDED_ARTIFACTS = "mlruns"
TRACKING_ENV = ("MLFLOW_TRACKING_URI", "LEADSCORE_TRACKING_URI")
REGISTRY_ENV = ("MLFLOW_REGISTRY_URI", "LEADSCORE_REGISTRY_URI")

# Stores reached over HTTP pick their own artifact location (the server's
# --default-artifact-root or artifact proxy); every other store is opened by this process.
_SERVER_SCHEMES = frozenset({"http", "https", "databricks", "databricks-uc", "uc"})


def embedded_tracking_uri(home: Path) -> str:
    """The SQLite store inside the project folder, as an absolute URI."""
    return f"sqlite:///{Path(home).resolve() / EMBEDDED_DB}"


def tracking_uri(home: Path, explicit: str | None = None) -> str:
    """The tracking store to use (see the module docstring for the precedence)."""
    return _first_set(explicit, *TRACKING_ENV) or embedded_tracking_uri(home)


def registry_uri(home: Path, explicit: str | None = None, *, tracking: str | None = None) -> str:
    """The model registry: ``MLFLOW_REGISTRY_URI`` if set, else the tracking store."""
    return _first_set(explicit, *REGISTRY_ENV) or tracking or tracking_uri(home)


def is_embedded(uri: str, home: Path) -> bool:
    return uri == embedded_tracking_uri(home)


def is_server(uri: str) -> bool:
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


def _first_set(explicit: str | None, *names: str) -> str | None:
    """The explicit value, else the first environment variable set to a non-blank value.

    ``MLFLOW_TRACKING_URI=`` (exported but empty) means "not set", not an empty URI.
    """
    if explicit is not None and explicit.strip():
        return explicit.strip()
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None
