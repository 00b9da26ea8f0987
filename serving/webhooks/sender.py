"""One webhook try: a POST to a checked, pinned address with bounded timeouts.

``http.client`` rather than a client library because every part that matters here must
be explicit: the connection goes to the address :mod:`.targets` checked (the Host header
and TLS name stay the URL's host), connecting and reading have their own timeouts, a
redirect is a failed try (never followed), and at most a few kilobytes of the answer are
read. It runs on the delivery worker's threads, never on a request's path.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass

from serving.webhooks.targets import IPAddress, Target, TargetError, parse, resolve

#: Bytes of a receiver's answer read before the connection is closed (it is not used).
MAX_ANSWER_BYTES = 4096
USER_AGENT = "leadscore-webhooks/1"


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status: int | None  # the receiver's HTTP status; None when there was no answer
    error: str | None  # why it failed, in words that never quote the answer


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    read_s: float


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to ``address`` while the request names the URL's host."""

    def __init__(self, target: Target, address: IPAddress, timeouts: Timeouts) -> None:
        super().__init__(target.host, target.port, timeout=timeouts.connect_s)
        self._address = address
        self._timeouts = timeouts

    def connect(self) -> None:
        self.sock = socket.create_connection(
            (str(self._address), self.port), timeout=self._timeouts.connect_s
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self._timeouts.read_s)


class _PinnedHTTPS(_PinnedHTTP):
    def __init__(self, target: Target, address: IPAddress, timeouts: Timeouts) -> None:
        super().__init__(target, address, timeouts)
        self._context = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def post(
    url: str, body: bytes, headers: dict[str, str], *, timeouts: Timeouts, allow_internal: bool
) -> Attempt:
    """POST ``body``; ok only for a 2xx answer within the timeouts."""
    try:
        target = parse(url)
        addresses = resolve(target, allow_internal=allow_internal)
    except TargetError as exc:
        return Attempt(False, None, f"target refused: {exc}")
    last = Attempt(False, None, "no address to connect to")
    for address in addresses:
        last = _post_to(target, address, body, headers, timeouts)
        if last.status is not None or last.error != "connection refused":
            return last  # an answer, or a failure that another address would not fix
    return last


def _post_to(
    target: Target, address: IPAddress, body: bytes, headers: dict[str, str], timeouts: Timeouts
) -> Attempt:
    kind = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    connection = kind(target, address, timeouts)
    try:
        connection.request(
            "POST",
            target.path,
            body=body,
            headers={
                **headers,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Connection": "close",
            },
        )
        response = connection.getresponse()
        response.read(MAX_ANSWER_BYTES)
        status = response.status
    except ConnectionRefusedError:
        return Attempt(False, None, "connection refused")
    except TimeoutError:
        return Attempt(False, None, "timed out")
    except ssl.SSLError as exc:
        return Attempt(False, None, f"TLS failed ({type(exc).__name__})")
    except (OSError, http.client.HTTPException) as exc:
        return Attempt(False, None, f"connection failed ({type(exc).__name__})")
    finally:
        connection.close()
    if 200 <= status < 300:
        return Attempt(True, status, None)
    if 300 <= status < 400:
        return Attempt(False, status, "redirect not followed")
    return Attempt(False, status, f"answered {status}")
