"""Issue #13, the service's defaults and defences: keys, docs, metrics, headers, brakes.

Exact statuses and bodies through the real app; the keep-alive cases run a real uvicorn
server in a thread and talk to it over one raw socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from serving.app import create_app
from serving.limits import ConcurrencyLimit
from serving.security import WWW_AUTHENTICATE, FailedAuthLimiter
from serving.settings import ServingSettings
from tests.api.test_api import ADMIN, CRM, SALES, crm, lead, make_settings
from tests.servers import free_port

METRICS_KEY = "metrics-key-0123456789abcdef"


@pytest.fixture
def settings(tmp_path: Path, trained_model_dir: Path) -> ServingSettings:
    return make_settings(tmp_path, trained_model_dir, api_keys_metrics=[METRICS_KEY])


# -- keys (case 6) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"api_keys_admin": ["x"]},
            "unsafe API keys: LEADSCORE_API_KEYS_ADMIN: key 1 has 1 characters; "
            "at least 24 are needed",
        ),
        (
            {"api_keys_crm": [CRM, "change-me-crm"]},
            "unsafe API keys: LEADSCORE_API_KEYS_CRM: key 2 is the example from .env.example; "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'",
        ),
    ],
)
def test_the_service_refuses_short_or_example_keys(
    tmp_path: Path, trained_model_dir: Path, keys: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(ValueError) as refused:
        create_app(make_settings(tmp_path, trained_model_dir, **keys))
    assert str(refused.value) == message


def test_python_m_serving_refuses_unsafe_keys_with_one_line_each(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "LEADSCORE_API_KEYS_SALES": "short,change-me-sales"}
    done = subprocess.run(
        [sys.executable, "-m", "serving", "--port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "leadscore: LEADSCORE_API_KEYS_SALES: key 1 has 5 characters; at least 24 are needed",
        "leadscore: LEADSCORE_API_KEYS_SALES: key 2 is the example from .env.example; "
        "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'",
        "leadscore: refusing to start with unsafe API keys",
    ]
    assert "short" not in done.stdout + done.stderr.replace("LEADSCORE", "")


# -- docs, metrics, headers (case 6) ---------------------------------------------------------


def test_docs_and_openapi_are_off_by_default(tmp_path: Path, trained_model_dir: Path) -> None:
    assert ServingSettings(_env_file=None).docs == "off"  # type: ignore[call-arg]
    settings = make_settings(tmp_path, trained_model_dir, docs="off")
    with TestClient(create_app(settings)) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            response = client.get(path, headers={"X-API-Key": ADMIN})
            assert response.status_code == 404, path


def test_docs_behind_a_key_serve_only_the_document(tmp_path: Path, trained_model_dir: Path) -> None:
    settings = make_settings(tmp_path, trained_model_dir, docs="key")
    with TestClient(create_app(settings)) as client:
        refused = client.get("/openapi.json")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == WWW_AUTHENTICATE
        served = client.get("/openapi.json", headers={"X-API-Key": SALES})
        assert served.status_code == 200 and served.json()["info"]["title"] == "leadscore"
        assert client.get("/docs", headers={"X-API-Key": SALES}).status_code == 404


def test_metrics_need_a_scraper_key_by_default(settings: ServingSettings) -> None:
    assert ServingSettings(_env_file=None).metrics == "key"  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as client:
        anonymous = client.get("/metrics")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == WWW_AUTHENTICATE
        assert client.get("/metrics", headers={"X-API-Key": CRM}).status_code == 403
        bearer = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})
        assert bearer.status_code == 200 and "leadscore_http_requests_total" in bearer.text
        assert client.get("/metrics", headers={"X-API-Key": ADMIN}).status_code == 200


def test_metrics_on_their_own_port_leave_the_api_port(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, trained_model_dir, metrics_port=free_port())
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics", headers={"X-API-Key": ADMIN}).status_code == 404
    public = make_settings(tmp_path, trained_model_dir, metrics="public")
    with TestClient(create_app(public)) as client:
        assert client.get("/metrics").status_code == 200


def test_responses_say_no_store_and_nosniff_and_401_has_a_challenge(
    settings: ServingSettings,
) -> None:
    with TestClient(create_app(settings)) as client:
        scored = client.post("/v1/score", json=lead(), headers=crm())
        refused = client.post("/v1/score", json=lead(), headers={"X-API-Key": "x" * 30})
        invalid = client.post("/v1/score", json=lead(company_size=-5), headers=crm())
    for response in (scored, refused, invalid):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "server" not in response.headers
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'APIKey realm="leadscore", header="X-API-Key"'
    assert refused.json() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "The API key is not valid.",
        "request_id": refused.headers["x-request-id"],
    }


# -- failed authentications (case 5) ---------------------------------------------------------


def test_wrong_keys_turn_into_429_per_address_and_valid_keys_are_untouched(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, trained_model_dir, auth_failures_allowed=5)
    with TestClient(create_app(settings)) as client:
        wrong = {"X-API-Key": "wrong-key-0123456789abcdefgh"}
        statuses = [
            client.post("/v1/score", json=lead(), headers=wrong).status_code for _ in range(8)
        ]
        assert statuses == [401] * 5 + [429] * 3
        limited = client.get("/v1/model", headers=wrong)
        assert limited.status_code == 429
        wait = int(limited.headers["retry-after"])
        assert 1 <= wait <= 12
        assert limited.json() == {
            "type": "about:blank",
            "title": "Too many failed authentications",
            "status": 429,
            "detail": "Too many requests without a valid API key from this address; "
            f"retry in {wait} s.",
            "request_id": limited.headers["x-request-id"],
        }
        assert client.post("/v1/score", json=lead(), headers=crm()).status_code == 200
        login = client.post("/board/login", data={"api_key": "nope"})
        assert login.status_code == 429 and login.headers["retry-after"].isdigit()
        assert "Too many failed sign-ins from this address" in login.text


def test_the_failure_allowance_refills_with_time() -> None:
    limiter = FailedAuthLimiter(allowed=2, window_s=10)
    assert [limiter.failure("a", now=0.0) for _ in range(3)] == [None, None, 5]
    assert limiter.failure("b", now=0.0) is None  # another address has its own allowance
    assert limiter.failure("a", now=5.0) is None  # one failure refilled after 5 s
    assert limiter.failure("a", now=5.0) == 5


# -- overload (case 5) -------------------------------------------------------------------------


def test_a_full_worker_answers_503_with_retry_after_at_once() -> None:
    release = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/readyz":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = ConcurrencyLimit(slow, limit=2)
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def scenario() -> None:
        scope = {"type": "http", "path": "/v1/score", "headers": [], "state": {}}
        running = [asyncio.create_task(limited(scope, receive, send)) for _ in range(2)]
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        await limited(scope, receive, send)  # the third, beyond the limit
        assert time.perf_counter() - started < 0.05
        assert sent[0]["status"] == 503
        assert (b"retry-after", b"1") in sent[0]["headers"]
        assert json.loads(sent[1]["body"]) == {
            "type": "about:blank",
            "title": "Overloaded",
            "status": 503,
            "detail": "The service is at capacity; nothing was done. Retry after the given delay.",
        }
        await limited({**scope, "path": "/readyz"}, receive, send)  # probes are never shed
        release.set()
        await asyncio.gather(*running)

    release_soon = asyncio.new_event_loop()
    try:
        release_soon.run_until_complete(asyncio.wait_for(scenario(), timeout=5))
    finally:
        release_soon.close()
    assert limited.active == 0


# -- a 500 never breaks the connection (case 3) -------------------------------------------


@pytest.fixture
def live(settings: ServingSettings) -> Iterator[tuple[int, FastAPI]]:
    """The real app behind a real uvicorn server (in a thread), plus a route that fails."""
    app = create_app(settings)

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", server_header=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield port, app
    finally:
        server.should_exit = True
        thread.join(30)


def _exchange(sock: socket.socket, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on an open keep-alive connection; (status, response head and body)."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nX-API-Key: {CRM}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    header, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in header.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))  # fmt: skip
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(header.split(b" ")[1]), header + b"\r\n\r\n" + rest


def test_keep_alive_survives_a_500_and_a_bad_request(live: tuple[int, FastAPI]) -> None:
    port, _ = live
    good = json.dumps(lead()).encode()
    edge = json.dumps(lead(as_of="9999-12-31T23:59:59Z")).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        status, response = _exchange(sock, "GET", "/v1/boom")
        assert status == 500 and b"connection: close" not in response.lower()
        assert json.loads(response.split(b"\r\n\r\n", 1)[1])["title"] == "Internal Server Error"
        assert _exchange(sock, "POST", "/v1/score", good)[0] == 200
        assert _exchange(sock, "POST", "/v1/score", edge)[0] == 422
        assert _exchange(sock, "POST", "/v1/score", good)[0] == 200


# -- the database (cases 2 and 4) -----------------------------------------------------------


def test_a_locked_sqlite_answers_503_after_one_bounded_wait(settings: ServingSettings) -> None:
    settings.db_check_s = 0.5
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        holder = sa.create_engine(settings.database_url_resolved())
        with holder.connect() as conn:
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
            started = time.monotonic()
            response = client.post(
                "/v1/outcomes",
                json={"lead_id": "L-1", "outcome": "won", "occurred_at": "2026-03-01T00:00:00Z"},
                headers=crm(**{"X-Request-ID": "req-9"}),
            )
            waited = time.monotonic() - started
            ready = client.get("/readyz")
            conn.exec_driver_sql("ROLLBACK")
        holder.dispose()
        assert response.status_code == 503
        assert 4.5 <= waited < 7.5  # one 5 s budget, not 5 + 5
        assert response.headers["retry-after"] == "1"
        assert response.json() == {
            "type": "/problems/storage-unavailable",
            "title": "Scoring log unavailable",
            "status": 503,
            "detail": "The scoring log cannot be reached right now; nothing was stored. "
            "Retry shortly.",
            "request_id": "req-9",
        }
        assert ready.status_code == 503
        assert "The scoring log cannot commit right now" in ready.json()["detail"]
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get("/readyz").status_code == 200
