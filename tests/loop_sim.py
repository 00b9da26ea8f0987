"""Weeks of traffic through the real API, on a simulated clock, with the generator's truth.

The service scores a lead "now", so the simulation moves the scoring route's clock (the
one thing that cannot run here: weeks do not pass in a test) and sends each lead as it
stood at that moment - the profile plus its actions up to then - through
``POST /v1/score/batch``; outcomes are posted through ``POST /v1/outcomes`` once the
simulated clock passes the moment the generator says the lead reached a stage.
Everything else is real: the app, its validation, the scoring log on SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features import synthetic
from features.batch import frames_to_records
from features.loaders import load_actions, load_history, load_leads
from features.spec import FeatureSpec
from tests.api.test_api import CRM

CRM_HEADERS = {"X-API-Key": CRM}
BATCH = 500


class SimClock:
    """A stand-in for ``datetime`` in the scoring route: ``now()`` is the simulated time."""

    current = datetime(2025, 1, 1, tzinfo=UTC)

    @classmethod
    def now(cls, tz: Any = None) -> datetime:
        return cls.current


@contextmanager
def simulated_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[SimClock]]:
    from serving.routes import scoring

    monkeypatch.setattr(scoring, "datetime", SimClock)
    yield SimClock


@dataclass
class World:
    """One generated CRM as the loaders read it: what the CRM would send the API."""

    leads: pd.DataFrame
    actions: pd.DataFrame
    history: pd.DataFrame


def world(
    spec: FeatureSpec, config: synthetic.SampleConfig, folder: Any, prefix: str = ""
) -> World:
    """Generate, write and load a CRM (the files are the "equivalent files" of the log).

    Every generated CRM numbers its leads from L0000001, so worlds sharing one log get a
    ``prefix`` each: otherwise one world's outcomes would label another's leads.
    """
    synthetic.write(synthetic.generate(config), folder)
    leads = load_leads(folder / "leads.csv", spec)
    ids = pd.Index(leads[spec.id_column])
    actions = load_actions(folder / "actions.csv", spec, ids)
    history = load_history(folder / "stage_history.csv", spec, ids)
    if prefix:
        leads[spec.id_column] = prefix + leads[spec.id_column].astype(str)
        actions["lead_id"] = prefix + actions["lead_id"].astype(str)
        history["lead_id"] = prefix + history["lead_id"].astype(str)
    return World(leads, actions, history)


def snapshots(w: World, days: tuple[int, ...]) -> pd.DataFrame:
    """(lead row, as_of) for every lead ``days`` after it was created, in time order."""
    frames = [
        pd.DataFrame(
            {"row": range(len(w.leads)), "as_of": w.leads["created_at"] + pd.Timedelta(days=d)}
        )
        for d in days
    ]
    return pd.concat(frames, ignore_index=True).sort_values("as_of", kind="stable")


def run_traffic(
    client: TestClient,
    clock: type[SimClock],
    spec: FeatureSpec,
    w: World,
    *,
    days: tuple[int, ...],
    until: datetime,
    outcomes: bool = True,
) -> dict[str, int]:
    """Score every snapshot before ``until`` day by day, posting outcomes as they happen."""
    plan = snapshots(w, days)
    plan = plan[plan["as_of"] < until].reset_index(drop=True)
    records = _records(spec, w, plan)
    events = w.history[w.history["stage"] != "lead"].sort_values("reached_at", kind="stable")
    events = events[events["reached_at"] < until] if outcomes else events.iloc[:0]
    day_of = (plan["as_of"] - plan["as_of"].min().floor("D")) // pd.Timedelta(days=1)
    first_day = plan["as_of"].min().floor("D")
    counts = {"scored": 0, "outcomes": 0}
    posted = 0
    for day, rows in plan.groupby(day_of, sort=True).groups.items():
        end = first_day + pd.Timedelta(days=int(day) + 1)
        while posted < len(events) and events["reached_at"].iloc[posted] < end:
            row = events.iloc[posted]
            clock.current = row["reached_at"].to_pydatetime()
            _post_outcome(client, row)
            posted += 1
        for lo in range(0, len(rows), BATCH):
            part = rows[lo : lo + BATCH]
            clock.current = plan["as_of"].iloc[part].max().to_pydatetime()
            response = client.post(
                "/v1/score/batch",
                json={"leads": [records[i] for i in part]},
                headers=CRM_HEADERS,
            )
            assert response.status_code == 200, response.text
            counts["scored"] += len(part)
    for rest in range(posted, len(events)):
        row = events.iloc[rest]
        clock.current = row["reached_at"].to_pydatetime()
        _post_outcome(client, row)
    counts["outcomes"] = len(events)
    return counts


def _records(spec: FeatureSpec, w: World, plan: pd.DataFrame) -> list[dict[str, Any]]:
    """Each planned snapshot as the CRM sends it: only what had happened by then."""
    leads = w.leads.iloc[plan["row"].to_numpy()].reset_index(drop=True)
    records = frames_to_records(spec, leads, w.actions, as_of=plan["as_of"].to_numpy())
    for r in records:  # the CRM cannot send the future
        r["actions"] = [a for a in r["actions"] if a["at"] <= r["as_of"]]
    return records


def _post_outcome(client: TestClient, row: pd.Series) -> None:
    body = {
        "lead_id": row["lead_id"],
        "outcome": "stage_reached",
        "stage": row["stage"],
        "occurred_at": row["reached_at"].isoformat().replace("+00:00", "Z"),
        "idempotency_key": f"sim:{row['lead_id']}:{row['stage']}",
    }
    response = client.post("/v1/outcomes", json=body, headers=CRM_HEADERS)
    assert response.status_code == 201, response.text
