"""One webhook try: a POST to a checked, pinned address with bounded timeouts.

``http.client`` rather than a client library because every part that matters here must
be explicit: the connection goes to the address :mod:`.targets` checked (the Host header
and TLS name stay the URL's host), connecting and reading have their own timeouts, a
redirect is a failed try (never followed), and at most a few kilobytes of the answer are
read. It runs on the delivery worker's threads, never on a request's path.

A socket timeout bounds one read, not a try: a receiver that drips a byte just inside it
would hold the sender (and the delivery's lease) forever. So a try also has an overall
deadline (``Timeouts.attempt_s``), and every socket operation may wait only for what is
left of it: past the deadline the try fails as "timed out", however the receiver behaves.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from serving.webhooks.targets import IPAddress, Target, TargetError, parse, resolve

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

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
    #: The whole try (connecting, sending, reading the answer); None: connect_s + read_s.
    attempt_s: float | None = None

    @property
    def deadline_s(self) -> float:
        """How long one try may take in all."""
        return self.attempt_s if self.attempt_s is not None else self.connect_s + self.read_s


class _Deadline:
    """The monotonic instant a try must end by."""

    def __init__(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds

    def left(self, cap: float) -> float:
        """What the next wait may take (at most ``cap``); TimeoutError once none is left."""
        remaining = self._at - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the try's deadline passed")
        return min(remaining, cap)


class _DeadlineSocket(socket.socket):
    """A TCP socket whose every read and write waits only for what is left of the try."""

    deadline: _Deadline
    read_s: float

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(self.deadline.left(self.read_s))
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.settimeout(self.deadline.left(self.read_s))
        return super().recv(bufsize, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self.settimeout(self.deadline.left(self.read_s))
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The same for TLS (whose reads go through the TLS object, not ``socket.recv``)."""

    deadline: _Deadline
    read_s: float

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(self.deadline.left(self.read_s))
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self.settimeout(self.deadline.left(self.read_s))
        return super().recv(buflen, flags)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        self.settimeout(self.deadline.left(self.read_s))
        return super().send(data, flags)


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to ``address`` while the request names the URL's host."""

    def __init__(
        self, target: Target, address: IPAddress, timeouts: Timeouts, deadline: _Deadline
    ) -> None:
        super().__init__(target.host, target.port, timeout=timeouts.connect_s)
        self._address = address
        self._timeouts = timeouts
        self._deadline = deadline

    def connect(self) -> None:
        plain = socket.create_connection(
            (str(self._address), self.port),
            timeout=self._deadline.left(self._timeouts.connect_s),
        )
        sock = _DeadlineSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.deadline, sock.read_s = self._deadline, self._timeouts.read_s
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock


class _PinnedHTTPS(_PinnedHTTP):
    def __init__(
        self, target: Target, address: IPAddress, timeouts: Timeouts, deadline: _Deadline
    ) -> None:
        super().__init__(target, address, timeouts, deadline)
        self._context = ssl.create_default_context()
        self._context.sslsocket_class = _DeadlineSSLSocket

    def connect(self) -> None:
        super().connect()
        # The handshake runs inside wrap_socket, bounded by the socket's timeout as a whole.
        self.sock.settimeout(self._deadline.left(self._timeouts.read_s))
        # The context makes its sockets of sslsocket_class, set above.
        sock = cast(
            _DeadlineSSLSocket, self._context.wrap_socket(self.sock, server_hostname=self.host)
        )
        sock.deadline, sock.read_s = self._deadline, self._timeouts.read_s
        self.sock = sock


def post(
    url: str, body: bytes, headers: dict[str, str], *, timeouts: Timeouts, allow_internal: bool
) -> Attempt:
    """POST ``body``; ok only for a 2xx answer within the timeouts and the try's deadline."""
    deadline = _Deadline(timeouts.deadline_s)
    try:
        target = parse(url)
        addresses = resolve(target, allow_internal=allow_internal)
    except TargetError as exc:
        return Attempt(False, None, f"target refused: {exc}")
    last = Attempt(False, None, "no address to connect to")
    for address in addresses:
        last = _post_to(target, address, body, headers, timeouts, deadline)
        if last.status is not None or last.error != "connection refused":
            return last  # an answer, or a failure that another address would not fix
    return last


def _post_to(
    target: Target,
    address: IPAddress,
    body: bytes,
    headers: dict[str, str],
    timeouts: Timeouts,
    deadline: _Deadline,
) -> Attempt:
    kind = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    connection = kind(target, address, timeouts, deadline)
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
    except (OSError, http.client.HTTPException, UnicodeError) as exc:
        return Attempt(False, None, f"connection failed ({type(exc).__name__})")
    finally:
        connection.close()
    if 200 <= status < 300:
        return Attempt(True, status, None)
    if 300 <= status < 400:
        return Attempt(False, status, "redirect not followed")
    return Attempt(False, status, f"answered {status}")
