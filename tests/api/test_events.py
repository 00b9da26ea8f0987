"""Score-change events: written in the scores' own transaction, one per real change.

Store-level tests run on SQLite and PostgreSQL (skipped when no server answers); the
last test crosses a lead from mql to sql through the real API and model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from scorelog import ScoreLog, ScoreRow, make_engine
from scorelog.events import ChangeEvents, Event, lead_events, reason_changes
from scorelog.webhooks import (
    Backoff,
    Result,
    claim_due,
    create_subscription,
    fan_out,
    prune_delivered,
    record_results,
)
from serving.app import create_app
from tests.api.test_api import CRM, lead, make_settings
from tests.api.test_board import NOW, score_row
from tests.scorelog_db import db_url, engine

__all__ = ["db_url", "engine"]  # fixtures used by the tests below


@pytest.fixture
def log(engine: Engine) -> Iterator[ScoreLog]:
    scorelog = ScoreLog(engine, listeners=[ChangeEvents(min_score_change=10)])
    scorelog.start()
    yield scorelog
    scorelog.close()


def reasons(**effects: float) -> dict[str, Any]:
    items = [{"field": f, "effect": e, "text": f"{f} text"} for f, e in effects.items()]
    return {
        "positive": [i for i in items if i["effect"] > 0],
        "negative": [i for i in items if i["effect"] < 0],
    }


def write(log: ScoreLog, *rows: ScoreRow) -> None:
    log.submit_scores(rows).result(timeout=10)


def kinds(events: list[Event]) -> list[list[str]]:
    return [e.types for e in events]


def test_only_changes_make_events_with_before_after_and_changed_reasons(
    log: ScoreLog, engine: Engine
) -> None:
    write(log, score_row("L-1", 40, category="mql", grade="C", reasons=reasons(pricing=0.4)))
    write(log, score_row("L-1", 45, category="mql", grade="C", at=NOW + timedelta(hours=1)))
    assert kinds(lead_events(engine, "L-1")) == [["lead.created"]]  # +5 < 10 points
    late = score_row("L-1", 90, category="sql", grade="A", at=NOW - timedelta(hours=1))
    write(log, late)  # older than the lead's newest score: it changes nothing
    assert len(lead_events(engine, "L-1")) == 1
    after = score_row(
        "L-1", 80, category="sql", grade="A", at=NOW + timedelta(hours=2),
        reasons=reasons(demo=0.9, pricing=0.1, email=-0.2),
    )  # fmt: skip
    write(log, after)
    created, crossed = lead_events(engine, "L-1")
    assert crossed.id > created.id
    assert crossed.types == ["lead.category_changed", "lead.grade_changed", "lead.score_changed"]
    assert crossed.direction == "up"
    assert {k: crossed.before[k] for k in ("score", "grade", "category")} == {  # type: ignore[index]
        "score": 45, "grade": "C", "category": "mql",
    }  # fmt: skip
    assert {k: crossed.after[k] for k in ("score", "grade", "category")} == {
        "score": 80, "grade": "A", "category": "sql",
    }  # fmt: skip
    # The second score (45) was stored with the board's default reasons (pricing_page, ...).
    texts = [r["text"] for r in crossed.reasons]
    assert texts[0] == "demo text: new since the last score"
    assert len(texts) == 3


def test_two_scores_of_a_lead_in_one_commit_make_ordered_transitions(
    log: ScoreLog, engine: Engine
) -> None:
    write(
        log,
        score_row("L-2", 20, category="nurture", grade="D"),
        score_row("L-2", 60, category="mql", grade="B", at=NOW + timedelta(minutes=1)),
        score_row("L-3", 70, category="mql", grade="B"),
    )
    events = lead_events(engine, "L-2")
    assert kinds(events) == [
        ["lead.created"],
        ["lead.category_changed", "lead.grade_changed", "lead.score_changed"],
    ]
    assert events[1].before["category"] == "nurture"  # type: ignore[index]
    assert kinds(lead_events(engine, "L-3")) == [["lead.created"]]


class _Slow:
    """A listener that holds the transaction open between reading and updating lead_latest."""

    def before_latest(self, connection: sa.Connection, rows: object) -> None:
        time.sleep(0.3)

    def committed(self) -> None:
        pass

    def rolled_back(self) -> None:
        pass


def test_two_replicas_scoring_the_same_leads_at_once_keep_one_event_chain(
    db_url: str, engine: Engine, log: ScoreLog
) -> None:
    """Two ScoreLogs (two API processes) on one database commit the same leads at once.

    L-1 exists (mql) and L-2 is new. Whichever commits first, each event's ``before`` is
    the previous event's ``after``, each lead is created once, and the last event says what
    ``lead_latest`` holds.
    """
    write(log, score_row("L-1", 40, category="mql", grade="C"))
    later, latest = NOW + timedelta(seconds=1), NOW + timedelta(seconds=2)
    first = [score_row(lead, 80, category="sql", grade="A", at=later) for lead in ("L-1", "L-2")]
    second = [score_row(lead, 41, category="mql", grade="C", at=latest) for lead in ("L-2", "L-1")]
    engines = [make_engine(db_url) for _ in range(2)]
    replicas = [ScoreLog(e, listeners=[ChangeEvents(), _Slow()]) for e in engines]
    try:
        for replica in replicas:
            replica.start()
        pending = [replicas[0].submit_scores(first), replicas[1].submit_scores(second)]
        for future in pending:
            future.result(timeout=10)
    finally:
        for replica, own in zip(replicas, engines, strict=True):
            replica.close()
            own.dispose()
    query = sa.text("SELECT lead_id, score, category, grade FROM lead_latest")
    with engine.connect() as connection:
        stored = {lead_id: tuple(rest) for lead_id, *rest in connection.execute(query)}
    assert stored == {"L-1": (41, "mql", "C"), "L-2": (41, "mql", "C")}
    for lead_id in ("L-1", "L-2"):
        events = lead_events(engine, lead_id)
        assert [e for e in events if "lead.created" in e.types] == events[:1]
        assert events[0].before is None
        for previous, event in pairwise(events):
            assert event.before == previous.after
        final = events[-1].after
        assert (final["category"], final["grade"]) == ("mql", "C")


def test_deliveries_are_claimed_once_while_leased(log: ScoreLog, engine: Engine) -> None:
    create_subscription(
        engine, url="http://127.0.0.1:9/x", event_types=["lead.created"],
        secret="whsec_" + "A" * 32, description=None, max_subscriptions=5,
    )  # fmt: skip
    write(log, score_row("L-4", 50), score_row("L-5", 50))
    assert fan_out(engine) == 2
    assert fan_out(engine) == 0  # each event fans out once
    first = claim_due(engine, limit=10, lease_s=60)
    assert sorted(c.event.lead_id for c in first) == ["L-4", "L-5"]
    assert claim_due(engine, limit=10, lease_s=60) == []
    at = datetime.now(UTC)
    results = [
        Result(c.delivery_id, c.subscription_id, ok, 204 if ok else 500, None, at, at)
        for c, ok in zip(first, (True, False), strict=True)
    ]
    backoff = Backoff(base_s=60, cap_s=60, max_attempts=5)
    assert record_results(engine, results, backoff) == ["delivered", "pending"]
    assert prune_delivered(engine, at - timedelta(seconds=1)) == 0  # delivered just now
    assert prune_delivered(engine, at + timedelta(seconds=1)) == 1
    assert claim_due(engine, limit=10, lease_s=60) == []  # the failure waits its backoff


def test_reason_changes_rank_by_effect_and_say_how() -> None:
    before = reasons(pricing=0.5, webinar=0.2, email=-0.3)
    after = reasons(pricing=0.1, demo=0.8, email=0.05)
    assert [r["text"] for r in reason_changes(before, after)] == [
        "demo text: new since the last score",
        "pricing text: counts less than before",
        "email text: now counts for the lead",
    ]
    assert reason_changes(after, after) == []
    assert [r["text"] for r in reason_changes(None, after)] == [
        "demo text", "pricing text", "email text",
    ]  # fmt: skip
    assert reason_changes(None, {"positive": [{"field": 3}], "negative": "x"}) == []


# -- through the API -----------------------------------------------------------------------


def test_crossing_mql_to_sql_through_the_api_makes_exactly_one_event(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, trained_model_dir, webhooks_worker=False)
    busy = {
        "actions": [
            {"type": kind, "at": f"2026-02-{day:02d}T10:00:00Z"}
            for kind in ("pricing_page", "demo_request", "trial_signup", "webinar")
            for day in (20, 24, 26, 27, 28)
        ]
    }
    with TestClient(create_app(settings)) as client:
        engine: Engine = client.app.state.engine  # type: ignore[attr-defined]

        def score(lead_id: str, **fields: Any) -> dict[str, Any]:
            response = client.post(
                "/v1/score", json=lead(lead_id, **fields), headers={"X-API-Key": CRM}
            )
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        first = score("L-1")  # a VP with a pricing visit and a demo request: mql
        assert first["category"] == "mql", first
        assert kinds(lead_events(engine, "L-1")) == [["lead.created"]]
        assert score("L-1")["score"] == first["score"]  # re-scored, unchanged
        assert len(lead_events(engine, "L-1")) == 1
        second = score("L-1", **busy)
        assert second["category"] == "sql", second
        kinds_of_events = kinds(lead_events(engine, "L-1"))
        crossed = lead_events(engine, "L-1")[-1]
    expected = ["lead.category_changed"]
    if first["grade"] != second["grade"]:
        expected.append("lead.grade_changed")
    assert kinds_of_events == [["lead.created"], expected]  # exactly one event for the crossing
    assert crossed.direction == "up"
    pick = ("score", "grade", "category")
    assert {k: crossed.before[k] for k in pick} == {k: first[k] for k in pick}  # type: ignore[index]
    assert {k: crossed.after[k] for k in pick} == {k: second[k] for k in pick}
    # before: the unchanged re-score (id 2); after: the crossing (id 3).
    assert (crossed.before["score_id"], crossed.after["score_id"]) == (2, 3)  # type: ignore[index]
    assert crossed.reasons and all(": " in r["text"] for r in crossed.reasons)
    words = {r["field"] for r in crossed.reasons}
    assert words & {"pricing_page", "demo_request", "trial_signup", "webinar", "activity"}


def test_display_fields_keep_the_newest_values_apart_from_the_log(engine: Engine) -> None:
    from dataclasses import replace

    from scorelog.display import DisplayWriter, display_of

    log = ScoreLog(engine, listeners=[DisplayWriter()])
    log.start()
    try:
        newer = replace(score_row("L-7", 60, at=NOW), display={"first_name": "Ada"})
        older = replace(
            score_row("L-7", 50, at=NOW - timedelta(days=1)), display={"first_name": "Old"}
        )
        write(log, newer)
        write(log, older)  # a late arrival does not overwrite the newer name
        write(log, score_row("L-7", 61, at=NOW + timedelta(hours=1)))  # no display: kept
    finally:
        log.close()
    assert display_of(engine, ["L-7", "L-8"]) == {"L-7": {"first_name": "Ada"}}
    with engine.connect() as connection:
        logged = connection.execute(sa.text("SELECT * FROM scores")).all()
    assert "Ada" not in repr(logged)
