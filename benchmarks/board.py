"""The sales board's render time with many scored leads: what one page of HTML costs.

    python -m benchmarks.board [--leads 100000] [--repeat 30]

Loads ``--leads`` synthetic scores (one per lead, with reasons) into a fresh SQLite
scoring log through ``ScoreLog.record_scores``, as the API writes them, then signs in to
the board and times whole ``GET`` requests through Starlette's TestClient (routing,
session check, queries, Jinja2 rendering; no network): the first page cold and warm,
a filtered page, a page from the middle by keyset cursor and one lead's page. For
comparison it also times the queries alone and the ``count_ranked`` the board skips.
No model is needed: the board only reads the log, so the service starts without one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import median_seconds

SALES_KEY = "bench-sales-key-0123456789abcdef"
SOURCES = ("organic_search", "paid_search", "social", "referral", "partner", "event")
CATEGORIES = ("sql", "mql", "nurture")
REASONS = {
    "positive": [
        {"field": "pricing_page_7d", "effect": 0.41, "text": "3 pricing page visits in 7 days"},
        {"field": "demo_request_30d", "effect": 0.33, "text": "requested a demo"},
    ],
    "negative": [{"field": "business_email", "effect": -0.12, "text": "uses a free address"}],
}


def _row(i: int, start: datetime) -> Any:
    from scorelog import ScoreRow

    score = (i * 7919) % 101
    return ScoreRow(
        request_id=f"req-{i}",
        lead_id=f"L{i:07d}",
        scored_at=start + timedelta(seconds=i),
        model_name="lead-readiness",
        model_version="3",
        probabilities={"mql": score / 100, "sql": score / 200},
        score=score,
        grade="ABCD"[min(3, (100 - score) // 25)],
        category=CATEGORIES[0 if score >= 70 else 1 if score >= 40 else 2],
        reasons=REASONS,
        warnings=[],
        acquisition_source=SOURCES[i % len(SOURCES)],
    )


def load(url: str, leads: int) -> float:
    """Write ``leads`` scores in commits of 2,000 rows; returns the seconds it took."""
    from scorelog import ScoreLog, make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    log = ScoreLog(engine)
    log.start()
    start = datetime.now(UTC) - timedelta(seconds=leads)
    began = time.perf_counter()

    async def write() -> None:
        for lo in range(0, leads, 2000):
            await log.record_scores([_row(i, start) for i in range(lo, min(lo + 2000, leads))])

    asyncio.run(write())
    elapsed = time.perf_counter() - began
    log.close()
    engine.dispose()
    return elapsed


def _timed_get(client: Any, url: str) -> Callable[[], None]:
    def get() -> None:
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code}")

    return get


def measure(folder: Path, leads: int, repeat: int) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import ServingSettings

    settings = ServingSettings(
        _env_file=None,
        model_uri=str(folder / "no-model"),
        database_url=f"sqlite:///{folder / 'scores.db'}",
        home=folder,
        model_cache_dir=folder / "cache",
        api_keys_sales=[SALES_KEY],
    )
    results: dict[str, float] = {"load_s": round(load(settings.database_url_resolved(), leads), 1)}
    with TestClient(create_app(settings)) as client:
        client.post("/board/login", data={"api_key": SALES_KEY})
        began = time.perf_counter()
        first = client.get("/board")
        results["first_page_cold_ms"] = (time.perf_counter() - began) * 1000
        cursor = _middle_cursor(client, leads)
        log = client.app.state.scorelog  # type: ignore[attr-defined]
        cases = {
            "first_page_ms": _timed_get(client, "/board"),
            "filtered_page_ms": _timed_get(client, "/board?category=mql&source=referral"),
            "middle_page_ms": _timed_get(client, f"/board?cursor={cursor}"),
            "lead_page_ms": _timed_get(client, "/board/leads/L0000042"),
            "ranked_query_ms": lambda: log.ranked(limit=50),
            "count_all_ms": lambda: log.count_ranked(),
        }
        for name, fn in cases.items():
            results[name] = median_seconds(fn, repeat=repeat, warmup=3) * 1000
        results["first_page_rows"] = first.text.count("data-lead-id=")
        results["first_page_kib"] = len(first.content) / 1024
    return {k: round(v, 2) for k, v in results.items()}


def _middle_cursor(client: Any, leads: int) -> str:
    """The keyset cursor of the row halfway down, as a "next" link would carry it."""
    from serving.board import encode_cursor

    log = client.app.state.scorelog
    middle = log.ranked(limit=1, offset=leads // 2)[0]
    return encode_cursor(middle.score, middle.lead_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    logging.getLogger("serving.model_store").setLevel(logging.ERROR)  # no model, on purpose
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(Path(tmp), args.leads, args.repeat)
    print(f"sales board, SQLite, {args.leads:,} scored leads (median of {args.repeat}):")
    for name, value in results.items():
        label = re.sub(r"_(ms|s|kib)$", r" (\1)", name).replace("_", " ")
        print(f"  {label:<28} {value:>10}")


if __name__ == "__main__":
    main()
