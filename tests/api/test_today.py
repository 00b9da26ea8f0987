"""The board's day (TestClient): each rep's list within capacity, the CSV equal to the view,
display fields for sales only and never logged, new/rising and cooling from the events."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from scorelog import OutcomeRow
from serving.app import create_app
from tests.api.test_api import SALES, make_settings
from tests.api.test_board import NOW, score_row, scorelog, seed, sign_in

NAMES = {f"L-{i}": f"Person {i}" for i in range(1, 9)}
NAMES["L-3"] = '=HYPERLINK("http://x")'  # a formula must not run in a spreadsheet


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path, tmp_path / "no-model", board_reps={"Ana": 2, "Ben": 3}, webhooks_worker=False
    )
    with TestClient(create_app(settings)) as c:
        yield c


def seed_day(client: TestClient) -> None:
    """Eight leads, 90 down to 55 points; the best one was already contacted."""
    rows = [
        replace(
            score_row(lead, 90 - 5 * i, grade="A" if i < 4 else "B"),
            display={"first_name": NAMES[lead], "company": f"Co {i}", "job_title": "CTO"},
        )
        for i, lead in enumerate(NAMES)
    ]
    seed(client, rows)
    contacted = OutcomeRow("L-1", "contacted", None, NOW, None, "k-1")
    scorelog(client).record_outcome(contacted)


def today_tables(html: str) -> dict[str, list[dict[str, str]]]:
    """rep → rows of its table: lead, rank, score and the display cells, in page order."""
    tables = {}
    for rep, body in re.findall(
        r'<table class="leads today" data-rep="([^"]+)">(.*?)</table>', html, re.S
    ):
        rows = []
        for lead, rank, score, cells in re.findall(
            r'<tr data-today-lead="([^"]+)" data-rank="(\d+)" data-score="(\d+)">(.*?)</tr>',
            body,
            re.S,
        ):
            fields = dict(re.findall(r'data-field="([a-z_]+)">([^<]*)</td>', cells))
            rows.append({"lead": lead, "rank": rank, "score": score, **fields})
        tables[rep] = rows
    return tables


def test_today_deals_the_best_uncontacted_leads_within_each_capacity(client: TestClient) -> None:
    seed_day(client)
    sign_in(client)
    page = client.get("/board/today")
    assert page.status_code == 200
    tables = today_tables(page.text)
    assert {rep: [r["lead"] for r in rows] for rep, rows in tables.items()} == {
        "Ana": ["L-2", "L-4"],  # L-1 was contacted: dealt from L-2 on, one each in turn
        "Ben": ["L-3", "L-5", "L-6"],
    }
    first = {"lead": "L-2", "rank": "1", "score": "85", "first_name": "Person 2"}
    assert tables["Ana"][0] == {**first, "company": "Co 1", "job_title": "CTO"}
    one = today_tables(client.get("/board/today", params={"rep": "Ben"}).text)
    assert one == {"Ben": tables["Ben"]}
    unknown = client.get("/board/today", params={"rep": "Zed"})
    assert unknown.status_code == 400 and "Zed" not in unknown.text


def test_the_csv_export_is_the_view(client: TestClient) -> None:
    seed_day(client)
    sign_in(client)
    for params in ({}, {"rep": "Ben"}):
        view = today_tables(client.get("/board/today", params=params).text)
        export = client.get("/board/today.csv", params=params)
        assert export.status_code == 200
        assert export.headers["content-type"] == "text/csv; charset=utf-8"
        assert export.headers["content-disposition"].startswith(
            'attachment; filename="leads-today-'
        )
        rows = list(csv.DictReader(io.StringIO(export.text)))
        assert list(rows[0]) == ["rep", "rank", "lead_id", "Name", "Company", "Title", "score",
                                 "grade", "category", "top_reason", "scored_at"]  # fmt: skip
        from_csv = [(r["rep"], r["lead_id"], r["rank"], r["score"], r["Company"]) for r in rows]
        from_page = [(rep, r["lead"], r["rank"], r["score"], r["company"])
                     for rep, table in view.items() for r in table]  # fmt: skip
        assert from_csv == from_page
    names = {r["lead_id"]: r["Name"] for r in rows}
    assert names["L-3"] == '\'=HYPERLINK("http://x")'  # escaped for spreadsheets
    assert names["L-5"] == "Person 5"


def test_display_fields_are_for_signed_in_sales_only_and_never_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        seed_day(client)
        assert client.get("/board/today", follow_redirects=False).headers["location"] == (
            "/board/login"
        )
        assert client.get("/board/today.csv", follow_redirects=False).status_code == 303
        ranked = client.get("/v1/leads/ranked", headers={"X-API-Key": SALES}).text
        sign_in(client)
        assert "Person 2" in client.get("/board/today").text
        lead_page = client.get("/board/leads/L-2").text
        assert "<dt>Name</dt><dd>Person 2</dd>" in lead_page
        assert "<dt>Title</dt><dd>CTO</dd>" in lead_page
    assert "Person" not in ranked and "Co 1" not in ranked
    assert "Person" not in caplog.text


def test_new_rising_and_cooling_come_from_the_last_day_of_events(client: TestClient) -> None:
    old = NOW - timedelta(days=2)
    seed(
        client,
        [score_row("L-up", 40, grade="C", at=old), score_row("L-down", 80, grade="A", at=old)],
    )
    seed(client, [score_row("L-up", 70, grade="A"), score_row("L-down", 50, grade="C"),
                  score_row("L-new", 60, grade="B")])  # fmt: skip
    sign_in(client)
    html = client.get("/board/today").text
    sections = dict(re.findall(r'data-section="(\w+)">(.*?)</table>', html, re.S))
    moves = {k: re.findall(r'data-move-lead="([^"]+)" data-change="(-?\d+)"', v)
             for k, v in sections.items()}  # fmt: skip
    assert moves == {
        "rising": [("L-up", "30"), ("L-new", "60")],  # best first: now 70, then 60
        "cooling": [("L-down", "-30")],
    }
