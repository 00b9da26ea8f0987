"""`python -m serving`: run the API with one worker per core, then say how to use it.

Each worker builds its own app (``create_app`` as a factory) and loads the model after
the fork, as LightGBM requires. Prometheus counters of all workers are merged through
a shared folder. The access log is off: every request is counted in /metrics, and a
rejected request leaves no log line. No ``server`` header names the software, and
SIGTERM drains (see :mod:`serving.lifecycle`): not ready first, then in-flight requests
finish within ``LEADSCORE_SHUTDOWN_TIMEOUT_S``.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import tempfile

import uvicorn
from uvicorn.supervisors import Multiprocess

CURL = """\
  Board:   http://{host}:{port}/board   (sign in with the sales key from .env)
  Health:  http://{host}:{port}/readyz
  Try it (the CRM key is in .env; it is not printed here):
    KEY=$(sed -n 's/^LEADSCORE_API_KEYS_CRM=\\([^,]*\\).*/\\1/p' .env)
    curl -s -X POST http://{host}:{port}/v1/score \\
      -H "X-API-Key: $KEY" -H "Content-Type: application/json" \\
      -d '{{"lead_id": "L-demo-1", "seniority": "VP", "industry": "software",
           "company_size": 250, "business_email": true, "acquisition_source": "referral",
           "actions": [{{"type": "pricing_page", "at": "{now}"}},
                       {{"type": "demo_request", "at": "{now}"}}]}}'
  Ranked leads for sales:
    SALES=$(sed -n 's/^LEADSCORE_API_KEYS_SALES=\\([^,]*\\).*/\\1/p' .env)
    curl -s http://{host}:{port}/v1/leads/ranked -H "X-API-Key: $SALES"
"""


def main(argv: list[str] | None = None) -> int:
    """``python -m serving`` = ``leadscore serve``: the options live in ``serving.commands``."""
    from serving.commands import serve_main

    return serve_main(argv)


def serve(host: str, port: int, workers: int) -> int:
    """Check the settings, then run the workers until SIGTERM (or Ctrl-C) has drained them.

    Unsafe keys stop the service here, with one line per problem and exit status 2,
    before any worker starts (a worker failing on them would be restarted in a loop).
    """
    from serving.settings import ServingSettings

    settings = ServingSettings()
    problems = settings.key_problems()
    if problems:
        for problem in problems:
            print(f"leadscore: {problem}", file=sys.stderr)
        print("leadscore: refusing to start with unsafe API keys", file=sys.stderr)
        return 2
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="leadscore-prom-"))
    from datetime import UTC, datetime

    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    print(f"leadscore: serving on http://{host}:{port} with {workers} worker(s)")
    if settings.docs == "public":
        print(f"  Docs:    http://{host}:{port}/docs")
    print(CURL.format(host=host, port=port, now=now), flush=True)
    if settings.metrics_port is not None:
        start_metrics_server(host, settings.metrics_port)
    config = uvicorn.Config(
        "serving.app:create_app",
        factory=True,
        workers=workers,
        access_log=False,
        log_level="warning",
        server_header=False,  # no "server: uvicorn" banner
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )
    sock = tcp_socket(host, port)
    if workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def start_metrics_server(host: str, port: int) -> None:
    """/metrics of all workers on its own port, served by this supervising process."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client import multiprocess as prom_multiprocess

    registry = CollectorRegistry()
    prom_multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr=host, registry=registry)
    print(f"  Metrics: http://{host}:{port}/metrics")


def tcp_socket(host: str, port: int) -> socket.socket:
    """The listening socket, created with an explicit IPPROTO_TCP.

    asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections whose socket
    says ``proto == IPPROTO_TCP``; uvicorn's own multi-worker socket says 0, so every
    response split in two writes waited ~40 ms for the client's delayed ACK. Measured
    here: 22 requests/s per keep-alive connection with uvicorn's socket, ~480 with this.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    sys.exit(main())
