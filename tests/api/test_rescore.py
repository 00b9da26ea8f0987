"""Scores that age: every open lead re-scored as of a later time from its stored input.

Leads are scored through the real API as of 2026-03-01 (their inputs are stored), then
re-scored as of two months later with the service's own scoring log, model and outcome
listener: the active leads' scores fall as their recency features say, events appear for
the leads whose category or grade changed and for no other, a won lead is left alone,
and a second run at the same time changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from leadscore.cli import main
from scorelog import make_engine
from scorelog.events import lead_events
from scorelog.rescore_runs import exclusive
from serving.app import create_app
from serving.rescore import rescore
from tests.api.test_api import AS_OF, CRM, lead, make_settings
from tests.api.test_board import score_row

LATER = datetime.fromisoformat(AS_OF.replace("Z", "+00:00")) + timedelta(days=60)
BUSY = {
    "actions": [
        {"type": kind, "at": f"2026-02-{day:02d}T10:00:00Z"}
        for kind in ("pricing_page", "demo_request", "trial_signup", "webinar")
        for day in (20, 24, 26, 27, 28)
    ]
}


def latest(engine: sa.Engine) -> dict[str, tuple[int, str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT lead_id, score, grade, category FROM lead_latest")
        )
        return {lead_id: (score, grade, category) for lead_id, score, grade, category in rows}


def test_rescore_ages_open_leads_with_events_for_crossings_only(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, trained_model_dir, webhooks_worker=False)
    with TestClient(create_app(settings)) as client:
        app: Any = client.app
        for lead_id, fields in (("L-busy", BUSY), ("L-mql", {}), ("L-quiet", {"actions": []}),
                                ("L-won", BUSY)):  # fmt: skip
            response = client.post(
                "/v1/score", json=lead(lead_id, **fields), headers={"X-API-Key": CRM}
            )
            assert response.status_code == 200, response.text
        won = {"lead_id": "L-won", "outcome": "won", "occurred_at": AS_OF}
        assert client.post("/v1/outcomes", json=won, headers={"X-API-Key": CRM}).status_code == 201
        app.state.scorelog.submit_scores([score_row("L-old", 50)]).result(timeout=10)  # no input
        engine, served = app.state.engine, app.state.store.current
        before = latest(engine)
        first = rescore(app.state.scorelog, served, as_of=LATER)
        after = latest(engine)
        second = rescore(app.state.scorelog, served, as_of=LATER)
        events = {lid: lead_events(engine, lid) for lid in before}
    assert (first.open_leads, first.no_input, first.unscorable) == (4, 1, 0)
    assert after["L-won"] == before["L-won"]  # closed: never re-scored
    for lid in ("L-busy", "L-mql"):  # their actions are two months older now
        assert after[lid][0] < before[lid][0], (lid, before[lid], after[lid])
    changed = sorted(lid for lid in before if after[lid] != before[lid])
    assert first.rescored == len(changed) and first.unchanged == 3 - len(changed)
    crossed = sorted(lid for lid in changed if after[lid][1:] != before[lid][1:])
    rescore_events = {lid: e[1:] for lid, e in events.items() if len(e) > 1}
    assert sorted(rescore_events) == crossed and crossed  # something did cross
    for lid in crossed:
        [event] = rescore_events[lid]
        assert event.direction == "down" and event.after["score"] == after[lid][0]
        assert set(event.types) <= {"lead.category_changed", "lead.grade_changed"}
    assert (second.rescored, second.unchanged) == (0, 3)


@pytest.mark.slow
def test_the_rescore_command_runs_once_per_log_at_a_time(
    tmp_path: Path,
    trained_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(tmp_path, trained_model_dir, webhooks_worker=False)
    with TestClient(create_app(settings)) as client:
        for lead_id in ("L-1", "L-2"):
            response = client.post(
                "/v1/score", json=lead(lead_id, **BUSY), headers={"X-API-Key": CRM}
            )
            assert response.status_code == 200
    for name, value in {
        "LEADSCORE_DATABASE_URL": settings.database_url,
        "LEADSCORE_MODEL_URI": str(trained_model_dir),
        "LEADSCORE_HOME": str(tmp_path),
        "LEADSCORE_MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    engine = make_engine(settings.database_url_resolved())
    with exclusive(engine) as held:
        assert held
        assert main(["rescore", "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        "error: cannot rescore: another rescore of this scoring log is running\n"
    )
    assert main(["rescore", "--no-progress"]) == 0
    line = capsys.readouterr().err
    assert line.startswith("rescored 2 open leads in ") and line.endswith(
        "2 changed, 0 unchanged, 0 without a stored input, 0 unscorable; 2 events\n"
    ), line
    engine.dispose()
