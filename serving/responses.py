"""Scoring responses encoded with orjson: the same JSON, a fraction of the encoding time.

Starlette's ``JSONResponse`` runs ``json.dumps`` in Python; a 1,000-lead batch answer
(about 1 MB) took about 10 ms of the worker's time to encode, a single score about
15 µs. orjson writes the same document (shortest round-trip floats, UTF-8, no
spaces) in C. One difference would matter and is refused instead: orjson writes
``null`` for NaN and infinity where ``json.dumps(allow_nan=False)`` raises, so a
non-finite number still fails the response (a 500 naming nothing of the lead),
exactly as before, rather than reach a client as a silent ``null`` (the document is
searched only when its text has a ``null`` at all, which scores rarely have).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.responses import JSONResponse


class FastJSONResponse(JSONResponse):
    """``JSONResponse`` rendered by orjson (scoring bodies: str keys, plain values)."""

    def render(self, content: Any) -> bytes:
        body = orjson.dumps(content)
        if b"null" in body:  # a None, or a NaN orjson wrote as null: look (rarely needed)
            _refuse_non_finite(content)
        return body


def _refuse_non_finite(value: Any) -> None:
    """Raise ValueError on NaN or infinity anywhere in the document, as json.dumps does."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("Out of range float values are not JSON compliant")
    elif isinstance(value, dict):
        for item in value.values():
            _refuse_non_finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_non_finite(item)
