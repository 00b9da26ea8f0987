"""The board's day: each rep's list for today, what is new or rising, what is cooling.

    GET /board/today[?rep=NAME]       the page (sales session, like every board page)
    GET /board/today.csv[?rep=NAME]   exactly the leads of that view, for a CRM import

"Today" fills each rep's daily capacity (``LEADSCORE_BOARD_REPS``, else one team list of
``LEADSCORE_BOARD_DAILY_CAPACITY``) with the best leads nobody has contacted yet, dealt
in rank order so every rep gets a fair share of the best. "New or rising" and "cooling"
come from the score-change events of the last 24 hours. Display fields (name, company,
title) appear here for the sales role only; they are never logged.

The CSV is built from the same rows as the page, in the same order. A value that a
spreadsheet would run as a formula (starting with = + - @, a tab or a carriage return)
is prefixed with a quote, so a lead named "=HYPERLINK(...)" cannot act on import.
"""

# No `from __future__ import annotations`: FastAPI evaluates the route signatures.
import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from features.spec import load_spec
from scorelog.display import display_of
from scorelog.rows import RankedLead
from scorelog.store import ScoreLog
from scorelog.worklist import Movement, assign, movements, uncontacted
from serving import board
from serving.deps import scorelog
from serving.settings import ServingSettings

TEAM = "Team"
MOVEMENT_WINDOW = timedelta(days=1)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class TodayRow:
    rep: str
    rank: int
    lead: RankedLead
    display: dict[str, str]
    reason: str | None


def capacities(settings: ServingSettings) -> dict[str, int]:
    return dict(settings.board_reps) or {TEAM: settings.board_daily_capacity}


def today_rows(log: ScoreLog, reps: dict[str, int], only: str | None) -> list[TodayRow]:
    """Every rep's list (or one rep's), dealt from the best uncontacted leads."""
    lists = assign(uncontacted(log.engine, sum(reps.values())), reps)
    picked = [(rep, i, lead) for rep, leads in lists.items() for i, lead in enumerate(leads, 1)]
    picked = [p for p in picked if only is None or p[0] == only]
    shown = display_of(log.engine, [lead.lead_id for _, _, lead in picked])
    rows = []
    for rep, rank, lead in picked:
        latest = log.history(lead.lead_id, limit=1)
        reasons = board.reasons_in_words(latest[0].reasons, limit=1) if latest else []
        reason = reasons[0].text if reasons else None
        rows.append(TodayRow(rep, rank, lead, shown.get(lead.lead_id, {}), reason))
    return rows


def moved(log: ScoreLog) -> tuple[list[Movement], list[Movement], dict[str, dict[str, str]]]:
    rising, cooling = movements(log.engine, datetime.now(UTC) - MOVEMENT_WINDOW)
    shown = display_of(log.engine, [m.lead_id for m in rising + cooling])
    return rising, cooling, shown


def csv_text(rows: list[TodayRow], labels: list[tuple[str, str]]) -> str:
    """The rows as CSV: the columns of the page's tables, rep first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        ["rep", "rank", "lead_id", *(label for _, label in labels), "score", "grade",
         "category", "top_reason", "scored_at"]
    )  # fmt: skip
    for row in rows:
        lead = row.lead
        writer.writerow(
            [_cell(row.rep), row.rank, _cell(lead.lead_id),
             *(_cell(row.display.get(name, "")) for name, _ in labels),
             lead.score, lead.grade, lead.category, _cell(row.reason or ""),
             lead.scored_at.isoformat()]
        )  # fmt: skip
    return out.getvalue()


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def router(settings: ServingSettings) -> APIRouter:
    spec = load_spec(settings.spec)
    labels = [(d.name, d.label) for d in spec.display]
    reps = capacities(settings)
    sessions = board.Sessions(board.session_secret(settings))
    env = board.template_environment()
    env.globals["css_url"] = board.stylesheet_url()
    api = APIRouter(prefix=board.COOKIE_PATH, include_in_schema=False)
    Log = Annotated[ScoreLog, Depends(scorelog)]

    def signed_in(request: Request) -> str | None:
        token = request.cookies.get(board.SESSION_COOKIE)
        return token if sessions.valid(token) else None

    async def view(request: Request) -> tuple[str, str | None] | Response:
        """(session token, the rep asked for or None), or the answer that refuses the visit."""
        token = signed_in(request)
        if token is None:
            return board.redirect(f"{board.COOKIE_PATH}/login")
        only = request.query_params.get("rep") or None
        if only is not None and only not in reps:
            context = {
                "title": "Unknown rep",
                "detail": "Choose a rep from the list.",
                "csrf": sessions.csrf(token),
            }
            return await board.render_page(env, "message.html", context, 400)
        return token, only

    @api.get("/today")
    async def today(request: Request, log: Log) -> Response:
        checked = await view(request)
        if isinstance(checked, Response):
            return checked
        token, only = checked
        rows = await run_in_threadpool(today_rows, log, reps, only)
        rising, cooling, shown = await run_in_threadpool(moved, log)
        context: dict[str, Any] = {
            "title": "Today",
            "reps": reps,
            "rep": only,
            "lists": {
                rep: [r for r in rows if r.rep == rep] for rep in reps if only in (None, rep)
            },
            "labels": labels,
            "rising": rising,
            "cooling": cooling,
            "shown": shown,
            "csv_url": f"{board.COOKIE_PATH}/today.csv"
            + (f"?rep={quote(only, safe='')}" if only else ""),
            "csrf": sessions.csrf(token),
        }
        return await board.render_page(env, "today.html", context)

    @api.get("/today.csv")
    async def today_csv(request: Request, log: Log) -> Response:
        checked = await view(request)
        if isinstance(checked, Response):
            return checked
        rows = await run_in_threadpool(today_rows, log, reps, checked[1])
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        return Response(
            csv_text(rows, labels),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="leads-today-{day}.csv"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    return api
