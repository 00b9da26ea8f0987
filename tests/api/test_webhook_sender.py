"""One webhook try against a real receiver on loopback: its deadline, and its target URL.

The delivery tests in ``test_webhooks.py`` go through the app and its worker; these call
the sender (:mod:`serving.webhooks.sender`) directly, where a try's bounds are decided,
and subscribe through the API where the URL is checked and stored.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serving.webhooks import sender
from serving.webhooks.worker import WorkerConfig
from tests.api.test_api import ADMIN, make_settings
from tests.api.test_webhooks import default_client, hook
from tests.webhook_receiver import Receiver

__all__ = ["default_client", "hook"]  # fixtures used below


def test_a_dripping_receiver_fails_the_try_at_its_deadline(hook: Receiver) -> None:
    """A byte every 0.3 s never trips the 1 s read timeout; the 1 s deadline ends the try."""
    hook.mode, hook.drip_s = "drip", 0.3
    timeouts = sender.Timeouts(connect_s=1.0, read_s=1.0, attempt_s=1.0)
    started = time.monotonic()
    attempt = sender.post(hook.url, b"{}", {}, timeouts=timeouts, allow_internal=True)
    took = time.monotonic() - started
    assert attempt == sender.Attempt(False, None, "timed out")
    assert 1.0 <= took < 1.5
    assert len(hook.received()) == 1


def test_the_deadline_defaults_to_connect_plus_read_and_the_lease_outlasts_it(
    tmp_path: Path,
) -> None:
    default = WorkerConfig.from_settings(make_settings(tmp_path, tmp_path / "m"))
    assert default.timeouts.deadline_s == 3.0 + 10.0
    assert default.lease_s == 2 * 13.0 + 5
    settings = make_settings(tmp_path, tmp_path / "m", webhook_attempt_timeout_s=60)
    config = WorkerConfig.from_settings(settings)
    assert (config.timeouts.deadline_s, config.lease_s) == (60.0, 125.0)
    for bad in (0, 361):
        with pytest.raises(ValidationError, match="webhook_attempt_timeout_s"):
            make_settings(tmp_path, tmp_path / "m", webhook_attempt_timeout_s=bad)


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("http://1.1.1.1/caf\u00e9?q=\u00fc", "http://1.1.1.1/caf%C3%A9?q=%C3%BC"),
        ("http://1.1.1.1/caf%C3%A9", "http://1.1.1.1/caf%C3%A9"),  # encoded once only
        ("http://[64:ff9b::808:808]/hook", "http://[64:ff9b::808:808]/hook"),  # NAT64, public
        ("http://[2002:808:808::]/hook", "http://[2002:808:808::]/hook"),  # 6to4, public
    ],
)
def test_public_targets_are_accepted_and_stored_ascii(
    default_client: TestClient, url: str, stored: str
) -> None:
    client = default_client
    admin = {"X-API-Key": ADMIN}
    body = {"url": url, "event_types": ["lead.created"]}
    created = client.post("/v1/webhooks", json=body, headers=admin)
    assert created.status_code == 201, created.text
    listed = client.get("/v1/webhooks", headers=admin).json()["items"]
    assert client.delete(f"/v1/webhooks/{created.json()['id']}", headers=admin).status_code == 204
    assert created.json()["url"] == stored
    assert [s["url"] for s in listed] == [stored]


def test_a_non_ascii_url_is_delivered_to_its_encoded_path(hook: Receiver) -> None:
    url = hook.url.replace("/hook", "/caf\u00e9?q=\u00fc")
    timeouts = sender.Timeouts(connect_s=1.0, read_s=1.0)
    attempt = sender.post(url, b"{}", {}, timeouts=timeouts, allow_internal=True)
    assert attempt == sender.Attempt(True, 204, None)
    assert [r.path for r in hook.received()] == ["/caf%C3%A9?q=%C3%BC"]
