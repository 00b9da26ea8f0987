"""A real webhook receiver on loopback, in a thread: records what it got, answers as told.

``mode`` decides the answer to the next requests: ``ok`` (204), ``fail`` (500), ``slow``
(sleeps ``slow_s`` first, then 204), ``redirect`` (302 to another host), ``drip`` (starts
a 200 answer, then sends one byte of a header every ``drip_s``, never finishing). A receiver that
is "down" is simply a port nobody listens on (:func:`closed_port`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.servers import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    url: str
    mode: str = "ok"
    slow_s: float = 1.0
    drip_s: float = 0.3
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise AssertionError(f"{len(self.received())} requests received, {count} expected")


def closed_port() -> int:
    """A loopback port nobody listens on: connections are refused at once."""
    return free_port()


@contextmanager
def receiver(port: int = 0) -> Iterator[Receiver]:
    """Listening on ``port`` (0: any free one) until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    state = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    server.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        state: Receiver = self.server.state  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with state.lock:
            state.requests.append(
                Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                         time.monotonic())
            )  # fmt: skip
            mode = state.mode
        if mode == "slow":
            time.sleep(state.slow_s)
        if mode == "drip":
            self._drip(state.drip_s)
            return
        if mode == "fail":
            self.send_response(500)
        elif mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://203.0.113.7/elsewhere")
        else:
            self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _drip(self, every_s: float, most: int = 200) -> None:
        """Each byte arrives well within a read timeout; the answer never ends."""
        self.close_connection = True
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            for _ in range(most):
                self.wfile.write(b"a")
                self.wfile.flush()
                time.sleep(every_s)
        except OSError:  # the sender gave up and closed the connection
            return

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return
