"""The column readers give what the row readers give, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import Engine

from features.spec import FeatureSpec
from monitoring.collect import read_window, records_for
from scorelog.columns import count_by, score_ids
from scorelog.history import iter_scores
from scorelog.inputs import pack_input
from scorelog.rows import ScoreRow
from scorelog.store import ScoreLog
from tests.scorelog_db import db_url, engine  # noqa: F401  (fixtures)

T0 = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _row(i: int, spec: FeatureSpec) -> ScoreRow:
    record = {"lead_id": f"L{i % 4}", "seniority": "vp", "as_of": T0 + timedelta(hours=i)}
    return ScoreRow(
        request_id="r",
        lead_id=f"L{i % 4}",
        scored_at=T0 + timedelta(hours=i),
        model_name="m",
        model_version=str(1 + i // 6),
        probabilities={"mql": i / 10, "sql": i / 20} if i != 3 else {"mql": 0.3},
        score=i,
        grade="C",
        category=["nurture", "mql", "sql"][i % 3],
        reasons={},
        warnings=[],
        acquisition_source=None,
        input=pack_input(record, spec) if i % 5 else None,
    )


@pytest.fixture
def logged(engine: Engine, sample_spec: FeatureSpec) -> Engine:  # noqa: F811
    log = ScoreLog(engine)
    log.start()
    log.submit_scores([_row(i, sample_spec) for i in range(10)]).result(timeout=10)
    log.close()
    return engine


def test_columns_match_the_rows(logged: Engine) -> None:
    since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=9)
    columns = read_window(logged, ["mql", "sql"], since, until)
    rows = [s for page in iter_scores(logged, since=since, until=until) for s in page]
    assert columns.score_id.tolist() == [s.score_id for s in rows]
    assert columns.lead_id.tolist() == [s.lead_id for s in rows]
    expected_ns = [int(s.scored_at.timestamp() * 1e6) * 1000 for s in rows]
    assert columns.scored_ns.tolist() == expected_ns  # to the microsecond the log keeps
    assert columns.probabilities[:, 0].tolist() == [s.probabilities["mql"] for s in rows]
    sql = columns.probabilities[:, 1]
    assert np.isnan(sql[2]) and sql[3] == pytest.approx(0.2)  # score 3 logged no sql


def test_ids_counts_and_inputs(logged: Engine) -> None:
    until = T0 + timedelta(hours=10)
    assert score_ids(logged, T0, until) == list(range(1, 11))
    assert count_by(logged, "category", T0, until) == {"nurture": 4, "mql": 3, "sql": 3}
    assert count_by(logged, "model_version", T0 + timedelta(hours=6), None) == {"2": 4}
    found = records_for(logged, np.arange(1, 11))
    assert sorted(found) == [2, 3, 4, 5, 7, 8, 9, 10]  # every fifth score kept no input
    assert found[2]["lead_id"] == "L1" and found[2]["seniority"] == "vp"
