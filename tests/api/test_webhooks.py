"""Webhooks through the real app and a real receiver on loopback (a thread).

The app runs without a model: scores are put into its scoring log directly (as the
board tests do), which runs the same writer, outbox listener and delivery worker that
``/v1/score`` does. Timeouts and backoff are shortened by settings so a dead letter
takes about a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scorelog import ScoreLog
from scorelog.webhooks import Backoff
from serving.app import create_app
from serving.settings import ServingSettings
from serving.webhooks import signing
from tests.api.test_api import ADMIN, CRM, make_settings
from tests.api.test_board import score_row
from tests.webhook_receiver import Receiver, closed_port, receiver

FAST = {
    "webhooks_allow_internal": True,
    "webhook_connect_timeout_s": 0.5,
    "webhook_read_timeout_s": 0.3,
    "webhook_backoff_s": 0.05,
    "webhook_backoff_max_s": 0.2,
    "webhook_max_attempts": 3,
    "webhook_poll_s": 0.05,
}
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def admin() -> dict[str, str]:
    return {"X-API-Key": ADMIN}


@pytest.fixture
def settings(tmp_path: Path) -> ServingSettings:
    return make_settings(tmp_path, tmp_path / "no-model", **FAST)


@pytest.fixture
def client(settings: ServingSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def default_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service with its default webhook settings (internal targets forbidden)."""
    tmp_path = tmp_path_factory.mktemp("default")
    settings = make_settings(tmp_path, tmp_path / "no-model", webhooks_worker=False)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def subscribe(client: TestClient, url: str, types: list[str] | None = None) -> dict[str, Any]:
    body = {"url": url, "event_types": types or ["lead.created"], "secret": SECRET}
    response = client.post("/v1/webhooks", json=body, headers=admin())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def seed(client: TestClient, lead_id: str, score: int = 50, **kw: Any) -> None:
    log: ScoreLog = client.app.state.scorelog  # type: ignore[attr-defined]
    log.submit_scores([score_row(lead_id, score, **kw)]).result(timeout=10)


def deliveries(client: TestClient, sub: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/webhooks/{sub}/deliveries", headers=admin())
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def wait_until(client: TestClient, sub: str, status: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = deliveries(client, sub)
        if items and all(d["status"] == status for d in items):
            return items[0]
        time.sleep(0.02)
    raise AssertionError(f"deliveries not {status}: {deliveries(client, sub)}")


# -- managing subscriptions --------------------------------------------------------------


def test_subscribe_list_get_delete_with_the_secret_shown_once(
    client: TestClient, hook: Receiver
) -> None:
    created = client.post(
        "/v1/webhooks",
        json={"url": hook.url, "event_types": ["lead.grade_changed", "lead.category_changed"]},
        headers=admin(),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    sub = body["id"]
    assert created.headers["location"] == f"/v1/webhooks/{sub}"
    assert signing.secret_problem(body["secret"]) is None  # generated: whsec_ + 32 bytes
    empty = {"pending": 0, "delivered": 0, "dead": 0, "last_delivered_at": None,
             "last_failure": None}  # fmt: skip
    assert {k: v for k, v in body.items() if k not in ("id", "created_at", "secret")} == {
        "url": hook.url,
        "event_types": ["lead.category_changed", "lead.grade_changed"],  # canonical order
        "description": None,
        "deliveries": empty,
    }
    listed = client.get("/v1/webhooks", headers=admin()).json()["items"]
    assert [s["id"] for s in listed] == [sub] and "secret" not in listed[0]
    one = client.get(f"/v1/webhooks/{sub}", headers=admin())
    assert one.status_code == 200 and one.json() == listed[0]
    assert client.delete(f"/v1/webhooks/{sub}", headers=admin()).status_code == 204
    gone = client.get(f"/v1/webhooks/{sub}", headers=admin())
    assert (gone.status_code, gone.json()["detail"]) == (404, "No such subscription.")
    assert client.delete(f"/v1/webhooks/{sub}", headers=admin()).status_code == 404


def test_only_admin_keys_manage_subscriptions(client: TestClient, hook: Receiver) -> None:
    body = {"url": hook.url, "event_types": ["lead.created"]}
    refused = client.post("/v1/webhooks", json=body, headers={"X-API-Key": CRM})
    assert refused.status_code == 403
    assert refused.json()["detail"] == "This key's role may not use this endpoint (admin only)."
    assert client.get("/v1/webhooks").status_code == 401


@pytest.mark.parametrize(
    ("field", "value", "where", "problem"),
    [
        ("url", "ftp://hooks.example.com/x", "url", "must be an http or https URL"),
        ("url", "file:///etc/passwd", "url", "must be an http or https URL"),
        ("url", "http://user:pw@8.8.8.8/x", "url", "must not contain a user name or password"),
        ("url", "http://127.0.0.1:9/hook", "url", "INTERNAL"),
        ("url", "http://localhost/hook", "url", "INTERNAL"),
        ("url", "http://169.254.169.254/latest/meta-data", "url", "INTERNAL"),
        ("url", "http://[::1]:8080/", "url", "INTERNAL"),
        ("url", "http://[::ffff:10.0.0.1]/", "url", "INTERNAL"),
        ("url", "http://192.168.1.20/", "url", "INTERNAL"),
        ("url", "http://[64:ff9b::7f00:1]/", "url", "INTERNAL"),  # NAT64 of 127.0.0.1
        ("url", "http://[64:ff9b::a9fe:a9fe]/", "url", "INTERNAL"),  # of 169.254.169.254
        ("url", "http://[64:ff9b:1::808:808]/", "url", "INTERNAL"),  # local-use NAT64
        ("url", "http://[2002:7f00:1::]/", "url", "INTERNAL"),  # 6to4 of 127.0.0.1
        ("url", "http://[2001:0:a00:1::]/", "url", "INTERNAL"),  # Teredo, server 10.0.0.1
        ("url", "http://[::a00:1]/", "url", "INTERNAL"),  # IPv4-compatible 10.0.0.1
        ("secret", "whsec_" + "A" * 200, "secret", "text too long (max 94)"),
        ("secret", "whsec_" + "QUJD", "secret", "must hold 24 to 64 bytes once decoded"),
        ("secret", "s3cr3t-" + "x" * 40, "secret", "must start with whsec_"),
        ("event_types", ["lead.deleted"], "event_types[0]", "ENUM"),
        ("event_types", [], "event_types", "list must not be empty"),
    ],
)
def test_bad_subscriptions_are_422_naming_the_field(
    default_client: TestClient, field: str, value: Any, where: str, problem: str
) -> None:
    """Internal targets are refused by default (this app does not allow them)."""
    body: dict[str, Any] = {"url": "http://8.8.8.8/hook", "event_types": ["lead.created"]}
    body[field] = value
    response = default_client.post("/v1/webhooks", json=body, headers=admin())
    assert default_client.get("/v1/webhooks", headers=admin()).json() == {"items": []}
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    words = {
        "INTERNAL": "points at a loopback, private, link-local or other internal address, "
        "which this service does not call",
        "ENUM": "must be one of 'lead.category_changed', 'lead.grade_changed', "
        "'lead.score_changed' or 'lead.created'",
    }.get(problem, problem)
    assert response.json()["errors"] == [{"field": where, "problem": words}]
    assert json.dumps(value).strip('"')[:20] not in response.text  # nothing echoed


# -- delivering ---------------------------------------------------------------------------


def test_a_delivery_is_signed_per_standard_webhooks_and_counted(
    client: TestClient, hook: Receiver
) -> None:
    sub = subscribe(client, hook.url)["id"]
    seed(client, "L-1", 61, category="mql", grade="B")
    [got] = hook.wait_for(1)
    headers, body = got.headers, got.body
    assert headers["content-type"] == "application/json"
    assert signing.verify(
        SECRET, headers["webhook-id"], headers["webhook-timestamp"],
        headers["webhook-signature"], body,
    )  # fmt: skip
    assert not signing.verify(
        SECRET, headers["webhook-id"], headers["webhook-timestamp"],
        headers["webhook-signature"], body + b" ",
    )  # fmt: skip
    event = json.loads(body)
    assert event["type"] == "lead.created"
    data = event["data"]
    assert headers["webhook-id"] == f"evt_{data['id']}"
    assert (data["lead_id"], data["types"], data["direction"], data["before"]) == (
        "L-1", ["lead.created"], "new", None,
    )  # fmt: skip
    assert {k: data["after"][k] for k in ("score", "grade", "category")} == {
        "score": 61, "grade": "B", "category": "mql",
    }  # fmt: skip
    delivered = wait_until(client, sub, "delivered")
    assert (delivered["attempts"], delivered["last_status"], delivered["webhook_id"]) == (
        1, 204, headers["webhook-id"],
    )  # fmt: skip
    status = client.get(f"/v1/webhooks/{sub}", headers=admin()).json()["deliveries"]
    assert (status["delivered"], status["pending"], status["dead"]) == (1, 0, 0)
    metrics = client.get("/metrics", headers=admin()).text
    assert f'leadscore_webhook_tries_total{{result="delivered",subscription="{sub}"}} 1.0' in (
        metrics
    )


def test_an_event_goes_only_to_subscriptions_of_its_types(
    client: TestClient, hook: Receiver
) -> None:
    subscribe(client, hook.url, ["lead.grade_changed"])
    seed(client, "L-1", 40, grade="C")  # created: not wanted
    seed(client, "L-1", 40, grade="C", at=datetime.now(UTC) + timedelta(seconds=1))  # no change
    seed(client, "L-1", 75, grade="A", at=datetime.now(UTC) + timedelta(seconds=2))  # wanted
    [got] = hook.wait_for(1)
    time.sleep(0.3)  # nothing else follows
    assert len(hook.received()) == 1
    data = json.loads(got.body)["data"]
    assert (data["types"], data["before"]["grade"], data["after"]["grade"]) == (
        ["lead.grade_changed"], "C", "A",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "error", "status"),
    [
        ("down", "connection refused", None),
        ("fail", "answered 500", 500),
        ("slow", "timed out", None),
        ("redirect", "redirect not followed", 302),
    ],
)
def test_failing_receivers_are_retried_then_dead_lettered_and_replayed(
    client: TestClient, hook: Receiver, mode: str, error: str, status: int | None
) -> None:
    """Three tries (the setting), then dead; a replay sends the same webhook-id once more."""
    url = f"http://127.0.0.1:{closed_port()}/hook" if mode == "down" else hook.url
    hook.mode, hook.slow_s = mode, 1.0
    sub = subscribe(client, url)["id"]
    seed(client, "L-9", 30)
    dead = wait_until(client, sub, "dead")
    assert (dead["attempts"], dead["last_status"], dead["last_error"]) == (3, status, error)
    tries = hook.received()
    assert len(tries) == (0 if mode == "down" else 3)
    assert len({t.headers["webhook-id"] for t in tries}) <= 1  # every retry: the same id
    summary = client.get(f"/v1/webhooks/{sub}", headers=admin()).json()["deliveries"]
    assert (summary["dead"], summary["last_failure"]["error"]) == (1, error)
    metrics = client.get("/metrics", headers=admin()).text
    assert f'leadscore_webhook_tries_total{{result="dead",subscription="{sub}"}} 1.0' in metrics
    if mode == "down":
        return
    hook.mode = "ok"
    replayed = client.post(f"/v1/webhooks/{sub}/deliveries/{dead['id']}/replay", headers=admin())
    assert (replayed.status_code, replayed.json()) == (200, {"replayed": 1})
    assert wait_until(client, sub, "delivered")["attempts"] == 1
    again = hook.wait_for(4)
    assert again[-1].headers["webhook-id"] == dead["webhook_id"] == tries[0].headers["webhook-id"]
    not_dead = client.post(f"/v1/webhooks/{sub}/deliveries/{dead['id']}/replay", headers=admin())
    assert (not_dead.status_code, not_dead.json()["title"]) == (409, "Not dead")


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() -> None:
    import random

    backoff = Backoff(base_s=5, cap_s=60, max_attempts=10)
    rng = random.Random(1)
    for attempts, full in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (9, 60)]:
        delays = [backoff.delay_s(attempts, rng) for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) < full
        assert max(delays) - min(delays) > full / 4  # spread, not one fixed value


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    body = b'{"test": 2432232314}'
    assert (
        signing.sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    assert signing.verify(
        SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
        "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", body, now=1614265400,
    )  # fmt: skip
    assert not signing.verify(
        SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", body, now=1614265330 + 301,
    )  # fmt: skip
