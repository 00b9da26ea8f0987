"""Where the served model comes from: the registry, the last known good copy, other workers."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import mlflow
import pytest

from serving.model_store import ModelLoadError, ModelStore
from serving.settings import ServingSettings
from tests.registered_models import MODEL, register_champion, registry_settings
from tests.servers import free_port


@pytest.fixture
def registered(mlflow_home: Path, trained_model_dir: Path) -> ServingSettings:
    version = register_champion(trained_model_dir)
    assert version == "1"
    return registry_settings(mlflow_home, mlflow.get_tracking_uri())


def test_loads_the_champion_from_the_registry_and_keeps_a_local_copy(
    registered: ServingSettings,
) -> None:
    store = ModelStore(registered)
    store.load_initial()
    assert store.current is not None
    assert (store.current.name, store.current.version, store.current.source) == (
        MODEL,
        "1",
        "registry",
    )
    pointer = json.loads((registered.home / "cache" / "current.json").read_text())
    assert pointer == {
        "name": MODEL,
        "version": "1",
        "path": f"{MODEL}-v1",
        "uri": "models:/lead-readiness@champion",
    }


def test_unreachable_registry_falls_back_to_the_last_known_good_copy_in_bounded_time(
    registered: ServingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ModelStore(registered).load_initial()  # publishes version 1 to the cache
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # the registry is the dead store
    dead = registry_settings(registered.home, f"http://127.0.0.1:{free_port()}")
    store = ModelStore(dead)
    started = time.monotonic()
    store.load_initial()
    assert time.monotonic() - started < 30
    assert store.current is not None
    assert (store.current.version, store.current.source) == ("1", "cache")


def test_no_registry_and_no_copy_means_not_ready_with_a_reason(tmp_path: Path) -> None:
    store = ModelStore(registry_settings(tmp_path, f"http://127.0.0.1:{free_port()}"))
    store.load_initial()
    assert store.current is None
    assert store.problem is not None and "no last known good copy" in store.problem


def test_other_workers_adopt_a_published_model(
    registered: ServingSettings, trained_model_dir: Path
) -> None:
    reloading, watching = ModelStore(registered), ModelStore(registered)
    reloading.load_initial()
    watching.load_initial()
    register_champion(trained_model_dir, run_metric=0.5)  # version 2 becomes champion
    before, served = reloading.reload()
    assert (before, served.version) == ("1", "2")
    assert watching.current is not None and watching.current.version == "1"
    assert watching.poll() is True
    assert watching.current.version == "2" and watching.current.source == "cache"
    assert watching.poll() is False


def test_a_model_that_does_not_reproduce_its_golden_rows_is_refused(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(trained_model_dir, tampered)
    golden = json.loads((tampered / "golden.json").read_text())
    golden["expected"][0]["probabilities"]["sql"] += 0.01
    (tampered / "golden.json").write_text(json.dumps(golden))
    store = ModelStore(registry_settings(tmp_path, "unused", model_uri=str(trained_model_dir)))
    store.load_initial()
    assert store.current is not None
    store.settings.model_uri = str(tampered)
    with pytest.raises(ModelLoadError, match=r"golden rows not reproduced: golden row 0: P\(sql\)"):
        store.reload()
    assert store.current.source == "local"


def test_a_cached_copy_of_another_model_uri_is_never_adopted(
    registered: ServingSettings, trained_model_dir: Path
) -> None:
    ModelStore(registered).load_initial()  # caches the registry champion
    local = registry_settings(registered.home, "unused", model_uri=str(trained_model_dir))
    store = ModelStore(local)
    store.load_initial()
    assert store.current is not None and store.current.source == "local"
    assert store.poll() is False
    assert store.current.source == "local"


def test_a_model_trained_on_another_spec_is_refused(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    store = ModelStore(
        registry_settings(tmp_path, "unused", model_uri=str(trained_model_dir), spec="x_education")
    )
    store.load_initial()
    assert store.current is None
    assert store.problem is not None
    assert "trained on spec sample_crm v1, the API accepts x_education v1" in store.problem


def test_workers_publishing_the_same_version_at_once_all_succeed(
    registered: ServingSettings,
) -> None:
    stores = [ModelStore(registered) for _ in range(4)]
    threads = [threading.Thread(target=s.load_initial) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [s.current.version if s.current else None for s in stores] == ["1"] * 4
    cache = registered.home / "cache"
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [
        "current.json",
        f"{MODEL}-v1",
    ]


def test_a_registry_kept_apart_from_the_tracking_store_is_where_the_champion_is_found(
    mlflow_home: Path, trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A team with ``MLFLOW_REGISTRY_URI`` set trains and serves from the same registry."""
    registry_db = mlflow_home / "registry.db"
    registry_uri = f"sqlite:///{registry_db}"
    shutil.copy(mlflow_home / "mlflow.db", registry_db)  # an empty, migrated store
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry_uri)
    mlflow.set_registry_uri(registry_uri)
    assert register_champion(trained_model_dir) == "1"
    tracking = mlflow.get_tracking_uri()
    tracking_only = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    assert tracking_only.search_registered_models() == []  # the champion is not there

    store = ModelStore(registry_settings(mlflow_home, mlflow.get_tracking_uri()))
    store.load_initial()

    assert store.current is not None
    assert (store.current.name, store.current.version, store.current.source) == (
        MODEL,
        "1",
        "registry",
    )
