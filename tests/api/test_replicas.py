"""Two stateless replicas on one PostgreSQL log, following the registry alias on their own.

The processes of ``deploy/compose.yaml``, started on loopback with that file's settings
(the API replicas' environment is read from it; only host names become 127.0.0.1 and
the follow interval is shortened): an ``mlflow server`` serving its own artifacts, two
``python -m serving`` replicas with separate model caches (no shared file), PostgreSQL
(a fresh schema of the ``test`` database). The client plays nginx's part (round robin).

Under load, ``champion`` moves from version 1 to 2: no request fails, both replicas serve
version 2 within the follow interval (plus the new model's download and check), a third
replica started after the promotion serves version 2, and concurrent duplicate outcomes
posted to both replicas are recorded once each.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from tests.api.test_api import ADMIN, CRM, SALES, lead
from tests.scorelog_db import postgres_schema as fresh_postgres_schema
from tests.servers import Server, env_without_mlflow, free_port, running, running_together

pytestmark = pytest.mark.slow

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"
MODEL = "lead-readiness"
FOLLOW_S = 2.0
#: Downloading and checking the new version (a separate process loads it) on top of the
#: follow interval and its jitter; generous because the test box may be loaded.
SWITCH_BUDGET_S = FOLLOW_S * 1.2 + 20


def replica_environment(tracking: str, database: str, cache: Path) -> dict[str, str]:
    """The compose file's API environment, pointed at loopback processes."""
    compose = yaml.safe_load(COMPOSE.read_text())
    declared = compose["services"]["api"]["environment"]
    env = {k: str(v) for k, v in declared.items() if not str(v).startswith("${")}
    assert env["LEADSCORE_MODEL_URI"] == f"models:/{MODEL}@champion"
    assert env["LEADSCORE_TRACKING_URI"] == "http://mlflow:5000"
    env |= {
        "LEADSCORE_TRACKING_URI": tracking,
        "LEADSCORE_DATABASE_URL": database,
        "LEADSCORE_MODEL_CACHE_DIR": str(cache),
        "LEADSCORE_MODEL_FOLLOW_S": str(FOLLOW_S),
        "LEADSCORE_API_KEYS_CRM": CRM,
        "LEADSCORE_API_KEYS_SALES": SALES,
        "LEADSCORE_API_KEYS_ADMIN": ADMIN,
        "LEADSCORE_HOME": str(cache.parent),
        # No load balancer to drain from in the test: stop at once.
        "LEADSCORE_SHUTDOWN_GRACE_S": "0",
    }
    return {**env_without_mlflow(), **env}


def mlflow_environment() -> dict[str, str]:
    compose = yaml.safe_load(COMPOSE.read_text())
    declared = compose["services"]["mlflow"]["environment"]
    return {**env_without_mlflow(), **{k: str(v) for k, v in declared.items()}}


def mlflow_command(port: int, root: Path) -> list[str]:
    """``mlflow server`` with the compose file's flags; SQLite stands in for its PostgreSQL."""
    compose = yaml.safe_load(COMPOSE.read_text())
    flags = [f for f in compose["services"]["mlflow"]["command"][2:] if f.startswith("--")]
    assert "--serve-artifacts" in flags
    local = {
        "--host": "127.0.0.1",
        "--port": str(port),
        "--workers": "1",
        "--backend-store-uri": f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination": str(root / "mlartifacts"),
    }
    command = [str(Path(sys.executable).with_name("mlflow")), "server"]
    for flag in flags:
        name = flag.split("=", 1)[0]
        command.append(f"{name}={local[name]}" if name in local else flag)
    return command


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh schema of the test database, as a URL the replicas use; dropped afterwards."""
    with fresh_postgres_schema("test_replicas") as url:
        yield url


def log_version(model_dir: Path) -> str:
    """Log and register the model folder as a new version (alias challenger)."""
    import mlflow

    from models.pyfunc import ARTIFACT_KEY, ReadinessPyfunc, signature
    from models.readiness import ReadinessModel
    from training import registry

    model = ReadinessModel.load(model_dir)
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ReadinessPyfunc(),
            artifacts={ARTIFACT_KEY: str(model_dir)},
            signature=signature(model.builder.spec, model.stages),
            pip_requirements=["mlflow"],
        )
    return registry.register(info.model_uri, name=MODEL, run_id=run.info.run_id).version


def call(url: str, body: Any = None, key: str = CRM) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", "X-API-Key": key}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return 0, str(exc)


class Load:
    """Clients scoring leads round robin over the replicas until stopped."""

    def __init__(self, urls: list[str], clients: int = 4) -> None:
        self.urls, self.stop = urls, threading.Event()
        self.failures: list[tuple[int, Any]] = []
        self.latencies: list[float] = []
        self.versions: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(c,)) for c in range(clients)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def _run(self, client: int) -> None:
        i = 0
        while not self.stop.is_set():
            url = self.urls[(client + i) % len(self.urls)]
            started = time.perf_counter()
            status, body = call(f"{url}/v1/score", lead(f"L-{client}-{i % 50}"))
            self.latencies.append(time.perf_counter() - started)
            if status != 200:
                self.failures.append((status, body))
            else:
                self.versions.append(body["model"]["version"])
            i += 1


def served_version(url: str) -> str:
    status, body = call(f"{url}/v1/model", key=SALES)
    return str(body["version"]) if status == 200 else f"status {status}"


def test_two_replicas_follow_a_promotion_under_load_and_record_outcomes_once(
    mlflow_isolated: None,
    mlflow_db_template: Path,
    trained_model_dir: Path,
    postgres_schema: str,
    tmp_path: Path,
) -> None:
    import shutil

    import mlflow
    from mlflow import MlflowClient

    shutil.copyfile(mlflow_db_template, tmp_path / "mlflow.db")  # migrated once per session
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    mlflow_port = free_port()
    tracking = f"http://127.0.0.1:{mlflow_port}"
    with ExitStack() as stack:
        stack.enter_context(
            running(
                mlflow_command(mlflow_port, tmp_path), health_url=f"{tracking}/health",
                log=tmp_path / "mlflow.log", cwd=tmp_path, env=mlflow_environment(),
            )
        )  # fmt: skip
        timings["mlflow up"] = time.monotonic() - t0
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(tracking)
        client = MlflowClient()
        assert log_version(trained_model_dir) == "1"
        client.set_registered_model_alias(MODEL, "champion", "1")
        assert log_version(trained_model_dir) == "2"  # challenger, not yet promoted
        timings["registered"] = time.monotonic() - t0

        urls, replicas = [], []
        for n in range(3):
            port = free_port()
            home = tmp_path / f"replica-{n}"
            home.mkdir()
            replicas.append(
                Server(
                    [sys.executable, "-m", "serving", "--port", str(port), "--workers", "1"],
                    health_url=f"http://127.0.0.1:{port}/readyz",
                    log=home / "serve.log",
                    cwd=home,
                    env=replica_environment(tracking, postgres_schema, home / "model-cache"),
                    timeout=120,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        late, late_url = replicas.pop(), urls.pop()  # started after the promotion
        stack.enter_context(running_together(replicas))
        timings["replicas up"] = time.monotonic() - t0
        assert [served_version(u) for u in urls] == ["1", "1"]

        with Load(urls) as load:
            time.sleep(2)
            client.set_registered_model_alias(MODEL, "champion", "2")
            promoted = time.monotonic()
            # A replica started later gets the same model (start-up overlaps the wait).
            late_errors: list[BaseException] = []

            def start_late() -> None:
                try:
                    stack.enter_context(running_together([late]))
                except BaseException as exc:  # re-raised below, in the test's thread
                    late_errors.append(exc)

            starter = threading.Thread(target=start_late)
            starter.start()
            switched: dict[str, float] = {}
            while len(switched) < 2 and time.monotonic() - promoted < SWITCH_BUDGET_S:
                for url in urls:
                    if url not in switched and served_version(url) == "2":
                        switched[url] = time.monotonic() - promoted
                time.sleep(0.1)
            time.sleep(1)
        assert load.failures == []
        assert len(load.latencies) > 50
        assert set(switched) == set(urls), f"not on version 2 after {SWITCH_BUDGET_S} s"
        assert {"1", "2"} <= set(load.versions)
        starter.join()
        if late_errors:
            raise late_errors[0]
        assert served_version(late_url) == "2"
        p99 = pd.Series(load.latencies).quantile(0.99)
        timings["promoted"] = time.monotonic() - t0
        print(f"\n{timings}")
        print(f"\nswitch after {sorted(switched.values())} s; p99 {p99 * 1000:.0f} ms")

        # Concurrent duplicates to both replicas: one row per idempotency key.
        keys = [f"crm-event-{i}" for i in range(10)]
        answers: list[int] = []

        def post(url: str, key: str, gate: threading.Barrier) -> None:
            outcome = {
                "lead_id": "L-0-1", "outcome": "stage_reached", "stage": "sql",
                "occurred_at": "2026-03-02T10:00:00Z", "idempotency_key": key,
            }  # fmt: skip
            gate.wait()
            answers.append(call(f"{url}/v1/outcomes", outcome)[0])

        for key in keys:
            gate = threading.Barrier(4)
            posts = [threading.Thread(target=post, args=(u, key, gate)) for u in urls * 2]
            for t in posts:
                t.start()
            for t in posts:
                t.join()
        assert sorted(answers) == sorted([201] * len(keys) + [200] * 3 * len(keys))

        # Whichever replica answers, the ranked list is the same.
        lists = [call(f"{u}/v1/leads/ranked?limit=100", key=SALES)[1] for u in urls]
        assert lists[0] == lists[1] and lists[0]["total"] > 0

    engine = sa.create_engine(postgres_schema)
    with engine.connect() as conn:
        outcomes = conn.execute(sa.text("SELECT count(*) FROM outcomes")).scalar_one()
    engine.dispose()
    assert outcomes == len(keys)
