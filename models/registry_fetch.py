"""Fetching a readiness model by URI: a registry alias or version, or a local folder.

Serving (start-up, reloads, replays of old scores), ``make run``'s bootstrap and
training's champion-versus-challenger comparison all need "give me the model behind
``models:/lead-readiness@champion``". This module is that one place; it imports MLflow
lazily so reading it costs nothing until a registry is really asked.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from models.mlflow_location import redact_uri

T = TypeVar("T")

MODEL_FILE = "model.json"


class ModelFetchError(RuntimeError):
    """A model could not be found or downloaded; the message says which, without secrets."""


class ModelNotFoundError(ModelFetchError):
    """The registry answered, and it has no such model, version or alias: retrying won't help."""


def bound_mlflow_http(retries: int = 2, timeout_s: float = 10.0) -> None:
    """MLflow's defaults retry for ~4 minutes; a service or a CLI must know within ~30 s.

    ``setdefault``: a value the user exported explicitly still wins.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout_s)))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    # A progress bar per download is noise in a service's output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def is_registry_uri(uri: str) -> bool:
    return uri.startswith("models:/")


def parse_models_uri(uri: str) -> tuple[str, str]:
    """``models:/name@alias`` → (name, alias); ``models:/name/3`` → (name, "3")."""
    body = uri.removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        if name and alias:
            return name, alias
    else:
        name, _, version = body.partition("/")
        if name and version:
            return name, version
    raise ModelFetchError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")


def within(deadline_s: float | None, what: str, call: Callable[[], T]) -> T:
    """``call()``, or :class:`ModelFetchError` once ``deadline_s`` seconds have passed.

    MLflow's own timeouts bound each HTTP request, but retries, back-off and a download
    of several files add up (a registry that accepts connections and never answers was
    detected after 43 s). The call runs in a daemon thread so the caller knows at the
    deadline; the abandoned thread ends by itself at MLflow's own timeouts.
    """
    if deadline_s is None:
        return call()
    box: queue.SimpleQueue[tuple[bool, object]] = queue.SimpleQueue()

    def run() -> None:
        try:
            box.put((True, call()))
        except BaseException as exc:  # handed to the caller, not lost
            box.put((False, exc))

    threading.Thread(target=run, name="registry-call", daemon=True).start()
    try:
        ok, value = box.get(timeout=deadline_s)
    except queue.Empty:
        raise ModelFetchError(f"{what} did not answer within {deadline_s:g} s") from None
    if ok:
        return value  # type: ignore[return-value]
    assert isinstance(value, BaseException)
    raise value


def resolve_version(
    uri: str,
    tracking_uri: str,
    *,
    registry_uri: str | None = None,
    deadline_s: float | None = None,
) -> tuple[str, str]:
    """(name, version number) that a registry URI points at right now.

    The registry is ``registry_uri`` when a team keeps it apart from the tracking store
    (``MLFLOW_REGISTRY_URI``), else the tracking store itself, as MLflow does.
    """
    registry = registry_uri or tracking_uri
    what = f"registry at {redact_uri(registry)}"
    return within(deadline_s, what, lambda: _resolve_version(uri, tracking_uri, registry))


def _resolve_version(uri: str, tracking_uri: str, registry_uri: str) -> tuple[str, str]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, ref = parse_models_uri(uri)
    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
        if ref.isdigit():
            return name, str(client.get_model_version(name, ref).version)
        return name, str(client.get_model_version_by_alias(name, ref).version)
    except (MlflowException, OSError) as exc:
        missing = getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"
        error = ModelNotFoundError if missing else ModelFetchError
        raise error(f"registry at {redact_uri(registry_uri)} failed: {exc}") from exc


def download(
    uri: str,
    tracking_uri: str,
    target: Path,
    *,
    registry_uri: str | None = None,
    deadline_s: float | None = None,
) -> tuple[Path, str, str]:
    """Download the version a registry URI names into ``target``: (model folder, name, version).

    With ``deadline_s``, the whole of it (resolving and every file) must end by then.
    """
    registry = registry_uri or tracking_uri
    what = f"registry at {redact_uri(registry)}"
    return within(deadline_s, what, lambda: _download(uri, tracking_uri, registry, target))


def _download(
    uri: str, tracking_uri: str, registry_uri: str, target: Path
) -> tuple[Path, str, str]:
    import mlflow
    from mlflow.exceptions import MlflowException

    name, version = _resolve_version(uri, tracking_uri, registry_uri)
    try:
        mlflow.set_registry_uri(registry_uri)
        mlflow.set_tracking_uri(tracking_uri)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(target)
        )
    except (MlflowException, OSError) as exc:
        raise ModelFetchError(f"registry at {redact_uri(registry_uri)} failed: {exc}") from exc
    return model_folder(Path(local)), name, version


def model_folder(path: Path) -> Path:
    """A saved ReadinessModel folder, or the one inside an MLflow model's artifacts."""
    if (path / MODEL_FILE).exists():
        return path
    found = sorted(path.glob(f"**/{MODEL_FILE}")) if path.is_dir() else []
    if not found:
        raise ModelFetchError(f"{path}: no {MODEL_FILE} found (not a leadscore model)")
    return found[0].parent


def local_version(folder: Path) -> str:
    """The version a saved folder says it is (else its training run, else its name)."""
    try:
        meta = json.loads((folder / MODEL_FILE).read_text()).get("metadata", {})
    except (OSError, ValueError):
        meta = {}
    return str(meta.get("version") or meta.get("run_id") or folder.name)
