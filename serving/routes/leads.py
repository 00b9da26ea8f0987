"""GET /v1/leads/ranked: each lead's latest score, highest first: what sales work from.

Paged with an opaque cursor (keyset pagination on score and lead id), so page 500 is as
fast as page 1 and a lead scored between two page loads is neither skipped nor repeated
by an offset shift. A database that cannot be read answers 503 + Retry-After (the
app's handler for database errors), never 500.
"""

# No `from __future__ import annotations`: the page size limit comes from settings at run
# time, and FastAPI must see the evaluated annotation.
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from scorelog.store import ScoreLog
from serving.cursor import MAX_CURSOR_LENGTH, decode_cursor, encode_cursor
from serving.deps import scorelog
from serving.json_body import api_router
from serving.openapi import problems
from serving.problems import FieldError, ProblemError
from serving.response_models import RankedPage
from serving.security import require
from serving.settings import ServingSettings

Category = Literal["sql", "mql", "nurture", "customer"]
Grade = Literal["A", "B", "C", "D"]


def router(settings: ServingSettings) -> APIRouter:
    api = api_router(prefix="/v1", tags=["sales"])

    @api.get(
        "/leads/ranked",
        response_model=RankedPage,
        dependencies=[Depends(require("sales"))],
        summary="Latest score of every lead, highest first",
        responses=problems(422),
    )
    async def ranked(
        log: Annotated[ScoreLog, Depends(scorelog)],
        category: Category | None = None,
        grade: Grade | None = None,
        source: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9_]+$")] = None,
        limit: Annotated[int, Query(ge=1, le=settings.page_size_max)] = 50,
        cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
    ) -> JSONResponse:
        after = _after(cursor) if cursor else None
        items = await run_in_threadpool(
            log.ranked, category=category, grade=grade, source=source, limit=limit, after=after
        )
        total = await run_in_threadpool(
            log.count_ranked, category=category, grade=grade, source=source
        )
        next_cursor = (
            encode_cursor(items[-1].score, items[-1].lead_id) if len(items) == limit else None
        )
        return JSONResponse(
            {
                "items": [
                    {
                        "lead_id": i.lead_id,
                        "score": i.score,
                        "grade": i.grade,
                        "category": i.category,
                        "acquisition_source": i.acquisition_source,
                        "scored_at": i.scored_at.isoformat(),
                        "model_version": i.model_version,
                    }
                    for i in items
                ],
                "next_cursor": next_cursor,
                "total": total,
            }
        )

    return api


def _after(cursor: str) -> tuple[int, str]:
    after = decode_cursor(cursor)
    if after is None:
        raise ProblemError(
            422,
            "Invalid cursor",
            "Use the next_cursor value from the previous page as it is.",
            errors=[FieldError(field="cursor", problem="not a cursor from this API")],
        )
    return after
