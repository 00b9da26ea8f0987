"""The paging cursor shared by the ranked-leads API and the lead board.

Keyset pagination: a cursor is the (score, lead id) of the last row of a page, encoded
so it reads as an opaque token. The next page starts strictly after it, so deep pages
stay an index walk.

A cursor comes back from the client, so it is input like any other: only what
:func:`encode_cursor` can produce is accepted (a score of 0-100 written canonically, a
lead id the API would accept), so nothing out of the database's column ranges, and no
text it cannot store, ever reaches a query.
"""

from __future__ import annotations

import base64
import binascii
import re

from serving.schemas import LEAD_ID_PATTERN, MAX_ID_LENGTH

_SCORE = re.compile(r"^(?:100|[1-9]?[0-9])$")
_LEAD_ID = re.compile(LEAD_ID_PATTERN)
MAX_CURSOR_LENGTH = 200


def encode_cursor(score: int, lead_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{lead_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str] | None:
    """``(score, lead_id)``, or None for anything that is not one of our cursors."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (ValueError, binascii.Error, UnicodeError):
        return None
    score, _, lead_id = text.partition(":")
    if not _SCORE.match(score) or len(lead_id) > MAX_ID_LENGTH or not _LEAD_ID.match(lead_id):
        return None
    return int(score), lead_id
