"""Issue #13, case 1: no model file may take the service down.

Broken models (a truncated LightGBM head, which makes LightGBM abort the process, and
a head of random bytes) at start-up and on reload, through the real app; following
the registry alias; older versions for replays; a registry that never answers.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from fastapi.testclient import TestClient

from models.pyfunc import ARTIFACT_KEY, ReadinessPyfunc, signature
from models.readiness import ReadinessModel
from serving import model_verify
from serving.app import create_app
from serving.model_store import ModelLoadError, ModelStore
from serving.settings import ServingSettings
from tests.api.test_api import ADMIN, SALES, crm, lead, make_settings
from tests.registered_models import MODEL, register_champion, registry_settings
from training import registry as model_registry

CRASHED = "the model crashed its loader while reading head_sql.txt: a file is truncated or corrupt"
UNREADABLE = (
    "cannot read head_sql.txt: LightGBMError: Unknown model format or submodel type in "
    "model file head_sql.txt"
)


def truncated(good: Path, where: Path) -> Path:
    shutil.copytree(good, where)
    head = where / "head_sql.txt"
    head.write_bytes(head.read_bytes()[: head.stat().st_size // 2])
    return where


def random_bytes(good: Path, where: Path) -> Path:
    shutil.copytree(good, where)
    head = where / "head_sql.txt"
    head.write_bytes(os.urandom(head.stat().st_size))
    return where


BROKEN = {"truncated": (truncated, CRASHED), "random bytes": (random_bytes, UNREADABLE)}


def register_broken(folder: Path, like: Path, run_metric: float) -> str:
    """Register and promote a model folder without ever loading it in this process.

    (Loading a truncated head would abort the test run, which is the point of #13.) The
    signature comes from a good model of the same spec; no input example, so MLflow
    never runs the model either.
    """
    model = ReadinessModel.load(like)
    with mlflow.start_run() as run:
        mlflow.log_metric("test_sql_pr_auc", run_metric)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ReadinessPyfunc(),
            artifacts={ARTIFACT_KEY: str(folder)},
            signature=signature(model.builder.spec, model.stages),
            pip_requirements=["mlflow"],
        )
    version = model_registry.register(info.model_uri, name=MODEL, run_id=run.info.run_id)
    model_registry.promote(MODEL, metric="test_sql_pr_auc", force=True)
    return version.version


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_model_on_reload_answers_502_and_the_old_one_serves_on(
    tmp_path: Path, trained_model_dir: Path, kind: str
) -> None:
    breaker, reason = BROKEN[kind]
    settings = make_settings(tmp_path, trained_model_dir)
    with TestClient(create_app(settings)) as client:
        before = client.get("/v1/model", headers={"X-API-Key": SALES}).json()["version"]
        settings.model_uri = str(breaker(trained_model_dir, tmp_path / "broken"))
        failed = client.post("/admin/reload", headers={"X-API-Key": ADMIN, "X-Request-ID": "r-1"})
        assert failed.status_code == 502
        assert failed.json() == {
            "type": "about:blank",
            "title": "Reload failed",
            "status": 502,
            "detail": f"{reason}. Still serving version {before}.",
            "request_id": "r-1",
        }
        scored = client.post("/v1/score", json=lead(), headers=crm())
        assert scored.status_code == 200 and scored.json()["model"]["version"] == before
        assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("kind", BROKEN)
def test_start_up_with_a_broken_model_serves_the_last_good_copy_and_says_so(
    tmp_path: Path, trained_model_dir: Path, kind: str
) -> None:
    breaker, reason = BROKEN[kind]
    folder = tmp_path / "champion"
    shutil.copytree(trained_model_dir, folder)
    settings = make_settings(tmp_path, folder)
    with TestClient(create_app(settings)) as client:  # publishes the last known good copy
        good = client.get("/v1/model", headers={"X-API-Key": SALES}).json()["version"]
    shutil.rmtree(folder)
    breaker(trained_model_dir, folder)  # the same path now holds a broken model
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        info = client.get("/v1/model", headers={"X-API-Key": SALES}).json()
        scored = client.post("/v1/score", json=lead(), headers=crm())
    message = (
        f"Serving the last known good model, version {good}: "
        "the configured model failed its checks."
    )
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "model": {"name": "local", "version": good, "source": "cache"},
        "warnings": [message],
    }
    assert info["source"] == "cache"
    assert info["fallback"] == {"message": message, "reason": reason}
    assert scored.status_code == 200 and scored.json()["model"]["version"] == good


def test_start_up_with_a_broken_model_and_no_copy_is_up_but_not_ready(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, truncated(trained_model_dir, tmp_path / "broken"))
    with TestClient(create_app(settings)) as client:
        assert client.get("/livez").status_code == 200
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["detail"] == (
        "The model could not be loaded and there is no last known good copy; "
        "the service log says why."
    )


# -- the registry -------------------------------------------------------------------------


@pytest.fixture
def registry(mlflow_home: Path, trained_model_dir: Path) -> ServingSettings:
    assert register_champion(trained_model_dir) == "1"
    return registry_settings(mlflow_home, mlflow.get_tracking_uri())


def test_each_worker_follows_the_alias_and_refuses_a_broken_version(
    registry: ServingSettings,
    trained_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two replicas without a shared folder: each follows the registry on its own.
    replicas = [
        ModelStore(registry),
        ModelStore(registry.model_copy(update={"model_cache_dir": tmp_path / "other"})),
    ]
    for store in replicas:
        store.load_initial()
    assert register_champion(trained_model_dir, run_metric=0.5) == "2"  # promoted to champion
    assert [store.follow() for store in replicas] == [True, True]
    assert [s.current.version for s in replicas if s.current] == ["2", "2"]
    assert [store.follow() for store in replicas] == [False, False]  # nothing new
    bad = truncated(trained_model_dir, tmp_path / "bad")
    assert register_broken(bad, trained_model_dir, run_metric=0.6) == "3"
    store = replicas[0]
    assert store.follow() is False
    assert store.current is not None and store.current.version == "2"
    assert store.fallback == (
        "Serving the last known good model, version 2: version 3 of the model failed its checks."
    )
    checks: list[Path] = []
    # A context, not monkeypatch.undo(): undo would also drop the fixtures' records of the
    # MLflow variables, and the registry would leak into the next test in this process.
    with monkeypatch.context() as patched:
        patched.setattr(model_verify, "_check_in_subprocess", lambda f, *a: checks.append(f))
        assert store.follow() is False  # remembered: not fetched and checked again
    assert checks == []
    with pytest.raises(ModelLoadError, match="crashed its loader"):
        store.reload()
    assert store.current.version == "2"


def test_an_older_version_is_loaded_checked_and_kept_for_replays(
    registry: ServingSettings, trained_model_dir: Path
) -> None:
    store = ModelStore(registry)
    store.load_initial()
    assert register_champion(trained_model_dir, run_metric=0.5) == "2"
    assert store.follow() is True
    old = store.model_version("1")
    assert (old.name, old.version, old.source) == ("lead-readiness", "1", "registry")
    assert store.model_version("1") is old  # from the LRU
    assert store.model_version("2") is store.current
    assert store.current is not None and store.current.version == "2"
    with pytest.raises(ModelLoadError):
        store.model_version("99")


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_registry_that_never_answers_is_given_up_at_the_deadline(
    tmp_path: Path, silent_registry: str
) -> None:
    store = ModelStore(registry_settings(tmp_path, silent_registry, registry_deadline_s=2.0))
    import mlflow  # noqa: F401  (imported before the clock starts: the import is not the registry)

    started = time.monotonic()
    store.load_initial()
    # MLflow's own retries would take 43 s; the margin above 2 s is for a loaded CI box.
    assert time.monotonic() - started < 8
    assert store.current is None
    assert store.problem is not None
    assert "did not answer within 2 s" in store.problem
