"""What was scored is kept: packed inputs, score ids, and the log's read side.

The packing tests score generated leads (the synthetic CRM through the real loaders) with
a trained model before and after a round trip through the bytes; the store and history
tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from alembic import command
from sqlalchemy import Engine, event, text

from features.batch import frames_to_records
from features.spec import FeatureSpec, load_spec
from models.readiness import ReadinessModel, policy_version
from scorelog import OutcomeRow, ScoreLog, ScoreRow, make_engine, migrate
from scorelog.engine import alembic_config
from scorelog.history import (
    LoggedOutcome,
    LoggedScore,
    get_score,
    get_score_detail,
    iter_outcomes,
    iter_scores,
)
from scorelog.inputs import InputFormatError, pack_input, spec_version_of, unpack_input
from tests.scorelog_db import db_url, engine

__all__ = ["db_url", "engine"]  # fixtures used by the tests below

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def records(
    sample_tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], sample_spec: FeatureSpec
) -> list[dict[str, Any]]:
    """400 generated leads as API dicts, each scored 3-40 days after it was created."""
    leads, actions, _ = sample_tables
    leads = leads.head(400)
    rng = random.Random(5)
    as_of = pd.to_datetime(leads["created_at"], utc=True) + pd.to_timedelta(
        [rng.uniform(3, 40) for _ in range(len(leads))], unit="D"
    )
    return frames_to_records(sample_spec, leads, actions, as_of=as_of)


@pytest.fixture(scope="module")
def model(trained_model_dir: Path) -> ReadinessModel:
    return ReadinessModel.load(trained_model_dir)


# --- packing --------------------------------------------------------------------------


def test_unpacked_inputs_score_identically(
    records: list[dict[str, Any]], model: ReadinessModel, sample_spec: FeatureSpec
) -> None:
    unpacked = [unpack_input(pack_input(r, sample_spec)) for r in records]
    before = [s.to_dict() for s in model.score_many(records, threads=1)]
    after = [s.to_dict() for s in model.score_many(unpacked, threads=1)]
    assert after == before
    assert sum(len(r["actions"]) for r in unpacked) > 1000  # the leads did act
    # and packing what was unpacked changes nothing: the format is a fixed point
    assert [pack_input(u, sample_spec) for u in unpacked] == [
        pack_input(r, sample_spec) for r in records
    ]


def test_only_the_model_input_is_kept(sample_spec: FeatureSpec) -> None:
    as_of = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    record: dict[str, Any] = {
        "lead_id": "L-9",
        "first_name": "Zebedee",
        "email": "zebedee@example.org",
        "owner_notes": "will buy",
        "seniority": "vp",
        "company_size": 250,
        "annual_revenue": 1.5e6,
        "business_email": None,
        "created_at": as_of - timedelta(days=400),
        "as_of": as_of,
        "actions": [
            {"type": "Pricing Page", "at": as_of - timedelta(days=200)},  # past the windows
            {"type": "teleport", "at": as_of - timedelta(days=1)},  # not tracked
            {"type": "demo_request", "at": as_of + timedelta(seconds=1)},  # after the cut-off
            {"type": "email_open", "at": "2026-02-28T10:00:00.5+01:00"},
        ],
    }
    blob = pack_input(record, sample_spec)
    for secret in (b"Zebedee", b"example.org", b"will buy", b"teleport"):
        assert secret not in blob
    assert unpack_input(blob) == {
        "lead_id": "L-9",
        "seniority": "vp",
        "company_size": 250,
        "annual_revenue": 1.5e6,
        "business_email": None,
        "created_at": as_of - timedelta(days=400),
        "as_of": as_of,
        "actions": [
            {"type": "pricing_page", "at": as_of - timedelta(days=200)},
            {"type": "email_open", "at": datetime(2026, 2, 28, 9, 0, 0, 500000, tzinfo=UTC)},
        ],
    }
    assert type(unpack_input(blob)["company_size"]) is int


def test_a_spec_without_actions_or_creation_time_round_trips() -> None:
    """X Education: a spaced id column, no actions, no created_at; values keep their types."""
    spec = load_spec("x_education")
    record: dict[str, Any] = {"lead_id": "p-1", spec.id_column: "p-1"}
    for i, f in enumerate(spec.feature_fields):
        record[f.name] = [None, "Some Value", 3, 2.5, True][i % 5]
    assert unpack_input(pack_input(record, spec)) == record


def test_a_spec_with_hundreds_of_action_types_round_trips(sample_spec: FeatureSpec) -> None:
    doc = sample_spec.model_dump(mode="json")
    doc["actions"]["types"] = [{"name": f"t{i}", "phrase": f"t{i} actions"} for i in range(300)]
    spec = FeatureSpec.model_validate(doc)
    as_of = datetime(2026, 3, 1, tzinfo=UTC)
    actions = [{"type": f"t{i}", "at": as_of - timedelta(hours=i)} for i in (299, 0, 257, 3)]
    record = {"lead_id": "L-1", "as_of": as_of, "actions": actions}
    assert unpack_input(pack_input(record, spec)) == record


def test_damaged_bytes_are_refused_by_one_error(
    records: list[dict[str, Any]], sample_spec: FeatureSpec
) -> None:
    rng = random.Random(3)
    blobs = [pack_input(r, sample_spec) for r in records[:40]]
    for blob in blobs:
        cut = blob[: rng.randrange(len(blob))]
        with pytest.raises(InputFormatError):
            unpack_input(cut)
        flipped = bytearray(blob)
        flipped[rng.randrange(1, len(blob))] ^= 1 << rng.randrange(8)
        with contextlib.suppress(InputFormatError):  # a flipped bit may decode: no crash
            unpack_input(bytes(flipped))
    with pytest.raises(InputFormatError, match="format 9"):
        unpack_input(b"\x09" + blobs[0][1:])


def test_policy_version_is_a_stable_hash_of_thresholds_and_bands(model: ReadinessModel) -> None:
    assert model.policy_version == policy_version(model.thresholds, model.grade_bands)
    assert len(model.policy_version) == 12
    assert policy_version({"mql": 0.5, "sql": 0.3}, {"A": 70.0, "B": 50.0, "C": 30.0}) == (
        policy_version({"sql": 0.3, "mql": 0.5}, {"C": 30, "B": 50, "A": 70})
    )
    assert policy_version({"mql": 0.5}, {"A": 70.0}) != policy_version({"mql": 0.51}, {"A": 70.0})


# --- the store and the read side ------------------------------------------------------


@pytest.fixture
def log(engine: Engine) -> Iterator[ScoreLog]:
    scorelog = ScoreLog(engine)
    scorelog.start()
    yield scorelog
    scorelog.close()


def logged_row(
    lead_id: str, at: datetime, *, record: dict[str, Any] | None, spec: FeatureSpec
) -> ScoreRow:
    return ScoreRow(
        request_id=uuid.uuid4().hex,
        lead_id=lead_id,
        scored_at=at,
        model_name="lead-readiness",
        model_version="3",
        probabilities={"mql": 0.6, "sql": 0.25},
        score=43,
        grade="B",
        category="mql",
        reasons={"positive": [], "negative": []},
        warnings=[],
        acquisition_source="web",
        spec_version=spec_version_of(spec),
        policy_version="0123456789ab",
        input=None if record is None else pack_input(record, spec),
    )


def test_the_writer_returns_ids_and_keeps_inputs(
    engine: Engine, log: ScoreLog, records: list[dict[str, Any]], sample_spec: FeatureSpec
) -> None:
    first = [logged_row(f"L{i}", T0, record=records[i], spec=sample_spec) for i in range(3)]
    futures = [log.submit_scores(first), log.submit_scores([])]
    futures += [log.submit_scores([logged_row("L9", T0, record=None, spec=sample_spec)])]
    assert [f.result(timeout=10) for f in futures] == [[1, 2, 3], [], [4]]
    assert asyncio.run(log.record_scores(first[:1])) == [5]

    stored = get_score(engine, 2)
    assert stored == LoggedScore(
        score_id=2,
        lead_id="L1",
        scored_at=T0,
        model_name="lead-readiness",
        model_version="3",
        spec_version="sample_crm:1",
        policy_version="0123456789ab",
        probabilities={"mql": 0.6, "sql": 0.25},
        score=43,
        grade="B",
        category="mql",
        record=unpack_input(pack_input(records[1], sample_spec)),
    )
    without = get_score_detail(engine, 4)
    assert without is not None and without.score.record is None
    assert without.input_state == "not_stored"
    assert get_score(engine, 99) is None


def test_iter_scores_pages_in_time_order_within_the_window(
    engine: Engine, log: ScoreLog, records: list[dict[str, Any]], sample_spec: FeatureSpec
) -> None:
    # Submitted out of time order: the log is read back in scored_at order, ties by id.
    times = [T0 + timedelta(minutes=(7 * i) % 23) for i in range(23)]
    rows = [
        logged_row(f"L{i}", t, record=records[i], spec=sample_spec) for i, t in enumerate(times)
    ]
    asyncio.run(log.record_scores(rows))
    pages = list(iter_scores(engine, batch_size=5))
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    flat = [s for page in pages for s in page]
    assert [(s.scored_at, s.score_id) for s in flat] == sorted(
        (t, i + 1) for i, t in enumerate(times)
    )
    assert all(s.record == unpack_input(rows[s.score_id - 1].input or b"") for s in flat)

    window = [
        s
        for page in iter_scores(
            engine,
            since=T0 + timedelta(minutes=5),
            until=T0 + timedelta(minutes=10),
            with_inputs=False,
            batch_size=2,
        )
        for s in page
    ]
    assert [s.scored_at for s in window] == [T0 + timedelta(minutes=m) for m in range(5, 10)]
    assert all(s.record is None for s in window)


def test_scores_logged_before_0002_survive_the_upgrade_without_inputs(db_url: str) -> None:
    """An existing log at revision 0001 upgrades in place; its scores read as not stored."""
    engine = make_engine(db_url)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.execute(
                text(
                    "INSERT INTO scores (id, request_id, lead_id, scored_at, model_name, "
                    "model_version, probabilities, score, grade, category, reasons, warnings) "
                    "VALUES (1, 'r', 'L-old', :at, 'm', '2', :p, 40, 'C', 'mql', '{}', '[]')"
                ),
                {"at": T0.replace(tzinfo=None), "p": '{"mql": 0.5, "sql": 0.3}'},
            )
        migrate(engine)
        detail = get_score_detail(engine, 1)
        assert detail is not None
        assert (detail.input_state, detail.score.record) == ("not_stored", None)
        assert (detail.score.spec_version, detail.score.policy_version) == (None, None)
        assert detail.score.probabilities == {"mql": 0.5, "sql": 0.3}
        assert [len(page) for page in iter_scores(engine)] == [1]
    finally:
        engine.dispose()


def test_iter_outcomes_reads_labels_in_the_order_they_happened(
    engine: Engine, log: ScoreLog
) -> None:
    for i, minutes in enumerate([30, 10, 20]):
        log.record_outcome(
            OutcomeRow(
                lead_id=f"L{i}",
                outcome="disqualified",
                stage=None,
                occurred_at=T0 + timedelta(minutes=minutes),
                note=None,
                idempotency_key=f"k{i}",
                reason="bad_timing" if i == 1 else None,
            )
        )
    outcomes = list(iter_outcomes(engine, since=T0 + timedelta(minutes=15), batch_size=1))
    assert [(o.lead_id, o.occurred_at, o.reason) for o in outcomes] == [
        ("L2", T0 + timedelta(minutes=20), None),
        ("L0", T0 + timedelta(minutes=30), None),
    ]
    every = list(iter_outcomes(engine))
    assert every[0] == LoggedOutcome(
        lead_id="L1",
        outcome="disqualified",
        stage=None,
        reason="bad_timing",
        occurred_at=T0 + timedelta(minutes=10),
        recorded_at=every[0].recorded_at,
    )
    assert every[0].recorded_at.tzinfo is UTC


def test_iter_scores_streams_in_bounded_memory(
    engine: Engine, log: ScoreLog, records: list[dict[str, Any]], sample_spec: FeatureSpec
) -> None:
    """Each page is one LIMITed query; holding one page costs a page, not the log."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the paging is the same SQL on both backends; measured once")
    n = 1200
    rows = [
        logged_row(f"L{i}", T0 + timedelta(seconds=i), record=records[i % 400], spec=sample_spec)
        for i in range(n)
    ]
    asyncio.run(log.record_scores(rows))
    statements: list[str] = []

    def capture(conn: object, cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    try:
        peak_paged, seen = _peak(lambda: _consume(iter_scores(engine, batch_size=60)))
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    peak_all, _ = _peak(lambda: len([s for p in iter_scores(engine, batch_size=n) for s in p]))
    assert seen == n
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == n // 60 + 1 and all("LIMIT" in s.upper() for s in selects)
    assert peak_paged < peak_all / 5


def _consume(pages: Iterator[list[LoggedScore]]) -> int:
    return sum(len(page) for page in pages)


def _peak(work: Any) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        result = work()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()
