"""The outbox survives SIGKILL: an event committed with its score is delivered after restart.

The service runs as a real process (``python -m serving``, one worker). A lead is scored
while the receiver is down, so its event is committed but cannot be delivered; the
process is killed with SIGKILL (no shutdown, no flush); the receiver comes up; a new
service process on the same database delivers the event, once, signed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from serving.webhooks import signing
from tests.api.test_api import ADMIN, CRM, lead
from tests.servers import free_port, running, serving_env
from tests.webhook_receiver import receiver

pytestmark = pytest.mark.slow
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {
    "LEADSCORE_WEBHOOKS_ALLOW_INTERNAL": "true",
    "LEADSCORE_WEBHOOK_BACKOFF_S": "0.1",
    "LEADSCORE_WEBHOOK_BACKOFF_MAX_S": "0.2",
    "LEADSCORE_WEBHOOK_MAX_ATTEMPTS": "50",
    "LEADSCORE_WEBHOOK_POLL_S": "0.05",
    "LEADSCORE_WEBHOOK_CONNECT_TIMEOUT_S": "0.5",
    "LEADSCORE_WEBHOOK_READ_TIMEOUT_S": "1",
}


def call(base: str, method: str, path: str, key: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": key},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_an_event_committed_before_sigkill_is_delivered_after_restart(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    db, hook_port = tmp_path / "scores.db", free_port()
    env = serving_env(tmp_path, trained_model_dir, db, crm=CRM, admin=ADMIN) | FAST

    def service() -> Any:
        port = free_port()
        command = [sys.executable, "-m", "serving", "--port", str(port), "--workers", "1"]
        log = tmp_path / f"serve-{port}.log"
        return port, running(
            command, health_url=f"http://127.0.0.1:{port}/readyz", log=log, cwd=tmp_path,
            env=env, timeout=60,
        )  # fmt: skip

    port, first = service()
    base = f"http://127.0.0.1:{port}"
    with first as proc:
        url = f"http://127.0.0.1:{hook_port}/hook"
        wanted = {"url": url, "event_types": ["lead.created"], "secret": SECRET}
        sub = call(base, "POST", "/v1/webhooks", ADMIN, wanted)["id"]
        scored = call(base, "POST", "/v1/score", CRM, lead("L-kill"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # committed, tried, failed: the receiver is down
            [pending] = call(base, "GET", f"/v1/webhooks/{sub}/deliveries", ADMIN)["items"] or [{}]
            if pending.get("attempts", 0) >= 1:
                break
            time.sleep(0.05)
        assert (pending["status"], pending["last_error"]) == ("pending", "connection refused")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    with receiver(hook_port) as hook:
        port, second = service()
        with second:
            [got] = hook.wait_for(1, timeout=20)
            time.sleep(0.3)
            assert len(hook.received()) == 1  # delivered once
    headers = got.headers
    assert signing.verify(
        SECRET, headers["webhook-id"], headers["webhook-timestamp"],
        headers["webhook-signature"], got.body,
    )  # fmt: skip
    event = json.loads(got.body)
    assert headers["webhook-id"] == pending["webhook_id"] == f"evt_{event['data']['id']}"
    assert (event["type"], event["data"]["lead_id"]) == ("lead.created", "L-kill")
    assert event["data"]["after"]["score"] == scored["score"]
