"""Stopping a worker without failing anyone: not ready first, then drain, within bounds.

uvicorn's own SIGTERM handling stops accepting at once and closes idle keep-alive
connections; a client that sent its next request on such a connection at that moment
got a connection error (16 in the issue's test). Instead, SIGTERM here:

1. marks the worker not ready (``/readyz`` answers 503 "shutting down"), so a load
   balancer stops sending new requests;
2. keeps serving for ``shutdown_grace_s`` seconds, every response carrying
   ``Connection: close`` so keep-alive clients open their next connection elsewhere
   (see :class:`serving.app.ResponseGuard`);
3. then hands the signal to uvicorn, which stops accepting, lets requests in flight
   finish within ``timeout_graceful_shutdown`` (``shutdown_timeout_s``) and runs the
   lifespan's shutdown (the scoring log commits what it has).

So a worker is gone at most ``shutdown_grace_s + shutdown_timeout_s`` (+ the last
commit) after SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
from types import FrameType

from serving.readiness import Readiness

log = logging.getLogger(__name__)


def drain_on_sigterm(readiness: Readiness, grace_s: float) -> bool:
    """Put the drain in front of the server's SIGTERM handler; False where it cannot be.

    Must run on the event loop of the main thread, after the server installed its own
    handlers (uvicorn does before the lifespan starts). Under a test client (another
    thread) there is no signal to handle and nothing is changed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    server_handler = signal.getsignal(signal.SIGTERM)
    if not callable(server_handler):
        return False
    loop = asyncio.get_running_loop()

    def stop(sig: int, frame: FrameType | None) -> None:
        log.warning("shutting down: in-flight requests finish, then the worker exits")
        server_handler(sig, frame)

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        if readiness.draining:
            return  # the supervisor forwards the signal the group already got
        readiness.draining = True
        log.warning("SIGTERM: not ready now; still serving for %g s", grace_s)
        loop.call_soon_threadsafe(loop.call_later, grace_s, stop, sig, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    return True


def jittered(seconds: float, spread: float = 0.2) -> float:
    """``seconds`` ± ``spread`` (a fraction), so replicas do not act in lockstep."""
    return seconds * random.uniform(1 - spread, 1 + spread)
