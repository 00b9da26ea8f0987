"""The API under load, beside the practical ceiling and `mlflow models serve`, in one run.

    python -m benchmarks.serving [--seconds 10] [--leads 20000] [--quick]

Trains and promotes a model on sample data in a throw-away project folder, then runs,
one after the other on the same box and the same champion, each with one worker per
core:

* this service (`python -m serving`, durable scoring log on), with reasons (the
  default) and with ``?reasons=0``;
* the minimal endpoint (:mod:`benchmarks.minimal_endpoint`: FastAPI + ``Booster.predict``
  on the already encoded vector; no validation, features, reasons, log or auth);
* `mlflow models serve`.

`wrk` drives each over loopback with single-lead requests (profiles with exactly 20
actions), cycling through every such lead of the sample rather than repeating one
body, at 1, 8 and 32 connections. Then a 1,000-lead batch (distinct leads; the first
call is reported apart, before any cache is warm) with and without reasons, and the
resident memory of each worker. ``--quick`` trains on fewer leads, runs 3 s per row and
only 32 connections (about four minutes on a loaded 2-core box, most of it
starting the servers). Everything is bounded in time and talks only to
127.0.0.1; figures are printed as ratios within this run, never asserted.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

KEY = "bench-crm-key-0123456789abcdef"
AS_OF = "2026-03-01T00:00:00Z"
CONNECTIONS = (1, 8, 32)
LUA = """
local bodies = {{ {bodies} }}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json", ["X-API-Key"] = "{key}"}},
                    bodies[i])
end
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(home: Path, n_leads: int) -> tuple[list[dict[str, Any]], Path]:
    """Sample data, a trained and promoted champion (and its folder), leads with 20 actions."""
    from features import synthetic
    from features.batch import frames_to_records
    from features.loaders import load_actions, load_leads
    from features.spec import load_spec
    from models import registry_fetch
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
    folder, _, _ = registry_fetch.download(
        "models:/lead-readiness@champion", f"sqlite:///{home / 'mlflow.db'}", home / "champion"
    )
    spec = load_spec("sample_crm")
    leads = load_leads(data_dir / "leads.csv", spec)
    actions = load_actions(data_dir / "actions.csv", spec)
    records = frames_to_records(spec, leads, actions, pd.Timestamp(AS_OF))
    rich = [r for r in records if len(r["actions"]) >= 20]
    for r in rich:
        r["actions"] = r["actions"][:20]
        r["business_email"] = bool(r["business_email"]) if r["business_email"] is not None else None
    return rich, folder


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


def wrk(
    url: str, bodies: list[str], connections: int, seconds: int, workdir: Path
) -> dict[str, float]:
    """req/s, p50, p99 and non-2xx of POSTs cycling through ``bodies``."""
    script = workdir / "post.lua"
    quoted = ", ".join(f"[==[{b}]==]" for b in bodies)
    script.write_text(LUA.format(bodies=quoted, key=KEY))
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
    """The first call (cold caches) apart, then the median and max of ``repeat`` more."""
    request = urllib.request.Request(url, data=body, headers=headers)
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
    first = (time.perf_counter() - start) * 1000
    times = []
    for _ in range(repeat):
        request = urllib.request.Request(url, data=body, headers=headers)
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"first_ms": first, "median_ms": statistics.median(times), "max_ms": times[-1]}


def rss_mib(pid: int) -> list[float]:
    """Resident memory (MiB) of a process and each of its descendants, the process first."""
    children = {pid}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        ppid = int(re.search(r"PPid:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
        if ppid in children or ppid == pid:
            children.add(int(status.parent.name))
    sizes = []
    for p in sorted(children, key=lambda c: c != pid):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", text)
        sizes.append(int(match.group(1)) / 1024 if match else 0.0)
    return sizes


Rows = dict[str, dict[int, dict[str, float]]]


@dataclass
class Run:
    """Everything one benchmark run measures, filled server by server."""

    seconds: int
    connections: tuple[int, ...]
    workers: int
    home: Path
    single: Rows = field(default_factory=dict)
    batch: dict[str, dict[str, float]] = field(default_factory=dict)
    rss: dict[str, list[float]] = field(default_factory=dict)

    def drive(self, name: str, url: str, bodies: list[str]) -> None:
        self.single[name] = {
            c: wrk(url, bodies, c, self.seconds, self.home) for c in self.connections
        }


def _env(home: Path) -> dict[str, str]:
    venv_bin = Path(sys.executable).parent
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LEADSCORE_"))},
        "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
        "LEADSCORE_HOME": str(home),
        "LEADSCORE_API_KEYS_CRM": KEY,
        "LEADSCORE_DATABASE_URL": f"sqlite:///{home / 'scores.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
    }


def bench_service(
    run: Run, records: list[dict[str, Any]], quick: bool, source: Path | None = None
) -> None:
    """This service; with ``source``, the same service from another checkout (a baseline)."""
    name = "leadscore" if source is None else "baseline leadscore"
    env = _env(run.home)
    if source is not None:  # its packages first on the path, before this checkout's
        env["PYTHONPATH"] = str(source)
        env["LEADSCORE_MODEL_CACHE_DIR"] = str(run.home / "baseline-cache")
        env["LEADSCORE_DATABASE_URL"] = f"sqlite:///{run.home / 'baseline-scores.db'}"
    port = _free_port()
    command = [sys.executable, "-m", "serving", "--port", str(port), "--workers", str(run.workers)]
    health = f"http://127.0.0.1:{port}/readyz"
    with process(command, env, health, run.home / f"{name.replace(' ', '-')}.log") as pid:
        url = f"http://127.0.0.1:{port}/v1/score"
        bodies = [json.dumps(r) for r in records]
        run.drive(name, url, bodies)
        if source is None:
            run.drive(f"{name} reasons=0", f"{url}?reasons=0", bodies)
        batch = json.dumps({"leads": _distinct(records, 1000)}).encode()
        headers = {"Content-Type": "application/json", "X-API-Key": KEY}
        repeat = 5 if quick else 15
        run.batch[name] = batch_latency(f"{url}/batch", batch, headers, repeat)
        if source is None:
            run.batch[f"{name} reasons=0"] = batch_latency(
                f"{url}/batch?reasons=0", batch, headers, repeat
            )
        run.rss[name] = rss_mib(pid)


def bench_minimal(run: Run, records: list[dict[str, Any]], folder: Path) -> None:
    """The minimal endpoint, fed the same leads' vectors as the model's builder makes them."""
    from models.readiness import ReadinessModel

    vectors = ReadinessModel.load(folder).builder.build(records).values
    bodies = [json.dumps({"features": v.tolist()}) for v in vectors]
    port = _free_port()
    command = [
        sys.executable, "-m", "uvicorn", "benchmarks.minimal_endpoint:app", "--port", str(port),
        "--workers", str(run.workers), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    env = {**_env(run.home), "LEADSCORE_MINIMAL_MODEL": str(folder)}
    with process(command, env, f"http://127.0.0.1:{port}/docs", run.home / "minimal.log") as pid:
        run.drive("FastAPI + Booster.predict", f"http://127.0.0.1:{port}/score", bodies)
        run.rss["FastAPI + Booster.predict"] = rss_mib(pid)


def bench_mlflow(run: Run, records: list[dict[str, Any]], quick: bool) -> None:
    port = _free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")), "models", "serve",
        "-m", "models:/lead-readiness@champion", "--env-manager", "local",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(run.workers),
    ]  # fmt: skip
    health = f"http://127.0.0.1:{port}/ping"
    with process(command, _env(run.home), health, run.home / "mlflow.log") as pid:
        url = f"http://127.0.0.1:{port}/invocations"
        run.drive(
            "mlflow models serve", url, [json.dumps({"dataframe_records": [r]}) for r in records]
        )
        batch = json.dumps({"dataframe_records": _distinct(records, 1000)}).encode()
        repeat = 2 if quick else 5
        headers = {"Content-Type": "application/json"}
        run.batch["mlflow models serve"] = batch_latency(url, batch, headers, repeat)
        run.rss["mlflow models serve"] = rss_mib(pid)


def _distinct(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` leads, distinct while the sample has enough (ids made unique otherwise)."""
    out = []
    for i in range(n):
        lead = dict(records[i % len(records)])
        if i >= len(records):
            lead["lead_id"] = f"{lead['lead_id']}-{i}"
        out.append(lead)
    return out


def report(run: Run, n_leads: int) -> None:
    print(
        f"\nsingle-lead requests (20 actions, {n_leads:,} distinct leads cycled), "
        f"wrk {run.seconds}s per row, {run.workers} workers each"
    )
    print(f"{'server':<28}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for server, rows in run.single.items():
        for c, r in rows.items():
            print(f"{server:<28}{c:>6}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                  f"{r['non_2xx']:>9.0f}")  # fmt: skip
    top = max(run.connections)
    ceiling = run.single["FastAPI + Booster.predict"][top]["rps"]
    mlflow = run.single["mlflow models serve"][top]["rps"]
    print(f"\nat {top} connections, as ratios of this run:")
    for server in run.single:
        if "leadscore" not in server:
            continue
        rps = run.single[server][top]["rps"]
        print(f"  {server:<22} {rps / ceiling:6.0%} of FastAPI + Booster.predict, "
              f"{rps / max(mlflow, 1e-9):5.1f}x mlflow models serve")  # fmt: skip
    print("\n1,000-lead batch (distinct leads): first call, then median and max")
    for server, b in run.batch.items():
        print(f"  {server:<28} first {b['first_ms']:7.1f} ms  median {b['median_ms']:7.1f} ms"
              f"  max {b['max_ms']:7.1f} ms")  # fmt: skip
    print("\nresident memory, MiB (supervisor, then each worker)")
    for server, sizes in run.rss.items():
        shown = ", ".join(f"{s:.0f}" for s in sizes)
        print(f"  {server:<28} {shown}  (total {sum(sizes):.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="3 s rows, 32 connections only")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the service from this source tree (e.g. `git archive` of an older "
        "commit), in the same run, for before/after ratios",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package 'wrk'; `make bench` installs it)")
    leads = 5_000 if args.quick else args.leads
    home = Path(tempfile.mkdtemp(prefix="leadscore-bench-"))
    print(f"serving: preparing a champion on {leads:,} sample leads in {home}", flush=True)
    rich, folder = prepare(home, leads)
    records = [_clean(r) for r in rich]
    run = Run(
        seconds=3 if args.quick else args.seconds,
        connections=(32,) if args.quick else CONNECTIONS,
        workers=os.cpu_count() or 1,
        home=home,
    )
    if args.baseline is not None:
        bench_service(run, records, args.quick, source=args.baseline.resolve())
    bench_service(run, records, args.quick)
    bench_minimal(run, records, folder)
    bench_mlflow(run, records, args.quick)
    report(run, len(records))
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
