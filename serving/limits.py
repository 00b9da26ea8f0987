"""Limits at the door: JSON only, never more bytes than a request may need, and never
more requests in progress than a worker can answer in good time.

A pure ASGI middleware (not ``BaseHTTPMiddleware``): it looks at the headers, wraps
``receive`` with a byte counter and otherwise passes messages through, so the scoring
hot path pays two comparisons and no buffering, no extra task, no copy.

* **415** when a POST/PUT/PATCH under the API prefixes does not declare
  ``application/json``. Refusing early means no other parser (form, multipart) ever
  sees our bodies, and a client sending the wrong thing learns it by name.
* **413** when ``Content-Length`` is above the limit, before the app runs; and when a
  body without one (chunked) grows past it: reading stops at the first chunk over the
  limit and whatever the app was about to answer is replaced by the 413.

* **503 + Retry-After** (:class:`ConcurrencyLimit`) when a worker already works on
  ``max_queue`` API requests: answered at once, before the body is read, so a burst
  beyond capacity costs the worker almost nothing and the requests it did accept keep
  a bounded latency (about ``max_queue`` times the time one request takes) instead of
  all of them queueing without end. Health probes are never shed.

The answers are problem documents written here, with the request id when an outer
middleware has put one in the scope's state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import metrics
from serving.problems import PROBLEM_JSON, RETRY_AFTER_S

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_UTF8 = frozenset({"utf-8", "utf8"})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the streamed body passes the limit.

    An HTTPException so that any code path reading the body answers 413 even if it
    renders the error itself; :class:`BodyLimits` replaces that answer with its own.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"The request body exceeds {limit} bytes.")


class BodyLimits:
    """Refuse non-JSON bodies (415) and bodies over ``max_body_bytes`` (413).

    The media type is checked for POST/PUT/PATCH under ``json_paths_prefix`` only (a
    health probe or docs page owes us nothing); the size limit holds for every HTTP
    request, since no endpoint of the service needs a bigger body.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        json_paths_prefix: tuple[str, ...] = ("/v1", "/admin"),
    ) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must not be negative")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.prefixes = tuple(p.rstrip("/") for p in json_paths_prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope["headers"])
        length = _content_length(headers.get("content-length"))
        if self._json_only(scope) and not _is_json(headers, length):
            await _send_problem(send, scope, 415, "Unsupported Media Type", _JSON_DETAIL)
            return
        if length is not None and length > self.max_body_bytes:
            await _send_problem(send, scope, 413, "Content Too Large", self._too_large())
            return
        await _Counted(self, scope, receive, send).run()

    def _json_only(self, scope: Scope) -> bool:
        if scope.get("method") not in _BODY_METHODS:
            return False
        path: str = scope.get("path", "")
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    def _too_large(self) -> str:
        return f"The request body exceeds {self.max_body_bytes} bytes."


_JSON_DETAIL = "The request body must be JSON, sent with Content-Type: application/json."
_OVERLOADED = "The service is at capacity; nothing was done. Retry after the given delay."


class ConcurrencyLimit:
    """At most ``limit`` requests under ``prefixes`` in progress in this worker.

    The count is of requests the app is working on (validating, waiting for the
    scoring thread or the commit), i.e. this worker's queue. One event loop per worker,
    so a plain counter is exact.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        prefixes: tuple[str, ...] = ("/v1", "/admin", "/board"),
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.app = app
        self.limit = limit
        self.prefixes = tuple(p.rstrip("/") for p in prefixes)
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._counted(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            metrics.SHED.inc()
            headers = [(b"retry-after", str(RETRY_AFTER_S).encode("ascii"))]
            await _send_problem(
                send, scope, 503, "Overloaded", _OVERLOADED, close=False, extra=headers
            )
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1

    def _counted(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)


class _Counted:
    """One request: count body bytes as the app reads them; on overflow, answer 413."""

    def __init__(self, limits: BodyLimits, scope: Scope, receive: Receive, send: Send) -> None:
        self.limits = limits
        self.scope = scope
        self.inner_receive = receive
        self.inner_send = send
        self.received = 0
        self.exceeded = False
        self.started = False

    async def run(self) -> None:
        try:
            await self.limits.app(self.scope, self.receive, self.send)
        except Exception:
            # The app failed because its body was cut off: that is the 413. Any other
            # failure, or one after the response began, is not ours to hide.
            if not self.exceeded or self.started:
                raise
        if self.exceeded and not self.started:
            detail = self.limits._too_large()
            await _send_problem(self.inner_send, self.scope, 413, "Content Too Large", detail)

    async def receive(self) -> Message:
        if self.exceeded:
            raise BodyTooLarge(self.limits.max_body_bytes)
        message = await self.inner_receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limits.max_body_bytes:
                self.exceeded = True
                raise BodyTooLarge(self.limits.max_body_bytes)
        return message

    async def send(self, message: Message) -> None:
        # After an overflow the app's own answer (a 400 or 413 from whichever handler
        # saw the exception) is dropped: the middleware sends the one 413.
        if self.exceeded and not self.started:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self.inner_send(message)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The few headers we read, lower-cased names; latin-1 as HTTP/1.1 defines."""
    wanted = {b"content-type", b"content-length", b"transfer-encoding"}
    out: dict[str, str] = {}
    for name, value in raw:
        lower = name.lower()
        if lower in wanted:
            out[lower.decode("latin-1")] = value.decode("latin-1")
    return out


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _is_json(headers: dict[str, str], length: int | None) -> bool:
    """``application/json``, with parameters, but only a UTF-8 charset.

    JSON is UTF-8 (RFC 8259) and the parser behind us decodes UTF-8 whatever the header
    says, so a declared ``charset=latin-1`` would be silently misread: refused instead.
    A request without any body (no length, or 0, and not chunked) needs no type.
    """
    raw = headers.get("content-type")
    if raw is None:
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        return not chunked and (length is None or length == 0)
    media, *params = (part.strip() for part in raw.split(";"))
    if media.lower() != "application/json":
        return False
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in _UTF8:
            return False
    return True


async def _send_problem(
    send: Send,
    scope: Scope,
    status: int,
    title: str,
    detail: str,
    *,
    close: bool = True,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Write a problem document straight to the client (no app, no handler involved).

    ``close`` (for 413/415, whose body may still be arriving) ends the connection after
    the answer; a shed request's connection stays open for the client's next one.
    """
    problem: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    problem["detail"] = detail
    request_id = _request_id(scope)
    if request_id is not None:
        problem["request_id"] = request_id
    body = json.dumps(problem, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode("ascii")),
                (b"content-length", str(len(body)).encode("ascii")),
                *([(b"connection", b"close")] if close else []),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _request_id(scope: Scope) -> str | None:
    state = scope.get("state")
    value = state.get("request_id") if isinstance(state, dict) else None
    return None if value is None else str(value)
