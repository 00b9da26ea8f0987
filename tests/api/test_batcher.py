"""The scoring thread: batches waiting requests, isolates bad leads, survives cancellations."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from features.batch import FeatureError
from models.readiness import ReadinessModel
from serving.batcher import ScoringBatcher, _Job
from tests.api.test_api import lead


@pytest.fixture(scope="module")
def model(trained_model_dir: Path) -> ReadinessModel:
    return ReadinessModel.load(trained_model_dir)


def _record(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in lead(**fields).items()}


def test_waiting_requests_share_one_model_call_and_match_single_scoring(
    model: ReadinessModel,
) -> None:
    batcher = ScoringBatcher(reasons=3)
    records = [_record(lead_id=f"L{i}", company_size=10 * (i + 1)) for i in range(12)]
    jobs = [_Job(model, r, Future(), 3) for r in records]
    for job in jobs[1:]:
        batcher._queue.put(job)
    batcher._next_batch(jobs[0])
    assert batcher.calls == 1
    for job, record in zip(jobs, records, strict=True):
        assert job.future.result().to_dict() == model.score_one(record).to_dict()


def test_requests_asking_different_reasons_share_one_call(model: ReadinessModel) -> None:
    batcher = ScoringBatcher(reasons=3)
    records = [_record(lead_id=f"L{i}", company_size=20 * (i + 1)) for i in range(8)]
    jobs = [_Job(model, r, Future(), i % 4) for i, r in enumerate(records)]
    for job in jobs[1:]:
        batcher._queue.put(job)
    batcher._next_batch(jobs[0])
    assert batcher.calls == 1
    for i, (job, record) in enumerate(zip(jobs, records, strict=True)):
        expected = model.score_one(record, reasons=i % 4).to_dict()
        assert job.future.result().to_dict() == expected
        assert all(len(v) <= i % 4 for v in expected["reasons"].values())


def test_a_bad_lead_fails_alone_and_its_neighbours_are_scored(model: ReadinessModel) -> None:
    batcher = ScoringBatcher(reasons=0)
    good = _Job(model, _record(), Future(), 0)
    bad = _Job(model, _record(seniority=["vp"]), Future(), 0)
    batcher._queue.put(bad)
    batcher._next_batch(good)
    assert good.future.result().lead_id == "L-1"
    with pytest.raises(FeatureError) as err:
        bad.future.result()
    assert err.value.field == "seniority" and err.value.rows == [0]


def test_a_cancelled_request_is_skipped_and_the_thread_keeps_serving(
    model: ReadinessModel,
) -> None:
    batcher = ScoringBatcher(reasons=0)

    async def scenario() -> Any:
        batcher.start()
        waiting = asyncio.ensure_future(batcher.score(model, _record()))
        waiting.cancel()  # the client went away before its turn
        await asyncio.sleep(0.05)
        return await asyncio.wait_for(batcher.score(model, _record(lead_id="L-2")), 10)

    try:
        result = asyncio.run(scenario())
    finally:
        batcher.close()
    assert result.lead_id == "L-2"
    assert not batcher._thread.is_alive()
