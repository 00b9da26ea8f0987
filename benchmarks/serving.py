"""The API under load, beside `mlflow models serve` on the same registered model.

    python -m benchmarks.serving [--seconds 10] [--leads 20000]

Trains and promotes a model on sample data in a throw-away project folder, starts
this service (`python -m serving`, one worker per core, durable scoring log on) and
`mlflow models serve` on the same champion, drives both over loopback with `wrk`
(single-lead requests, a profile with 20 actions) at 1, 8 and 32 connections, times a
1,000-lead batch, and reads the service's resident memory. Everything is bounded in
time and talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

KEY = "bench-crm-key-0123456789abcdef"
AS_OF = "2026-03-01T00:00:00Z"
CONNECTIONS = (1, 8, 32)
LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "{key}"
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(home: Path, n_leads: int) -> list[dict[str, Any]]:
    """Sample data, a trained and promoted champion, and leads with exactly 20 actions."""
    from features import synthetic
    from features.batch import frames_to_records
    from features.loaders import load_actions, load_leads
    from features.spec import load_spec
    from training import registry
    from training.config import sample_config
    from training.run import run_training
    from training.tracking import TrackingSettings

    data_dir = home / "data"
    synthetic.write(synthetic.generate(synthetic.SampleConfig(n_leads=n_leads)), data_dir)
    config = sample_config(data_dir, plots=False, baseline=False)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    run_training(config, TrackingSettings(home=home))
    registry.promote("lead-readiness", metric="test_sql_pr_auc")
    spec = load_spec("sample_crm")
    leads = load_leads(data_dir / "leads.csv", spec)
    actions = load_actions(data_dir / "actions.csv", spec)
    records = frames_to_records(spec, leads.head(3000), actions, pd.Timestamp(AS_OF))
    rich = [r for r in records if len(r["actions"]) >= 20]
    for r in rich:
        r["actions"] = r["actions"][:20]
        r["business_email"] = bool(r["business_email"]) if r["business_email"] is not None else None
    return rich


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """The API's shape: no nulls for absent fields (they are optional), ids as the schema says."""
    return {k: v for k, v in record.items() if v is not None}


@contextmanager
def process(command: list[str], env: dict[str, str], health: str, log: Path) -> Iterator[int]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(health, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"not healthy in time:\n{log.read_text()[-2000:]}")
        yield proc.pid
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def wrk(url: str, body: str, connections: int, seconds: int, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(LUA.format(body=json.dumps(body), key=KEY))
    out = subprocess.run(
        ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {m[0]: _ms(m[1]) for m in re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct.get("50", float("nan")),
        "p99_ms": pct.get("99", float("nan")),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def batch_latency(
    url: str, body: bytes, headers: dict[str, str], repeat: int = 15
) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        request = urllib.request.Request(url, data=body, headers=headers)
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "max_ms": times[-1]}


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (the uvicorn workers)."""
    children = {pid}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        ppid = int(re.search(r"PPid:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
        if ppid in children or ppid == pid:
            children.add(int(status.parent.name))
    total = 0
    for p in children:
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", text)
        total += int(match.group(1)) if match else 0
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--leads", type=int, default=20_000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package 'wrk'; `make bench` installs it)")
    home = Path(tempfile.mkdtemp(prefix="leadscore-bench-"))
    print(f"serving: preparing a champion on {args.leads:,} sample leads in {home}", flush=True)
    records = [_clean(r) for r in prepare(home, args.leads)]
    lead = records[0]
    venv_bin = Path(sys.executable).parent
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LEADSCORE_"))},
        "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
        "LEADSCORE_HOME": str(home),
        "LEADSCORE_API_KEYS_CRM": KEY,
        "LEADSCORE_DATABASE_URL": f"sqlite:///{home / 'scores.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
    }
    results: dict[str, dict[int, dict[str, float]]] = {}
    ours_port, theirs_port = _free_port(), _free_port()
    workers = str(os.cpu_count() or 1)
    ours = [
        str(venv_bin / "python"),
        "-m",
        "serving",
        "--port",
        str(ours_port),
        "--workers",
        workers,
    ]
    with process(ours, env, f"http://127.0.0.1:{ours_port}/readyz", home / "ours.log") as pid:
        url = f"http://127.0.0.1:{ours_port}/v1/score"
        results["leadscore"] = {
            c: wrk(url, json.dumps(lead), c, args.seconds, home) for c in CONNECTIONS
        }
        batch = json.dumps({"leads": (records * 1000)[:1000]}).encode()
        headers = {"Content-Type": "application/json", "X-API-Key": KEY}
        ours_batch = batch_latency(f"{url}/batch", batch, headers)
        ours_rss = rss_mib(pid)
    theirs = [
        str(venv_bin / "mlflow"), "models", "serve", "-m", "models:/lead-readiness@champion",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(theirs_port),
        "--workers", workers,
    ]  # fmt: skip
    with process(theirs, env, f"http://127.0.0.1:{theirs_port}/ping", home / "mlflow.log") as pid:
        url = f"http://127.0.0.1:{theirs_port}/invocations"
        body = json.dumps({"dataframe_records": [lead]})
        results["mlflow models serve"] = {
            c: wrk(url, body, c, args.seconds, home) for c in CONNECTIONS
        }
        batch = json.dumps({"dataframe_records": (records * 1000)[:1000]}).encode()
        theirs_batch = batch_latency(url, batch, {"Content-Type": "application/json"}, repeat=5)
        theirs_rss = rss_mib(pid)
    print(
        f"\nsingle-lead requests (20 actions), wrk {args.seconds}s per row, {workers} workers each"
    )
    print(f"{'server':<22}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for server, rows in results.items():
        for c, r in rows.items():
            print(f"{server:<22}{c:>6}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                  f"{r['non_2xx']:>9.0f}")  # fmt: skip
    ratio = results["leadscore"][32]["rps"] / max(results["mlflow models serve"][32]["rps"], 1e-9)
    print(f"throughput at 32 connections: {ratio:.1f}x mlflow models serve")
    print(f"1,000-lead batch: leadscore median {ours_batch['median_ms']:.1f} ms "
          f"(max {ours_batch['max_ms']:.1f}); mlflow models serve median "
          f"{theirs_batch['median_ms']:.1f} ms")  # fmt: skip
    print(
        f"resident memory: leadscore {ours_rss:.0f} MiB, mlflow models serve {theirs_rss:.0f} MiB"
    )
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
