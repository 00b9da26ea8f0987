"""Real server processes for tests: start on a free loopback port, wait until healthy, stop.

Used for `mlflow server`, `mlflow models serve` and (later) the API itself, so every
slow test that needs a live process starts, waits and cleans up the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_without_mlflow() -> dict[str, str]:
    """A server must not inherit the test's MLflow client settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def serving_env(home: Path, model_dir: Path, db: Path, **keys: str) -> dict[str, str]:
    """Environment for ``python -m serving`` on a local model, a SQLite log and given keys.

    ``keys`` are roles to keys (``crm="..."``). The test's own LEADSCORE_/MLFLOW_
    settings are dropped so the service sees only these.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADSCORE_", "MLFLOW_"))}
    env |= {
        "LEADSCORE_HOME": str(home),
        "LEADSCORE_MODEL_URI": str(model_dir),
        "LEADSCORE_DATABASE_URL": f"sqlite:///{db}",
    }
    env |= {f"LEADSCORE_API_KEYS_{role.upper()}": key for role, key in keys.items()}
    return env


def wait_until_healthy(
    url: str, proc: subprocess.Popen[bytes], log: Path, *, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"server not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


@contextmanager
def running(
    command: Sequence[str],
    *,
    health_url: str,
    log: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in its own process group (its workers die with it) until the block ends."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_healthy(health_url, proc, log, timeout=timeout)
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole group, SIGKILL what is left; a group already gone is fine."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class Server:
    """One process for :func:`running_together`: how to start it and how to know it is up."""

    command: Sequence[str]
    health_url: str
    log: Path
    cwd: Path
    env: dict[str, str] | None = None
    timeout: float = 60.0


@contextmanager
def running_together(servers: Sequence[Server]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Like :func:`running` for several servers, started (and stopped) side by side.

    All start at once, so a test waits for the slowest start-up instead of their sum.
    """
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for s in servers:
            with s.log.open("wb") as sink:
                proc = subprocess.Popen(
                    list(s.command), cwd=s.cwd, env=s.env, stdout=sink,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            procs.append(proc)
        for s, proc in zip(servers, procs, strict=True):
            wait_until_healthy(s.health_url, proc, s.log, timeout=s.timeout)
        yield procs
    finally:
        stoppers = [threading.Thread(target=_stop, args=(p,)) for p in procs]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
