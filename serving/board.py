"""The sales lead board: the ranked leads as server-rendered HTML, for people with a browser.

The JSON API authenticates every request with an ``X-API-Key`` header, which a browser
cannot send from a link or a form. So the board asks for a sales key once
(``POST /board/login``, checked by the same constant-time :class:`KeyRing`) and answers
with a session cookie that holds no key at all: an expiry time and a random nonce, signed
with HMAC-SHA256. The signing secret is derived from the configured sales keys, so

* nothing new has to be configured, and every worker derives the same secret (a session
  started on one worker is valid on all of them);
* rotating or revoking a sales key changes the secret and ends every board session.

The cookie is ``HttpOnly`` (no script can read it), ``SameSite=Strict`` (no other site can
make the browser send it) and scoped to ``/board``; forms that change data also carry a
CSRF token, the HMAC of the session token, checked in constant time. Pages are rendered
by Jinja2 with autoescaping, so lead ids, reasons and notes are shown as text, never as
markup, and a Content-Security-Policy forbids scripts outright as a second line.

Reads use ``ScoreLog.ranked`` (an index walk from the keyset cursor, 50 rows) and, for the
reasons of those 50 leads, one indexed ``history(lead, limit=1)`` each; nothing on a page
counts or sorts the whole table, so page 1 and page 2,000 cost the same.
"""

# No `from __future__ import annotations`: FastAPI evaluates the route signatures.
import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from features.spec import CategoricalField, FeatureSpec, load_spec
from scorelog.display import display_of
from scorelog.rows import (
    REASONED_OUTCOMES,
    REJECTION_REASONS,
    OutcomeConflictError,
    OutcomeRow,
    RankedLead,
    ScoreRow,
)
from scorelog.store import ScoreLog
from serving import outcome_events
from serving.board_chart import score_chart
from serving.cursor import decode_cursor, encode_cursor
from serving.deps import scorelog
from serving.schemas import (
    LEAD_ID_PATTERN,
    MAX_ID_LENGTH,
    MAX_NOTE_LENGTH,
    idempotency_key,
    outcome_model,
    spec_stages,
)
from serving.security import client_address
from serving.settings import ServingSettings

PAGE_SIZE = 50
SESSION_COOKIE = "leadscore_board"
SESSION_SECONDS = 8 * 3600  # a working day: long enough not to nag, short for a lost laptop
COOKIE_PATH = "/board"
#: Where a signed-in salesperson lands: the day's work (``serving.today``).
HOME = f"{COOKIE_PATH}/today"
#: What sales record from the board; ``stage_reached`` stays with the CRM integration.
SALES_OUTCOMES = ("contacted", "qualified", "disqualified", "won", "lost")
CATEGORIES = {
    "sql": "SQL: sales-ready",
    "mql": "MQL: marketing-qualified",
    "nurture": "Nurture",
    "customer": "Customer",
}
GRADES = ("A", "B", "C", "D")
_SOURCE_FIELD = "acquisition_source"
_FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
_MAX_FORM_FIELDS = 10
_TEMPLATES = Path(__file__).parent / "templates" / "board"
_CSS = Path(__file__).parent / "static" / "board.css"
_LEAD_ID = re.compile(LEAD_ID_PATTERN)
_FORM_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SOURCE = re.compile(r"^[a-z0-9_]{1,64}$")
#: The error pages, in fixed words: an error never quotes what the visitor sent.
_ERRORS = {
    "filter": ("Unknown filter", "Choose the filters from the lists."),
    "cursor": ("Page link not valid", "Start again from the first page."),
    "lead_id": ("No such lead", "Lead ids use letters, digits and ._:@-."),
    "unscored": ("No such lead", "This lead has not been scored."),
    "not_form": ("Not a form", "Send the form from the lead page."),
    "csrf": ("Form expired", "Reload the lead page and submit again."),
    "outcome": ("Outcome not recorded", "Choose an outcome from the list."),
    "note": ("Outcome not recorded", f"Check the note: at most {MAX_NOTE_LENGTH} characters."),
    "reason": (
        "Outcome not recorded",
        "Choose a reason from the list; a reason goes with disqualified or lost only.",
    ),
}
#: Pages hold personal data and need no script, frame or foreign resource.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


# --------------------------------------------------------------------------- sessions


def session_secret(settings: ServingSettings) -> bytes | None:
    """The HMAC key for sessions, derived from the sales keys; None when there are none.

    Derived rather than configured so the board needs no new setting, every worker
    computes the same key, and changing the sales keys (rotation, a leaked key) ends all
    sessions. The keys are sorted so their order in the setting does not matter.
    """
    keys = sorted(k.get_secret_value() for k in settings.keys_for("sales"))
    if not keys:
        return None
    material = "\0".join(keys).encode()
    return hmac.new(b"leadscore board session v1", material, hashlib.sha256).digest()


class Sessions:
    """Signed, stateless session tokens (``expiry.nonce.mac``) and their CSRF tokens.

    Stateless so any worker can check a token without a shared store; the price is that
    logging out deletes the cookie but cannot revoke a copy of it before it expires.
    """

    def __init__(self, secret: bytes | None, lifetime_s: int = SESSION_SECONDS) -> None:
        self._secret = secret
        self.lifetime_s = lifetime_s

    def issue(self, now: float | None = None) -> str:
        if self._secret is None:
            raise RuntimeError("no sales keys are configured: nobody can sign in")
        expiry = int((time.time() if now is None else now) + self.lifetime_s)
        payload = f"{expiry}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._mac('session', payload)}"

    def valid(self, token: str | None, now: float | None = None) -> bool:
        """Signed by us and not expired; the MAC is compared in constant time."""
        if self._secret is None or not token or len(token) > 200:
            return False
        payload, _, mac = token.rpartition(".")
        expiry, _, _nonce = payload.partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac("session", payload).encode()):
            return False
        return expiry.isdigit() and int(expiry) > (time.time() if now is None else now)

    def csrf(self, token: str) -> str:
        """The form token for a session: forging it needs the secret, not just the cookie."""
        return self._mac("csrf", token)

    def csrf_ok(self, token: str, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(
            presented.encode(), self.csrf(token).encode()
        )

    def _mac(self, purpose: str, payload: str) -> str:
        assert self._secret is not None  # checked by every caller
        digest = hmac.new(self._secret, f"{purpose}:{payload}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


# --------------------------------------------------------------------------- view models


@dataclass(frozen=True)
class Filters:
    """The board's GET form, checked: each value is one of the choices or None (any)."""

    category: str | None = None
    grade: str | None = None
    source: str | None = None

    def query(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class Reason:
    text: str
    raises: bool


@dataclass(frozen=True)
class BoardRow:
    lead: RankedLead
    reasons: list[Reason]


def reasons_in_words(reasons: Mapping[str, Any], limit: int | None = None) -> list[Reason]:
    """The stored reasons as sentences, positive first; malformed entries are skipped.

    The reasons column is JSON written by whichever model version scored the lead, so
    this reads it defensively instead of trusting its shape.
    """
    out: list[Reason] = []
    for kind, raises in (("positive", True), ("negative", False)):
        items = reasons.get(kind) if isinstance(reasons, Mapping) else None
        for item in items if isinstance(items, list) else []:
            if isinstance(item, Mapping) and isinstance(item.get("text"), str):
                out.append(Reason(item["text"], raises))
    return out if limit is None else out[:limit]


def source_levels(spec: FeatureSpec) -> list[str] | None:
    """The acquisition sources the spec declares, or None (then the filter is free text)."""
    for field in spec.fields:
        if field.name == _SOURCE_FIELD and isinstance(field, CategoricalField):
            return list(field.levels) if field.levels else None
    return None


def _choice(value: str | None, allowed: Sequence[str]) -> str | None:
    """'' (the "any" option) → None; a value outside the choices raises ValueError."""
    if not value:
        return None
    if value not in allowed:
        raise ValueError("not one of the choices")
    return value


def parse_filters(params: Mapping[str, str], sources: list[str] | None) -> Filters:
    """The filters from a query string; ValueError names nothing the visitor typed."""
    source = params.get("source") or None
    if source is not None and not (source in sources if sources else _SOURCE.match(source)):
        raise ValueError("not one of the choices")
    return Filters(
        category=_choice(params.get("category"), list(CATEGORIES)),
        grade=_choice(params.get("grade"), GRADES),
        source=source,
    )


def valid_lead_id(lead_id: str) -> bool:
    """The API's own id rule: ids outside it were never stored, and never echoed."""
    return len(lead_id) <= MAX_ID_LENGTH and _LEAD_ID.match(lead_id) is not None


def board_url(query: Mapping[str, str]) -> str:
    return f"{COOKIE_PATH}?{urlencode(query)}" if query else COOKIE_PATH


def lead_url(lead_id: str, **query: str) -> str:
    url = f"{COOKIE_PATH}/leads/{quote(lead_id, safe='')}"
    return f"{url}?{urlencode(query)}" if query else url


# --------------------------------------------------------------------------- rendering


def template_environment() -> jinja2.Environment:
    """Autoescape everything (every template is HTML); undefined names fail loudly."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(categories=CATEGORIES, lead_url=lead_url)
    env.filters["when"] = _when
    return env


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def _page(
    env: jinja2.Environment, name: str, context: Mapping[str, Any], status: int = 200
) -> HTMLResponse:
    """Render in the thread pool: a page of 50 rows takes milliseconds, and the event loop
    also carries the scoring requests, which should not wait behind HTML."""
    html = await run_in_threadpool(env.get_template(name).render, **context)
    return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)


async def render_page(
    env: jinja2.Environment, name: str, context: Mapping[str, Any], status: int = 200
) -> HTMLResponse:
    """A board page with the board's headers (CSP, no-store, ...), for other board views."""
    return await _page(env, name, context, status)


def stylesheet_url() -> str:
    """The board stylesheet's versioned URL (cached a day by browsers)."""
    return f"{COOKIE_PATH}/static/board.css?v={hashlib.sha256(_CSS.read_bytes()).hexdigest()[:12]}"


def redirect(url: str) -> RedirectResponse:
    return _redirect(url)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


async def read_form(request: Request) -> dict[str, str] | None:
    """A urlencoded body as {name: first value}; None if it is not a form.

    Parsed here rather than with FastAPI's ``Form`` so the board needs no multipart
    parser; the body size is already bounded by the app's ``BodyLimits``.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != _FORM_MEDIA_TYPE:
        return None
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


# --------------------------------------------------------------------------- reads


def board_rows(log: ScoreLog, filters: Filters, after: tuple[int, str] | None) -> list[BoardRow]:
    """One page of the board: ranked leads and the top reasons of each one's latest score.

    ``lead_latest`` holds no reasons, so each lead's newest ``scores`` row is read by its
    (lead_id, scored_at) index: 50 point lookups, a few milliseconds in all.
    """
    leads = log.ranked(**vars(filters), limit=PAGE_SIZE, after=after)
    rows = []
    for lead in leads:
        latest = log.history(lead.lead_id, limit=1)
        reasons = reasons_in_words(latest[0].reasons, limit=3) if latest else []
        rows.append(BoardRow(lead, reasons))
    return rows


def lead_detail(log: ScoreLog, lead_id: str) -> tuple[list[ScoreRow], list[OutcomeRow]]:
    return log.history(lead_id), log.outcomes(lead_id)


# --------------------------------------------------------------------------- routes


def router(settings: ServingSettings) -> APIRouter:
    """The board's pages; none is part of the OpenAPI document (they are HTML, not API)."""
    spec = load_spec(settings.spec)
    Outcome = outcome_model(spec_stages(spec))
    sources = source_levels(spec)
    sessions = Sessions(session_secret(settings))
    env = template_environment()
    css = _CSS.read_bytes()
    env.globals["css_url"] = stylesheet_url()
    api = APIRouter(prefix=COOKIE_PATH, include_in_schema=False)
    Log = Annotated[ScoreLog, Depends(scorelog)]

    def current(request: Request) -> str | None:
        token = request.cookies.get(SESSION_COOKIE)
        return token if sessions.valid(token) else None

    async def page(name: str, context: Mapping[str, Any], status: int = 200) -> HTMLResponse:
        return await _page(env, name, context, status)

    async def problem(token: str | None, status: int, error: str) -> HTMLResponse:
        title, detail = _ERRORS[error]
        csrf = sessions.csrf(token) if token else None
        context = {"title": title, "detail": detail, "csrf": csrf}
        return await page("message.html", context, status)

    @api.get("/static/board.css")
    async def stylesheet() -> Response:
        """Served by the router (no static mount): versioned URL, so cached for a day."""
        headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
        return Response(css, media_type="text/css", headers=headers)

    @api.get("/login")
    async def login_form(request: Request) -> Response:
        if current(request):
            return _redirect(HOME)
        return await page("login.html", {"title": "Sign in", "error": None, "csrf": None})

    @api.post("/login")
    async def login(request: Request) -> Response:
        form = await read_form(request) or {}
        presented = form.get("api_key", "")
        keyring = request.app.state.keyring
        if not presented or "sales" not in keyring.roles_of(presented):
            # Failed sign-ins count against the address like wrong API keys (429 past it).
            wait = request.app.state.auth_limiter.failure(client_address(request))
            error = "That is not a valid sales key."
            if wait is not None:
                error = f"Too many failed sign-ins from this address; try again in {wait} s."
            context = {"title": "Sign in", "error": error, "csrf": None}
            refused = await page("login.html", context, 401 if wait is None else 429)
            if wait is not None:
                refused.headers["Retry-After"] = str(wait)
            return refused
        response = _redirect(HOME)
        response.set_cookie(
            SESSION_COOKIE,
            sessions.issue(),
            max_age=sessions.lifetime_s,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @api.post("/logout")
    async def logout() -> Response:
        """Needs no CSRF token: a forged logout only signs someone out."""
        response = _redirect(f"{COOKIE_PATH}/login")
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return response

    @api.get("")
    async def board(request: Request, log: Log) -> Response:
        token = current(request)
        if token is None:
            return _redirect(f"{COOKIE_PATH}/login")
        params = request.query_params
        try:
            filters = parse_filters(params, sources)
        except ValueError:
            return await problem(token, 400, "filter")
        cursor = params.get("cursor")
        after = decode_cursor(cursor) if cursor else None
        if cursor and after is None:
            return await problem(token, 400, "cursor")
        rows = await run_in_threadpool(board_rows, log, filters, after)
        next_url = None
        if len(rows) == PAGE_SIZE:
            last = rows[-1].lead
            query = {**filters.query(), "cursor": encode_cursor(last.score, last.lead_id)}
            next_url = board_url(query)
        context = {
            "title": "Lead board",
            "rows": rows,
            "filters": filters,
            "sources": sources,
            "grades": GRADES,
            "first_url": board_url(filters.query()) if cursor else None,
            "next_url": next_url,
            "csrf": sessions.csrf(token),
        }
        return await page("board.html", context)

    @api.get("/leads/{lead_id}")
    async def lead_page(request: Request, lead_id: str, log: Log) -> Response:
        token = current(request)
        if token is None:
            return _redirect(f"{COOKIE_PATH}/login")
        if not valid_lead_id(lead_id):
            return await problem(token, 404, "lead_id")
        history, outcomes = await run_in_threadpool(lead_detail, log, lead_id)
        if not history and not outcomes:
            return await problem(token, 404, "unscored")
        params = request.query_params
        served = request.app.state.store.current
        shown = (await run_in_threadpool(display_of, log.engine, [lead_id])).get(lead_id, {})
        context = {
            "title": f"Lead {lead_id}",
            "lead_id": lead_id,
            "display": [(d.label, shown[d.name]) for d in spec.display if shown.get(d.name)],
            "history": [(row, reasons_in_words(row.reasons)) for row in history],
            "chart": score_chart(history, outcomes, served.model.grade_bands if served else None),
            "outcomes": outcomes,
            "choices": SALES_OUTCOMES,
            "rejection_reasons": REJECTION_REASONS,
            "message": _confirmation(
                params.get("result"), params.get("outcome"), params.get("reason")
            ),
            "csrf": sessions.csrf(token),
            "form_id": secrets.token_urlsafe(18),
            "reject_form_id": secrets.token_urlsafe(18),
            "note_max": MAX_NOTE_LENGTH,
        }
        return await page("lead.html", context)

    @api.post("/leads/{lead_id}/outcomes")
    async def record_outcome(request: Request, lead_id: str, log: Log) -> Response:
        """As ``POST /v1/outcomes`` records it: the same model, key function and store call.

        The idempotency key comes from a random id the lead page put in the form, so
        submitting the same form twice (a double click, a reload) writes one row, while
        a new outcome recorded later from a fresh page is a new event.
        """
        token = current(request)
        if token is None:
            return _redirect(f"{COOKIE_PATH}/login")
        form = await read_form(request)
        if form is None:
            return await problem(token, 415, "not_form")
        if not sessions.csrf_ok(token, form.get("csrf_token")):
            return await problem(token, 403, "csrf")
        if not valid_lead_id(lead_id):
            return await problem(token, 404, "lead_id")
        form_id = form.get("form_id", "")
        if not _FORM_ID.match(form_id) or form.get("outcome") not in SALES_OUTCOMES:
            return await problem(token, 422, "outcome")
        note = form.get("note", "").strip() or None
        reason = form.get("reason") or None
        if reason is not None and (
            reason not in REJECTION_REASONS or form["outcome"] not in REASONED_OUTCOMES
        ):
            return await problem(token, 422, "reason")
        try:
            outcome = Outcome(
                lead_id=lead_id,
                outcome=form["outcome"],
                occurred_at=datetime.now(UTC),
                note=note,
                idempotency_key=f"board:{form_id}",
                reason=reason,
            )
        except ValidationError:
            return await problem(token, 422, "note")
        row = OutcomeRow(
            lead_id=outcome.lead_id,
            outcome=outcome.outcome,
            stage=outcome.stage,
            occurred_at=outcome.occurred_at,
            note=outcome.note,
            idempotency_key=idempotency_key(outcome),
            reason=outcome.reason,
        )
        try:
            new = await run_in_threadpool(outcome_events.record, log, row)
        except OutcomeConflictError:
            new = False  # the same form sent again (another time, maybe another choice)
        shown, why = row.outcome, row.reason
        if not new:  # say what is stored, not what this (repeated) form asked for
            stored = await run_in_threadpool(outcome_events.stored_event, log, row)
            if stored is not None:
                shown, why = stored.outcome, stored.reason
        result = "recorded" if new else "duplicate"
        query = {"result": result, "outcome": shown, **({"reason": why} if why else {})}
        return _redirect(lead_url(lead_id, **query))

    return api


def _confirmation(result: str | None, outcome: str | None, reason: str | None) -> str | None:
    """The message after a redirect, built from fixed words only (never echoed input)."""
    if outcome not in SALES_OUTCOMES:
        return None
    what = outcome
    if isinstance(reason, str) and reason in REJECTION_REASONS:
        what = f"{outcome} ({reason.replace('_', ' ')})"
    if result == "recorded":
        return f"Outcome recorded: {what}."
    if result == "duplicate":
        return f"Already recorded: {what} (this form had been sent before)."
    return None
