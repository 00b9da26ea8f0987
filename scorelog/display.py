"""Lead display fields (name, company, title): stored apart from the scoring log.

:class:`DisplayWriter` is a write listener of :class:`~scorelog.store.ScoreLog`: the
values a CRM sent with a lead are upserted into ``lead_display`` in the same transaction
as the score, so the board never shows a name without its score. Only the newest score
of a lead in a group writes, and an older one never overwrites a newer one. The values
never reach ``scores``, the stored inputs, events or logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import JSON, Connection, Engine, bindparam, select, text

from scorelog.event_tables import LeadDisplay
from scorelog.rows import ScoreRow
from scorelog.tables import UTCDateTime

_UPSERT = text(
    "INSERT INTO lead_display (lead_id, fields, updated_at) "
    "VALUES (:lead_id, :fields, :updated_at) "
    "ON CONFLICT (lead_id) DO UPDATE SET fields = excluded.fields, "
    "updated_at = excluded.updated_at WHERE excluded.updated_at >= lead_display.updated_at"
).bindparams(bindparam("fields", type_=JSON()), bindparam("updated_at", type_=UTCDateTime()))
_IN_CHUNK = 500


class DisplayWriter:
    """Keeps each lead's latest display values (a :class:`scorelog.store.WriteListener`)."""

    def before_latest(self, connection: Connection, rows: Sequence[tuple[ScoreRow, int]]) -> None:
        newest: dict[str, ScoreRow] = {}
        for row, _ in rows:
            if row.display and (
                row.lead_id not in newest or row.scored_at >= newest[row.lead_id].scored_at
            ):
                newest[row.lead_id] = row
        if newest:
            values = [
                {"lead_id": lead, "fields": dict(row.display or {}), "updated_at": row.scored_at}
                for lead, row in sorted(newest.items())
            ]
            connection.execute(_UPSERT, values)

    def committed(self) -> None:
        return None

    def rolled_back(self) -> None:
        return None


def display_of(engine: Engine, lead_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """The display values of these leads (absent: none were ever sent)."""
    wanted = list(dict.fromkeys(lead_ids))
    found: dict[str, dict[str, str]] = {}
    with engine.connect() as connection:
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            query = select(LeadDisplay.lead_id, LeadDisplay.fields).where(
                LeadDisplay.lead_id.in_(chunk)
            )
            found.update({lead: dict(fields) for lead, fields in connection.execute(query)})
    return found
