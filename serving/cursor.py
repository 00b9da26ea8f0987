"""The paging cursor shared by the ranked-leads API and the lead board.

Keyset pagination: a cursor is the (score, lead id) of the last row of a page, encoded
so it reads as an opaque token. The next page starts strictly after it, so deep pages
stay an index walk.
"""

from __future__ import annotations

import base64
import binascii


def encode_cursor(score: int, lead_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{lead_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str] | None:
    """``(score, lead_id)``, or None for anything that is not one of our cursors."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        score, lead_id = base64.urlsafe_b64decode(padded).decode().split(":", 1)
        return int(score), lead_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
