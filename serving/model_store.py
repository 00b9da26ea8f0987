"""Which model this worker serves, where it came from, and how it is replaced safely.

* **Nothing is loaded before it was checked in another process.** Every model's files
  (from the registry, a local folder or the cache) go through
  :func:`serving.model_verify.verify` first, which loads them in a separate process: a
  file that makes LightGBM abort kills that process, not the worker. Any failure, of
  any kind, leaves the current model serving and says why.
* **Start-up** loads ``model_uri`` (a registry alias such as
  ``models:/lead-readiness@champion``, a version, or a local folder), with a deadline
  on the registry (``registry_deadline_s``). When that fails, the worker serves its
  **last known good** copy and says so (``fallback``, shown by /readyz and /v1/model);
  with no copy it stays up, not ready.
* **Following the alias**: every ``model_follow_s`` each worker asks the registry
  where the alias points; a new version is fetched, checked, published and swapped in.
  Replicas converge on a promotion by themselves, without a shared folder; a version
  that failed its checks is not tried again until the alias moves (or an admin
  reloads).
* **Reload** (``POST /admin/reload``) does the same at once; a swap is one reference
  assignment, so no request ever sees half a model.
* **Workers on one machine** share the cache folder: whoever fetched a version
  publishes it there (an immutable folder per version, renamed into place, with the
  verification marker), and the others adopt it within ``model_poll_s``.
* **Older versions** (to replay a score with the model that produced it) come from
  :meth:`ModelStore.model_version`, checked the same way and kept in a small LRU.
"""

from __future__ import annotations

import fcntl
import gc
import json
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from features.spec import load_spec
from models import registry_fetch
from models.golden import check_golden
from models.mlflow_location import redact_uri
from models.readiness import ReadinessModel
from serving.model_verify import ModelCheckError, verify
from serving.settings import ServingSettings

log = logging.getLogger(__name__)
POINTER = "current.json"
MODEL_FILE = registry_fetch.MODEL_FILE


class ModelLoadError(RuntimeError):
    """A model could not be fetched (``kind='fetch'``) or trusted (``'check'``)."""

    def __init__(self, message: str, kind: Literal["fetch", "check"] = "check") -> None:
        super().__init__(message)
        self.kind = kind


class ReloadBusyError(RuntimeError):
    """Another reload is running (in this worker or another one)."""


@dataclass(frozen=True)
class ServedModel:
    model: ReadinessModel
    name: str
    version: str
    source: str  # "registry", "cache" or "local"
    loaded_at: str


class ModelStore:
    """Holds the served model for one worker; swaps are a single reference assignment."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.cache_dir = settings.path(settings.model_cache_dir)
        self.current: ServedModel | None = None
        self.problem: str | None = "model not loaded yet"
        # What /readyz may tell anyone: our own words, no exception text, hosts or paths.
        self.public_problem = "The model is not loaded yet."
        #: Set while serving something other than what ``model_uri`` names (public words).
        self.fallback: str | None = None
        #: The reason behind ``fallback``, for keyed callers (/v1/model) and the log.
        self.fallback_reason: str | None = None
        self._reload_lock = threading.Lock()
        spec = load_spec(settings.spec)
        self._spec = (spec.name, spec.version)
        self._failed: dict[tuple[str, str], str] = {}  # registry versions that failed checks
        self._versions: OrderedDict[tuple[str, str], ServedModel] = OrderedDict()
        self._versions_lock = threading.Lock()
        self._version_locks: dict[tuple[str, str], threading.Lock] = {}

    # -- start-up --------------------------------------------------------------------

    def load_initial(self) -> None:
        """The configured model; the last known good copy when that cannot be used."""
        try:
            served = self._fetch(self.settings.model_uri)
        except ModelLoadError as exc:
            log.warning("could not load %s: %s", redact_uri(self.settings.model_uri), exc)
            cached = self._from_cache()
            if cached is None:
                self.problem = f"no model: {exc}; and no last known good copy"
                self.public_problem = (
                    "The model could not be loaded and there is no last known good copy; "
                    "the service log says why."
                )
                return
            log.warning("serving the last known good copy, version %s", cached.version)
            self._swap(cached)
            self._fall_back(cached, exc)
            return
        self._swap(served)

    # -- reload, follow, adopt -------------------------------------------------------

    def reload(self) -> tuple[str | None, ServedModel]:
        """Fetch, verify, publish and swap; (previous version, new model). Raises on failure."""
        if not self._reload_lock.acquire(blocking=False):
            raise ReloadBusyError("a reload is already running in this worker")
        try:
            with self._cross_worker_lock():
                before = self.current.version if self.current else None
                served = self._fetch(self.settings.model_uri, retry_failed=True)
                self._swap(served)
                return before, served
        finally:
            self._reload_lock.release()

    def follow(self) -> bool:
        """Swap to the version the registry alias names now, if it changed; True if swapped.

        A registry that cannot be reached changes nothing (the model serves on); a new
        version that fails its checks is remembered and not tried again.
        """
        uri = self.settings.model_uri
        if not registry_fetch.is_registry_uri(uri) or "@" not in uri:
            return False
        try:
            name, version = self._resolve(uri)
        except ModelLoadError as exc:
            log.info("following %s: %s", uri, exc)
            return False
        current = self.current
        if current is not None and (current.name, current.version) == (name, version):
            self.fallback = self.fallback_reason = None  # what the alias names is served
            return False
        if (name, version) in self._failed or not self._reload_lock.acquire(blocking=False):
            return False
        try:
            served = self._obtain(name, version, publish_pointer=True)
        except ModelLoadError as exc:
            log.warning("%s now names version %s, which cannot be served: %s", uri, version, exc)
            if current is not None:
                self._fall_back(current, exc, wanted=version)
            return False
        finally:
            self._reload_lock.release()
        log.warning("%s moved to version %s: now serving it", uri, version)
        self._swap(served)
        return True

    def poll(self) -> bool:
        """Adopt a model another worker published; True when this worker swapped."""
        pointer = self._read_pointer()
        if pointer is None or (self.current and self.current.version == pointer["version"]):
            return False
        cached = self._from_cache()
        if cached is None:
            return False
        self._swap(cached)
        return True

    # -- older versions (replays) ----------------------------------------------------

    def model_version(self, version: str) -> ServedModel:
        """The model of registered ``version`` of the served model's name, checked like any.

        The served version is returned as it is; others come from the cache folder or
        the registry, pass the same separate-process check, and the last
        ``model_versions_cached`` of them stay loaded. Blocking: call it from a thread.
        Raises :class:`ModelLoadError`.
        """
        current = self.current
        if current is not None and current.version == version:
            return current
        uri = self.settings.model_uri
        if not registry_fetch.is_registry_uri(uri):
            raise ModelLoadError(
                f"version {version} is not available: the service serves a local folder",
                kind="fetch",
            )
        name, _ = registry_fetch.parse_models_uri(uri)
        key = (name, version)
        with self._versions_lock:
            lock = self._version_locks.setdefault(key, threading.Lock())
        with lock:  # one fetch per version, however many replays ask at once
            with self._versions_lock:
                hit = self._versions.get(key)
                if hit is not None:
                    self._versions.move_to_end(key)
                    return hit
            served = self._obtain(name, version, publish_pointer=False)
            with self._versions_lock:
                self._versions[key] = served
                while len(self._versions) > self.settings.model_versions_cached:
                    self._versions.popitem(last=False)
            return served

    # -- fetching --------------------------------------------------------------------

    def fetch(self, uri: str) -> ServedModel:
        """The model behind ``uri``, downloaded and checked, without changing what is served.

        For jobs beside the service (batch scoring, Spark): with a private
        ``model_cache_dir`` nothing the service reads is touched.
        """
        return self._fetch(uri)

    def _fetch(self, uri: str, *, retry_failed: bool = False) -> ServedModel:
        if registry_fetch.is_registry_uri(uri):
            name, version = self._resolve(uri)
            if retry_failed:
                self._failed.pop((name, version), None)
            return self._obtain(name, version, publish_pointer=True)
        try:
            folder = registry_fetch.model_folder(Path(uri))
        except registry_fetch.ModelFetchError as exc:
            raise ModelLoadError(str(exc), kind="fetch") from exc
        return self._local(folder)

    def _resolve(self, uri: str) -> tuple[str, str]:
        settings = self.settings
        registry_fetch.bound_mlflow_http(settings.registry_retries, settings.registry_timeout_s)
        try:
            return registry_fetch.resolve_version(
                uri,
                settings.resolved_tracking_uri(),
                registry_uri=settings.resolved_registry_uri(),
                deadline_s=settings.registry_deadline_s,
            )
        except registry_fetch.ModelFetchError as exc:
            raise ModelLoadError(str(exc), kind="fetch") from exc

    def _obtain(self, name: str, version: str, *, publish_pointer: bool) -> ServedModel:
        """Registered ``version``: from the cache if published there, else downloaded."""
        if (name, version) in self._failed:
            raise ModelLoadError(self._failed[(name, version)])
        target = self.cache_dir / f"{name}-v{version}"
        try:
            if not (target / MODEL_FILE).exists():
                self._download_into(f"models:/{name}/{version}", target)
            served = self._load_checked(target, name, version, "registry")
        except ModelLoadError as exc:
            if exc.kind == "check":  # a version's files do not change; a registry outage does
                self._failed[(name, version)] = str(exc)
            raise
        if publish_pointer:
            self._point_to(target, name, version)
        return served

    def _download_into(self, uri: str, target: Path) -> None:
        """Download into a private staging folder, check it there, then rename it into place.

        A folder under its final name has always passed its check: a copy that fails
        never becomes the last known good one.
        """
        settings = self.settings
        registry_fetch.bound_mlflow_http(settings.registry_retries, settings.registry_timeout_s)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=".download-"))
        try:
            try:
                folder, _, _ = registry_fetch.download(
                    uri,
                    settings.resolved_tracking_uri(),
                    staging,
                    registry_uri=settings.resolved_registry_uri(),
                    deadline_s=settings.registry_deadline_s,
                )
            except registry_fetch.ModelFetchError as exc:
                raise ModelLoadError(str(exc), kind="fetch") from exc
            self._check_and_place(folder, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _local(self, folder: Path) -> ServedModel:
        """A local folder is copied first: the user may overwrite it while we check it."""
        version = registry_fetch.local_version(folder)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=".local-"))
        try:
            snapshot = staging / "model"
            shutil.copytree(folder, snapshot)
            sha = self._check(snapshot)
            target = self.cache_dir / f"local-{sha[:16]}"
            self._check_and_place(snapshot, target)
        except OSError as exc:
            raise ModelLoadError(f"cannot copy the model folder: {exc}", kind="fetch") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        served = self._load_checked(target, "local", version, "local")
        self._point_to(target, "local", version)
        return served

    def _check(self, folder: Path) -> str:
        try:
            return verify(folder, self._spec, timeout_s=self.settings.model_verify_timeout_s)
        except ModelCheckError as exc:
            raise ModelLoadError(str(exc)) from exc

    def _check_and_place(self, folder: Path, target: Path) -> None:
        """Check ``folder``, mark it, and rename it to ``target`` (a race loser's copy goes)."""
        self._check(folder)  # leaves the marker in the folder, which moves with it
        try:
            os.rename(folder, target)
        except OSError:
            if not (target / MODEL_FILE).exists():
                raise ModelLoadError(f"cannot publish the model to {target.name}") from None

    def _load_checked(self, folder: Path, name: str, version: str, source: str) -> ServedModel:
        """Load a folder in this process, once its bytes passed the separate-process check."""
        self._check(folder)
        try:
            model = ReadinessModel.load(folder)
            problems = check_golden(model, folder)
        except Exception as exc:  # checked in a subprocess already; still never fatal
            raise ModelLoadError(f"cannot load the model: {type(exc).__name__}") from exc
        trained = (model.builder.spec.name, model.builder.spec.version)
        if trained != self._spec:
            raise ModelLoadError(
                f"model was trained on spec {trained[0]} v{trained[1]}, the API accepts "
                f"{self._spec[0]} v{self._spec[1]}"
            )
        if problems:
            raise ModelLoadError(f"golden rows not reproduced: {'; '.join(problems[:3])}")
        model.metadata["version"] = version
        model.metadata["name"] = name
        return ServedModel(model, name, version, source, datetime.now(UTC).isoformat())

    # -- the shared cache ------------------------------------------------------------

    def _point_to(self, target: Path, name: str, version: str) -> None:
        """Point current.json at a published folder, atomically."""
        pointer = {"name": name, "version": version, "path": target.name}
        pointer["uri"] = self.settings.model_uri
        handle, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{POINTER}.")
        with os.fdopen(handle, "w") as out:
            json.dump(pointer, out)
        os.replace(tmp, self.cache_dir / POINTER)

    def _read_pointer(self) -> dict[str, str] | None:
        """The published model, if it was published for the model URI this worker serves.

        A copy cached for another URI (say, the registry alias, while this worker was
        told to serve a local folder) is never adopted.
        """
        try:
            data = json.loads((self.cache_dir / POINTER).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("uri") != self.settings.model_uri:
            return None
        return data

    def _from_cache(self) -> ServedModel | None:
        pointer = self._read_pointer()
        if pointer is None:
            return None
        try:
            folder = self.cache_dir / pointer["path"]
            return self._load_checked(folder, pointer["name"], pointer["version"], "cache")
        except (KeyError, ModelLoadError) as exc:
            log.warning("the cached model cannot be used: %s", exc)
            return None

    # -- state -----------------------------------------------------------------------

    def _swap(self, served: ServedModel) -> None:
        self.current = served  # one assignment: readers see the old or the new model
        self.problem = None
        self.public_problem = ""
        self.fallback = self.fallback_reason = None
        _freeze_heap()
        log.info("serving %s version %s (%s)", served.name, served.version, served.source)

    def _fall_back(
        self, serving: ServedModel, error: ModelLoadError, wanted: str | None = None
    ) -> None:
        what = f"version {wanted} of the model" if wanted else "the configured model"
        why = "could not be fetched" if error.kind == "fetch" else "failed its checks"
        self.fallback = (
            f"Serving the last known good model, version {serving.version}: {what} {why}."
        )
        self.fallback_reason = str(error)

    @contextmanager
    def _cross_worker_lock(self) -> Iterator[None]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with (self.cache_dir / ".reload.lock").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ReloadBusyError("a reload is already running in another worker") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _freeze_heap() -> None:
    """Move everything alive now (model, libraries) out of the garbage collector's sight.

    MLflow, pandas and the model leave millions of long-lived objects; every full
    collection walked them all and paused a worker for 100-150 ms, which was the whole
    p99 under load (measured: p99 170 ms before, 21 ms after, at 8 connections). What is
    frozen is never freed, so this runs only after a model swap, a rare event.
    """
    gc.collect()
    gc.freeze()
