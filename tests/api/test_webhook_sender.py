"""One webhook try against a real receiver on loopback: deadlines and what the URL becomes.

The delivery tests in ``test_webhooks.py`` go through the app and its worker; these call
the sender (:mod:`serving.webhooks.sender`) directly, where a try's bounds are decided.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.webhooks import sender
from serving.webhooks.worker import WorkerConfig
from tests.api.test_api import make_settings
from tests.webhook_receiver import Receiver, receiver


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


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
