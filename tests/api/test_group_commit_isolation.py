"""Issue #13, case 2: one request's rows cannot fail its neighbours' commit, nor leak into logs.

Rows that reach the writer although the database refuses them (a NUL, which PostgreSQL
cannot store, or a lone surrogate, which no driver can encode) share a group commit
with valid rows: the group is retried without them, the valid rows commit, only the
bad submission fails, and nothing of any row reaches the log. On both backends.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import Future

import pytest
from sqlalchemy import Engine

from scorelog import ScoreLog, ScoreRow
from scorelog.engine import describe_error, is_unavailable
from tests.api.test_storage import count, db_url, engine, row  # noqa: F401  (fixtures)

SECRET = "lead-secret-7f3a"


@pytest.mark.parametrize("poison", ["L\x00-" + SECRET, "L\ud800-" + SECRET])
def test_a_refused_submission_does_not_fail_its_group(
    engine: Engine,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    poison: str,
) -> None:
    log = ScoreLog(engine, linger_s=0.3)  # gather every submission below into one group
    log.start()
    try:
        good = [row(f"L-{i}-{SECRET}", 50 + i) for i in range(6)]
        bad = dataclasses.replace(row("L-x", 10), lead_id=poison)
        with caplog.at_level(logging.DEBUG):
            futures: list[Future[list[int]]] = [log.submit_scores([r]) for r in good[:3]]
            poisoned = log.submit_scores([bad])
            futures += [log.submit_scores([r]) for r in good[3:]]
            ids = [future.result(timeout=30) for future in futures]
            error = poisoned.exception(timeout=30)
    finally:
        log.close()
    if engine.dialect.name == "sqlite" and "\x00" in poison:
        # SQLite stores a NUL; only PostgreSQL refuses it.
        assert error is None
        assert count(engine, "scores") == 7
        return
    assert error is not None and not is_unavailable(error)
    # each good request got the id of its own committed row
    assert all(len(one) == 1 for one in ids) and len({one[0] for one in ids}) == 6
    assert count(engine, "scores") == 6
    assert count(engine, "lead_latest") == 6
    assert SECRET not in caplog.text
    assert "L-x" not in caplog.text
    assert f"committing 1 scores of 1 requests failed: {describe_error(error)}" in caplog.text


def test_an_outage_fails_the_group_at_once_without_retrying_each(engine: Engine) -> None:  # noqa: F811
    engine.dispose()
    log = ScoreLog(engine, linger_s=0.2)
    calls: list[int] = []
    original = log._write

    def down(connection: object, rows: list[ScoreRow]) -> None:
        calls.append(len(rows))
        raise ConnectionRefusedError("the database went away")

    log._write = down  # type: ignore[method-assign]
    log.start()
    try:
        futures = [log.submit_scores([row(f"L-{i}", 50)]) for i in range(5)]
        errors = [f.exception(timeout=30) for f in futures]
    finally:
        log._write = original  # type: ignore[method-assign]
        log.close()
    assert all(isinstance(e, ConnectionRefusedError) for e in errors)
    assert sum(calls) == 5 and len(calls) <= 2  # one attempt per group, no bisection
