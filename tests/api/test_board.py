"""The sales lead board through the real app (TestClient): sign-in, ranking, filters,
paging, a lead's page, recording outcomes, CSRF, escaping and accessible markup.

Most tests seed the scoring log directly with ScoreRow values (exact scores, categories
and reasons make the expected order obvious) and start the app without a model: the
board only reads the log. One test scores a real lead through /v1/score first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from scorelog import ScoreLog, ScoreRow
from serving.app import create_app
from serving.board import Sessions, session_secret
from serving.settings import ServingSettings
from tests.api.test_api import CRM, SALES, lead, make_settings

NOW = datetime.now(UTC).replace(microsecond=0)
CSS = Path(__file__).parents[2] / "serving" / "static" / "board.css"


def score_row(
    lead_id: str,
    score: int,
    *,
    category: str = "mql",
    grade: str = "B",
    source: str | None = "referral",
    at: datetime = NOW,
    reasons: dict[str, Any] | None = None,
) -> ScoreRow:
    return ScoreRow(
        request_id=f"req-{lead_id}-{score}",
        lead_id=lead_id,
        scored_at=at,
        model_name="local",
        model_version="7",
        probabilities={"mql": score / 100, "sql": score / 200},
        score=score,
        grade=grade,
        category=category,
        reasons=reasons
        if reasons is not None
        else {
            "positive": [{"field": "pricing_page", "effect": 0.4, "text": f"why {lead_id}"}],
            "negative": [{"field": "business_email", "effect": -0.1, "text": "free e-mail"}],
        },
        warnings=[],
        acquisition_source=source,
    )


@pytest.fixture
def settings(tmp_path: Path) -> ServingSettings:
    return make_settings(tmp_path, tmp_path / "no-model")


@pytest.fixture
def client(settings: ServingSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def scorelog(client: TestClient) -> ScoreLog:
    log: ScoreLog = client.app.state.scorelog  # type: ignore[attr-defined]
    return log


def seed(client: TestClient, rows: list[ScoreRow]) -> None:
    scorelog(client).submit_scores(rows).result(timeout=10)


def sign_in(client: TestClient) -> None:
    response = client.post("/board/login", data={"api_key": SALES}, follow_redirects=False)
    assert response.status_code == 303, response.text


def rows_of(html: str) -> list[dict[str, str]]:
    """The data-* attributes of every lead row, in page order."""
    return [
        dict(re.findall(r'data-([a-z-]+)="([^"]*)"', attrs))
        for attrs in re.findall(r"<tr (data-lead-id=[^>]*)>", html)
    ]


def form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', html))


def next_link(html: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">', html)
    return found.group(1).replace("&amp;", "&") if found else None


def post_outcome(
    client: TestClient, lead_id: str, fields: dict[str, str], **extra: str
) -> tuple[int, str | None]:
    """Submit the outcome form; (status, where it redirects to)."""
    response = client.post(
        f"/board/leads/{lead_id}/outcomes", data={**fields, **extra}, follow_redirects=False
    )
    return response.status_code, response.headers.get("location")


# -- signing in ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/board"), ("GET", "/board/leads/L-1"), ("POST", "/board/leads/L-1/outcomes")],
)
def test_every_page_sends_a_visitor_without_a_session_to_the_login(
    client: TestClient, method: str, path: str
) -> None:
    response = client.request(method, path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/board/login"
    assert scorelog(client).outcomes("L-1") == []


@pytest.mark.parametrize("key", ["not-a-key", CRM, ""])
def test_a_key_that_is_not_a_sales_key_shows_the_form_again_with_401(
    client: TestClient, key: str
) -> None:
    response = client.post("/board/login", data={"api_key": key}, follow_redirects=False)
    assert response.status_code == 401
    assert 'name="api_key"' in response.text
    assert "That is not a valid sales key." in response.text
    assert "set-cookie" not in response.headers
    assert not key or key not in response.text  # the key is never echoed


def test_a_sales_key_sets_a_strict_httponly_session_cookie(client: TestClient) -> None:
    login = client.get("/board/login")
    assert login.status_code == 200 and 'type="password"' in login.text
    response = client.post("/board/login", data={"api_key": SALES}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/board/today"
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "SameSite=strict" in cookie and "Path=/board" in cookie
    assert SALES not in cookie
    assert client.get("/board").status_code == 200
    # Signed in, the login page goes straight to the board (its Today view).
    location = client.get("/board/login", follow_redirects=False).headers["location"]
    assert location == "/board/today"  # the day's work


def test_logout_clears_the_session(client: TestClient) -> None:
    sign_in(client)
    response = client.post("/board/logout", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/board/login"
    assert 'leadscore_board=""' in response.headers["set-cookie"]
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert client.get("/board", follow_redirects=False).status_code == 303


def test_sessions_expire_cannot_be_forged_and_end_when_the_sales_keys_change(
    tmp_path: Path,
) -> None:
    sessions = Sessions(session_secret(make_settings(tmp_path, tmp_path)))
    token = sessions.issue()
    assert sessions.valid(token)
    assert not sessions.valid(sessions.issue(now=0))  # expired long ago
    expiry, nonce, mac = token.split(".")
    assert not sessions.valid(f"{int(expiry) + 3600}.{nonce}.{mac}")  # a longer life
    assert not sessions.valid(f"{expiry}.{nonce}.{mac[:-2]}AA")
    assert not sessions.valid("") and not sessions.valid("x" * 1000)
    rotated = make_settings(tmp_path, tmp_path, api_keys_sales=[SALES, "sales-key-2"])
    assert not Sessions(session_secret(rotated)).valid(token)
    assert session_secret(make_settings(tmp_path, tmp_path, api_keys_sales=[])) is None
    assert not Sessions(None).valid(token)


# -- the board ------------------------------------------------------------------------------


def test_the_board_lists_leads_by_latest_score_highest_first(client: TestClient) -> None:
    seed(client, [score_row(f"L-{i}", s) for i, s in enumerate([40, 90, 65, 90, 12])])
    seed(client, [score_row("L-4", 99, at=NOW + timedelta(minutes=5))])  # re-scored: latest wins
    sign_in(client)
    rows = rows_of(client.get("/board").text)
    assert [(r["lead-id"], int(r["score"])) for r in rows] == [
        ("L-4", 99), ("L-1", 90), ("L-3", 90), ("L-2", 65), ("L-0", 40),
    ]  # fmt: skip
    page = client.get("/board").text
    assert "why L-4" in page and "Grade B" in page and "MQL: marketing-qualified" in page


def test_filters_narrow_the_list(client: TestClient) -> None:
    seed(
        client,
        [
            score_row("L-sql-a", 95, category="sql", grade="A", source="event"),
            score_row("L-sql-b", 75, category="sql", grade="B", source="referral"),
            score_row("L-mql", 55, category="mql", grade="C", source="event"),
            score_row("L-nur", 20, category="nurture", grade="D", source=None),
        ],
    )
    sign_in(client)

    def ids(query: str) -> list[str]:
        response = client.get(f"/board?{query}")
        assert response.status_code == 200
        return [r["lead-id"] for r in rows_of(response.text)]

    assert ids("") == ["L-sql-a", "L-sql-b", "L-mql", "L-nur"]
    assert ids("category=sql&grade=&source=") == ["L-sql-a", "L-sql-b"]
    assert ids("grade=C") == ["L-mql"]
    assert ids("source=event") == ["L-sql-a", "L-mql"]
    assert ids("category=sql&source=event") == ["L-sql-a"]
    assert ids("category=customer") == []
    assert "No leads match these filters." in client.get("/board?category=customer").text
    assert '<option value="sql" selected>' in client.get("/board?category=sql").text
    for bad in ("category=hot", "grade=E", "source=myspace", "cursor=%%%"):
        assert client.get(f"/board?{bad}").status_code == 400


def test_pages_follow_the_keyset_cursor_and_keep_the_filters(client: TestClient) -> None:
    seed(client, [score_row(f"L-{i:03d}", i % 100, category="mql") for i in range(120)])
    seed(client, [score_row("L-sql", 50, category="sql")])
    sign_in(client)
    url: str | None = "/board?category=mql"
    pages: list[list[str]] = []
    while url is not None:
        html = client.get(url).text
        pages.append([r["lead-id"] for r in rows_of(html)])
        if len(pages) > 1:
            assert 'href="/board?category=mql">First page</a>' in html
        url = next_link(html)
        assert url is None or "category=mql" in url
    assert [len(p) for p in pages] == [50, 50, 20]
    seen = [lead_id for page in pages for lead_id in page]
    expected = [r.lead_id for r in scorelog(client).ranked(category="mql", limit=500)]
    assert seen == expected and "L-sql" not in seen


def test_the_board_cursor_is_the_api_cursor(client: TestClient) -> None:
    seed(client, [score_row(f"L-{i:03d}", i % 100) for i in range(60)])
    sign_in(client)
    link = next_link(client.get("/board").text)
    assert link is not None
    cursor = link.split("cursor=")[1]
    api = client.get(f"/v1/leads/ranked?cursor={cursor}", headers={"X-API-Key": SALES})
    board = rows_of(client.get(link).text)
    assert [i["lead_id"] for i in api.json()["items"]] == [r["lead-id"] for r in board]


# -- a lead's page and its outcomes ----------------------------------------------------------


def test_the_lead_page_shows_history_newest_first_with_reasons(client: TestClient) -> None:
    seed(client, [score_row("L-7", 35, grade="C", at=NOW - timedelta(days=2))])
    seed(client, [score_row("L-7", 82, grade="A", category="sql", at=NOW)])
    sign_in(client)
    html = client.get("/board/leads/L-7").text
    assert re.findall(r'<tr data-score="(\d+)">', html) == ["82", "35"]
    assert "Raises the score: </span>why L-7" in html
    assert "Lowers the score: </span>free e-mail" in html
    assert "No outcome recorded yet." in html
    assert client.get("/board/leads/L-unknown").status_code == 404


def test_an_id_that_cannot_be_a_lead_is_not_found_and_never_echoed(client: TestClient) -> None:
    sign_in(client)
    response = client.get("/board/leads/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert response.status_code == 404
    assert "<script" not in response.text and "alert(1)" not in response.text


def test_recording_an_outcome_writes_one_row_and_a_replayed_form_none(
    client: TestClient,
) -> None:
    seed(client, [score_row("L-9", 70)])
    sign_in(client)
    fields = form_fields(client.get("/board/leads/L-9").text)
    assert set(fields) == {"csrf_token", "form_id"}
    status, location = post_outcome(client, "L-9", fields, outcome="won", note="signed today")
    assert (status, location) == (303, "/board/leads/L-9?result=recorded&outcome=won")
    page = client.get("/board/leads/L-9?result=recorded&outcome=won").text
    assert "Outcome recorded: won." in page and "signed today" in page
    [row] = scorelog(client).outcomes("L-9")
    assert (row.outcome, row.note, row.stage) == ("won", "signed today", None)
    assert row.idempotency_key == f"board:{fields['form_id']}"
    assert abs(row.occurred_at - datetime.now(UTC)) < timedelta(minutes=1)

    status, location = post_outcome(client, "L-9", fields, outcome="won", note="signed today")
    assert (status, location) == (303, "/board/leads/L-9?result=duplicate&outcome=won")
    assert (
        "Already recorded: won" in client.get("/board/leads/L-9?result=duplicate&outcome=won").text
    )
    assert len(scorelog(client).outcomes("L-9")) == 1

    fresh = form_fields(client.get("/board/leads/L-9").text)  # a new form is a new event
    post_outcome(client, "L-9", fresh, outcome="contacted")
    assert [o.outcome for o in scorelog(client).outcomes("L-9")] == ["won", "contacted"]


@pytest.mark.parametrize("csrf", [None, "", "forged", "other-session"])
def test_an_outcome_without_this_sessions_csrf_token_is_refused(
    client: TestClient, settings: ServingSettings, csrf: str | None
) -> None:
    seed(client, [score_row("L-9", 70)])
    sign_in(client)
    fields = form_fields(client.get("/board/leads/L-9").text)
    if csrf is None:
        del fields["csrf_token"]
    elif csrf == "other-session":
        sessions = Sessions(session_secret(settings))
        fields["csrf_token"] = sessions.csrf(sessions.issue())
    else:
        fields["csrf_token"] = csrf
    assert post_outcome(client, "L-9", fields, outcome="won") == (403, None)
    assert scorelog(client).outcomes("L-9") == []


@pytest.mark.parametrize(
    "change",
    [{"outcome": "stage_reached"}, {"outcome": "married"}, {"note": "x" * 501}, {"form_id": "1"}],
)
def test_an_invalid_outcome_form_writes_nothing(client: TestClient, change: dict[str, str]) -> None:
    seed(client, [score_row("L-9", 70)])
    sign_in(client)
    fields = {**form_fields(client.get("/board/leads/L-9").text), "outcome": "won", **change}
    response = client.post("/board/leads/L-9/outcomes", data=fields, follow_redirects=False)
    assert response.status_code == 422
    assert scorelog(client).outcomes("L-9") == []


def test_an_outcome_sent_as_json_is_refused(client: TestClient) -> None:
    sign_in(client)
    response = client.post("/board/leads/L-9/outcomes", json={"outcome": "won"})
    assert response.status_code == 415


def test_notes_and_reasons_are_shown_as_text_never_as_markup(client: TestClient) -> None:
    evil = {"positive": [{"field": "x", "effect": 1.0, "text": "<img src=x onerror=alert(2)>"}]}
    seed(client, [score_row("L-x", 50, reasons=evil)])
    sign_in(client)
    fields = form_fields(client.get("/board/leads/L-x").text)
    post_outcome(client, "L-x", fields, outcome="lost", note="<script>alert(1)</script>")
    html = client.get("/board/leads/L-x").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html and "<img" not in html
    assert "<img" not in client.get("/board").text


# -- what every page promises -----------------------------------------------------------


def test_pages_forbid_scripts_framing_and_caching(client: TestClient) -> None:
    seed(client, [score_row("L-1", 50)])
    sign_in(client)
    for path in ("/board/login", "/board", "/board/leads/L-1"):
        headers = client.get(path).headers
        assert "script-src" not in headers["content-security-policy"]  # default-src 'none'
        assert "default-src 'none'" in headers["content-security-policy"]
        assert headers["cache-control"] == "no-store"
        assert headers["x-frame-options"] == "DENY"
        assert headers["content-type"].startswith("text/html")
    link = re.search(r'href="(/board/static/board\.css\?v=\w+)"', client.get("/board").text)
    assert link is not None
    css = client.get(link.group(1))
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert not any(p.startswith("/board") for p in client.get("/openapi.json").json()["paths"])


class _Markup(HTMLParser):
    """Collects what the accessibility checks need: controls, labels, tables, headers."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.labels: set[str] = set()
        self.tables = 0
        self.captions = 0
        self.column_headers: list[str | None] = []
        self._in_thead = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in {"input", "select", "textarea"} and a.get("type") != "hidden":
            self.controls.append(a)
        elif tag == "label" and a.get("for"):
            self.labels.add(str(a["for"]))
        elif tag == "table":
            self.tables += 1
        elif tag == "caption":
            self.captions += 1
        elif tag == "thead":
            self._in_thead = True
        elif tag == "th" and self._in_thead:
            self.column_headers.append(a.get("scope"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self._in_thead = False


def test_every_control_is_labelled_and_every_table_has_a_caption_and_column_scopes(
    client: TestClient,
) -> None:
    seed(client, [score_row("L-1", 50)])
    pages = [client.get("/board/login").text]
    sign_in(client)
    pages += [client.get("/board").text, client.get("/board/leads/L-1").text]
    for html in pages:
        markup = _Markup()
        markup.feed(html)
        assert markup.controls
        assert all(c.get("id") in markup.labels for c in markup.controls), markup.controls
        assert markup.tables == markup.captions
        assert set(markup.column_headers) <= {"col"}
        assert '<html lang="en">' in html and 'name="viewport"' in html


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_every_text_colour_pair_has_a_contrast_of_at_least_4_5() -> None:
    colours = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6});", CSS.read_text()))
    pairs = [
        ("text", "bg"), ("muted", "bg"), ("muted", "stripe"), ("link", "bg"), ("link", "stripe"),
        ("text", "stripe"), ("header-text", "header-bg"), ("button-text", "button-bg"),
        ("good-text", "good-bg"), ("info-text", "info-bg"), ("warn-text", "warn-bg"),
        ("bad-text", "bad-bg"), ("plain-text", "plain-bg"), ("violet-text", "violet-bg"),
        ("good-text", "bg"), ("bad-text", "bg"), ("focus", "bg"), ("focus-on-dark", "header-bg"),
    ]  # fmt: skip
    for fg, bg in pairs:
        assert _contrast(colours[fg], colours[bg]) >= 4.5, (fg, bg)


# -- with a real model ----------------------------------------------------------------------


def test_a_lead_scored_through_the_api_appears_with_its_reasons(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    with TestClient(create_app(make_settings(tmp_path, trained_model_dir))) as client:
        scored = client.post("/v1/score", json=lead("L-real"), headers={"X-API-Key": CRM}).json()
        sign_in(client)
        [row] = rows_of(client.get("/board").text)
        assert (row["lead-id"], int(row["score"])) == ("L-real", scored["score"])
        assert (row["grade"], row["category"]) == (scored["grade"], scored["category"])
        html = client.get("/board/leads/L-real").text
    for reason in scored["reasons"]["positive"] + scored["reasons"]["negative"]:
        assert str(escape(reason["text"])) in html
