"""Replicas on one PostgreSQL log: throughput with 1 and 2, and p99 during a promotion.

    python -m benchmarks.replicas [--seconds 15] [--connections 16]

The processes of ``deploy/compose.yaml`` on loopback (as ``tests/api/test_replicas.py``
starts them): an ``mlflow server`` serving its own artifacts with the champion and a
second version registered, PostgreSQL (a fresh schema of the ``test`` database on
127.0.0.1:5432), and ``python -m serving`` replicas of one worker each, following the
alias every 2 s. ``wrk`` drives single-lead scoring requests (3 actions, reasons on, each
one committed to the log before it is answered); with two replicas, two ``wrk`` share
the connections, playing the proxy's round robin. Then the alias moves to version 2 in
the middle of a run and the run's p99 and failed requests are compared with a quiet
run's. One box runs everything (replicas, PostgreSQL, MLflow, wrk) on its 2 cores, so a
second replica adds little: the figures say how little. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.serving import KEY, wrk

MODEL = "lead-readiness"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FOLLOW_S = 2.0
#: One lead with three actions, as a CRM sends it.
LEAD = {
    "lead_id": "L-bench",
    "seniority": "VP",
    "department": "engineering",
    "industry": "software",
    "company_size": 250,
    "annual_revenue": 32_000_000.0,
    "country": "USA",
    "acquisition_source": "referral",
    "business_email": True,
    "created_at": "2026-02-01T09:00:00Z",
    "as_of": "2026-03-01T00:00:00Z",
    "actions": [
        {"type": "pricing_page", "at": "2026-02-28T15:02:00Z"},
        {"type": "demo_request", "at": "2026-02-28T15:09:00Z"},
        {"type": "email_open", "at": "2026-02-20T08:00:00Z"},
    ],
}


@contextmanager
def postgres_schema() -> Iterator[str]:
    import sqlalchemy as sa

    schema = f"bench_replicas_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(POSTGRES).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def server(command: list[str], env: dict[str, str], health: str, log: Path) -> Iterator[None]:
    from benchmarks.serving import process

    with process(command, env, health, log):
        yield


def model_folder(home: Path) -> Path:
    """A sample-CRM model (small) with golden rows, as training saves it."""
    from benchmarks.batch_scoring import train_model

    train_model(home)
    return home / "model"


def register(tracking: str, folder: Path) -> None:
    """Version 1 (champion) and version 2 (challenger) of the same model files."""
    import mlflow

    from models.pyfunc import ARTIFACT_KEY, MODEL_CODE, code_paths, signature
    from models.readiness import ReadinessModel
    from training import registry

    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    model = ReadinessModel.load(folder)
    for _ in range(2):
        with mlflow.start_run() as run:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts={ARTIFACT_KEY: str(folder)},
                code_paths=code_paths(),
                signature=signature(model.builder.spec, model.stages),
                pip_requirements=["mlflow"],
            )
        registry.register(info.model_uri, name=MODEL, run_id=run.info.run_id)
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", "1")


def replica_env(tracking: str, database: str, home: Path) -> dict[str, str]:
    import yaml

    compose = Path(__file__).resolve().parents[1] / "deploy" / "compose.yaml"
    declared = yaml.safe_load(compose.read_text())["services"]["api"]["environment"]
    env = {k: str(v) for k, v in declared.items() if not str(v).startswith("${")}
    env |= {
        "LEADSCORE_TRACKING_URI": tracking,
        "LEADSCORE_DATABASE_URL": database,
        "LEADSCORE_MODEL_CACHE_DIR": str(home / "model-cache"),
        "LEADSCORE_MODEL_FOLLOW_S": str(FOLLOW_S),
        "LEADSCORE_HOME": str(home),
        "LEADSCORE_API_KEYS_CRM": KEY,
        "LEADSCORE_API_KEYS_SALES": "bench-sales-key-0123456789abcdef",
        "LEADSCORE_API_KEYS_ADMIN": "bench-admin-key-0123456789abcdef",
        "LEADSCORE_SHUTDOWN_GRACE_S": "0",
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LEADSCORE_", "MLFLOW_"))}
    return base | env


def load(urls: list[str], body: str, connections: int, seconds: int, work: Path) -> dict[str, Any]:
    """One wrk per replica, the connections split between them; rps summed, worst p99."""
    results: list[dict[str, float]] = [{} for _ in urls]

    def drive(i: int) -> None:
        folder = work / f"wrk-{i}"
        folder.mkdir(exist_ok=True)
        results[i] = wrk(
            f"{urls[i]}/v1/score", body, max(1, connections // len(urls)), seconds, folder
        )

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "rps": round(sum(r["rps"] for r in results)),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "non_2xx": sum(r["non_2xx"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    from mlflow import MlflowClient

    body = json.dumps(LEAD)
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp, ExitStack() as stack:
        home = Path(tmp)
        folder = model_folder(home / "train")
        port = _free_port()
        tracking = f"http://127.0.0.1:{port}"
        mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
        stack.enter_context(
            server(
                [mlflow_bin, "server", "--host=127.0.0.1", f"--port={port}", "--workers=1",
                 f"--backend-store-uri=sqlite:///{home / 'mlflow.db'}", "--serve-artifacts",
                 f"--artifacts-destination={home / 'mlartifacts'}"],
                {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                f"{tracking}/health", home / "mlflow.log",
            )
        )  # fmt: skip
        register(tracking, folder)
        database = stack.enter_context(postgres_schema())
        urls = []
        for n in range(2):
            replica = home / f"replica-{n}"
            replica.mkdir()
            p = _free_port()
            command = [sys.executable, "-m", "serving", "--port", str(p), "--workers", "1"]
            stack.enter_context(
                server(command, replica_env(tracking, database, replica),
                       f"http://127.0.0.1:{p}/readyz", replica / "serve.log")
            )  # fmt: skip
            urls.append(f"http://127.0.0.1:{p}")

        rows = {}
        rows["1 replica"] = load(urls[:1], body, args.connections, args.seconds, home)
        rows["2 replicas"] = load(urls, body, args.connections, args.seconds, home)
        promote = threading.Timer(
            args.seconds / 3,
            lambda: MlflowClient().set_registered_model_alias(MODEL, "champion", "2"),
        )
        promote.start()
        rows["2 replicas, promotion at 1/3"] = load(
            urls, body, args.connections, args.seconds, home
        )
        promote.join()
        versions = [_version(u) for u in urls]

    for name, row in rows.items():
        print(json.dumps({"case": name, **row}))
    print(f"\nwrk {args.seconds} s, {args.connections} connections, one worker per replica")
    print(f"{'case':<32}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}")
    for name, row in rows.items():
        print(
            f"{name:<32}{row['rps']:>8}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
            f"{row['non_2xx']:>8.0f}"
        )
    gain = rows["2 replicas"]["rps"] / rows["1 replica"]["rps"]
    print(f"2 replicas / 1 replica = {gain:.2f}x; versions after the promotion: {versions}")


def _version(url: str) -> str:
    import urllib.request

    request = urllib.request.Request(
        f"{url}/v1/model", headers={"X-API-Key": "bench-sales-key-0123456789abcdef"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["version"])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
