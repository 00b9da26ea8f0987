"""What events and webhooks cost scoring, and how fast deliveries go.

    python -m benchmarks.webhooks [--seconds 10] [--leads 20000] [--repeat 2]

Trains a champion on sample data in a throw-away folder (``benchmarks.serving.prepare``),
runs the service (one worker per core, durable SQLite log) and a webhook receiver on
loopback (a threaded ``http.server`` in this process), and drives single-lead requests
with ``wrk`` at 32 connections in three rounds, each on a fresh database, each run
``--repeat`` times in alternating order (the machine's load drifts):

1. ``no event``: the same lead again and again (unchanged: no event is written);
2. ``event, no subscriber``: a new lead per request (a ``lead.created`` event each);
3. ``event + webhook``: the same, with a subscription receiving every event.

Then it reports delivery latency (score committed → receiver got it) at a calm rate of
~50 leads/s, and the delivery rate of round 3 (events delivered per second until the
backlog was empty). Talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from benchmarks.serving import KEY, prepare, process, wrk

ADMIN = "bench-admin-key-0123456789abcdef"
NEW_LEAD_LUA = """
local counter = 0
local thread_id = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  thread_id = tid
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "{key}"
local template = {body}
function request()
  counter = counter + 1
  local body = string.gsub(template, "LEADID", "B-" .. thread_id .. "-" .. counter)
  return wrk.format(nil, nil, nil, body)
end
"""


class _Receiver(BaseHTTPRequestHandler):
    arrivals: ClassVar[list[tuple[float, bytes]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.lock:
            self.arrivals.append((time.time(), body))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def _post(url: str, body: Any, key: str) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": key},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _latencies(arrivals: list[tuple[float, bytes]]) -> list[float]:
    """Receive time minus the score's commit time (its scored_at), in milliseconds."""
    out = []
    for at, body in arrivals:
        scored = datetime.fromisoformat(json.loads(body)["data"]["after"]["scored_at"])
        out.append((at - scored.timestamp()) * 1000)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_round(
    name: str, home: Path, env: dict[str, str], lead: dict[str, Any], args: argparse.Namespace,
    hook: str | None, calm: list[float],
) -> dict[str, float]:  # fmt: skip
    """One service on a fresh database: wrk at 32 connections, then (hook) the drain."""
    port = _free_port()
    db = home / f"{name.replace(' ', '-').replace(',', '')}-{time.monotonic_ns()}.db"
    round_env = env | {"LEADSCORE_DATABASE_URL": f"sqlite:///{db}"}
    command = [sys.executable, "-m", "serving", "--port", str(port),
               "--workers", str(os.cpu_count() or 1)]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with process(command, round_env, f"{base}/readyz", home / f"{port}.log"):
        if hook is not None:
            _post(f"{base}/v1/webhooks", {"url": hook, "event_types": ["lead.created"]}, ADMIN)
        _Receiver.arrivals = []
        started = time.time()
        if name == "no event":
            result = wrk(f"{base}/v1/score", json.dumps(lead), 32, args.seconds, home)
        else:
            script = home / "new_lead.lua"
            body = json.dumps(json.dumps({**lead, "lead_id": "LEADID"}))
            script.write_text(NEW_LEAD_LUA.replace("{key}", KEY).replace("{body}", body))
            result = _wrk_script(f"{base}/v1/score", script, args.seconds)
        if hook is not None:
            time.sleep(1)  # requests wrk had in flight when it stopped are still answered
            expected = _count(db, "score_events")
            deadline = time.time() + 120
            while len(_Receiver.arrivals) < expected and time.time() < deadline:
                time.sleep(0.1)
            done = max(at for at, _ in _Receiver.arrivals)
            result["events"] = expected
            result["delivered"] = len(_Receiver.arrivals)
            ids = {json.loads(body)["data"]["id"] for _, body in _Receiver.arrivals}
            result["duplicates"] = len(_Receiver.arrivals) - len(ids)
            result["deliveries_per_s"] = len(_Receiver.arrivals) / (done - started)
            result["drain_s"] = done - started - args.seconds
            calm.extend(_calm_latencies(base, lead))
    return result


def drain_rate(
    home: Path, env: dict[str, str], lead: dict[str, Any], hook: str, n: int
) -> dict[str, float]:
    """Deliveries/s on their own: ``n`` events made while no worker delivers, then a service
    with its workers on empties the backlog; timed from its readiness to the last arrival."""
    db = home / f"backlog-{time.monotonic_ns()}.db"
    quiet = env | {
        "LEADSCORE_DATABASE_URL": f"sqlite:///{db}",
        "LEADSCORE_WEBHOOKS_WORKER": "false",
    }
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "serving", "--port", str(port),
               "--workers", str(os.cpu_count() or 1)]  # fmt: skip
    with process(command, quiet, f"{base}/readyz", home / f"{port}.log"):
        _post(f"{base}/v1/webhooks", {"url": hook, "event_types": ["lead.created"]}, ADMIN)
        for start in range(0, n, 1000):
            leads = [
                {**lead, "lead_id": f"backlog-{i}"} for i in range(start, min(n, start + 1000))
            ]
            _post(f"{base}/v1/score/batch", {"leads": leads}, KEY)
    _Receiver.arrivals = []
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command[4] = str(port)
    live = env | {"LEADSCORE_DATABASE_URL": f"sqlite:///{db}"}
    with process(command, live, f"{base}/readyz", home / f"{port}.log"):
        ready = time.time()
        deadline = ready + 300
        while len(_Receiver.arrivals) < n and time.time() < deadline:
            time.sleep(0.05)
        last = max(at for at, _ in _Receiver.arrivals)
    return {"events": n, "delivered": len(_Receiver.arrivals), "per_s": n / (last - ready)}


def _count(db: Path, table: str) -> int:
    import sqlite3

    with sqlite3.connect(db) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _wrk_script(url: str, script: Path, seconds: int) -> dict[str, float]:
    import re
    import subprocess

    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "requests": total - (int(errors.group(1)) if errors else 0),
            "non_2xx": float(errors.group(1)) if errors else 0.0}  # fmt: skip


def _calm_latencies(base: str, lead: dict[str, Any], n: int = 300) -> list[float]:
    """Delivery latencies (ms) of new leads scored one at a time, ~50 a second."""
    _Receiver.arrivals = []
    for i in range(n):
        _post(f"{base}/v1/score", {**lead, "lead_id": f"calm-{i}"}, KEY)
        time.sleep(0.02)
    deadline = time.time() + 30
    while sum(b'"lead_id":"calm-' in b for _, b in _Receiver.arrivals) < n and (
        time.time() < deadline
    ):
        time.sleep(0.05)
    calm = [a for a in _Receiver.arrivals if b'"lead_id":"calm-' in a[1]]
    return _latencies(calm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each round")
    parser.add_argument("--backlog", type=int, default=5000, help="events in the drain test")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package 'wrk'; `make bench` installs it)")
    home = Path(tempfile.mkdtemp(prefix="leadscore-bench-hooks-"))
    print(f"webhooks: preparing a champion on {args.leads:,} sample leads in {home}", flush=True)
    lead = {k: v for k, v in prepare(home, args.leads)[0].items() if v is not None}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LEADSCORE_"))},
        "LEADSCORE_HOME": str(home),
        "LEADSCORE_API_KEYS_CRM": KEY,
        "LEADSCORE_API_KEYS_ADMIN": ADMIN,
        "LEADSCORE_WEBHOOKS_ALLOW_INTERNAL": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
    }
    calm: list[float] = []
    names = ("no event", "event, no subscriber", "event + webhook")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for repeat in range(args.repeat):  # ABC CBA ...: drifting load hits every round alike
        for name in names if repeat % 2 == 0 else names[::-1]:
            hook_url = hook if name == "event + webhook" else None
            runs[name].append(run_round(name, home, env, lead, args, hook_url, calm))
    backlog = drain_rate(home, env, lead, hook, args.backlog)
    server.shutdown()
    rps = {name: statistics.mean(r["rps"] for r in rounds) for name, rounds in runs.items()}
    print(f"\nsingle-lead requests, wrk {args.seconds}s at 32 connections, "
          f"{os.cpu_count()} workers, SQLite synchronous=FULL, mean of {args.repeat} runs "
          f"per round in alternating order (load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    print(f"{'round':<24}{'req/s':>9}{'vs no event':>13}{'runs':>18}")
    for name, rounds in runs.items():
        each = "/".join(f"{r['rps']:.0f}" for r in rounds)
        print(f"{name:<24}{rps[name]:>9.0f}{rps[name] / rps['no event']:>12.2f}x{each:>18}")
    hooked = runs["event + webhook"]
    events = sum(r["events"] for r in hooked)
    delivered = sum(r["delivered"] for r in hooked)
    duplicates = sum(r["duplicates"] for r in hooked)
    rate = statistics.mean(r["deliveries_per_s"] for r in hooked)
    drain = statistics.mean(r["drain_s"] for r in hooked)
    print(f"deliveries: {delivered:.0f} of {events:.0f} events ({duplicates:.0f} duplicates), "
          f"{rate:.0f}/s from the first request to the last delivery "
          f"(backlog drained {drain:.1f} s after the load stopped)")  # fmt: skip
    print(f"a backlog of {backlog['events']:.0f} events: {backlog['delivered']:.0f} delivered at "
          f"{backlog['per_s']:.0f}/s ({os.cpu_count()} worker processes, "
          "8 sends in flight each)")  # fmt: skip
    p50 = statistics.median(calm)
    print(f"delivery latency at ~50 leads/s (commit -> receiver): p50 {p50:.1f} ms, "
          f"p99 {_pct(calm, 0.99):.1f} ms over {len(calm)} events")  # fmt: skip
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
