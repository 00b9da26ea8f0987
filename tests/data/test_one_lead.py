"""The one-lead path (features.one_lead) says exactly what the batch path says.

Vectors are compared bit for bit on 1,000 sample leads in test_builder; here each kind
of awkward value a lead can carry is compared in full: the vector, the report, the
warnings, and the error (field, row and words) when a lead is refused.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.batch import FeatureError, frames_to_records
from features.builder import LeadFeatureBuilder
from features.spec import FeatureSpec
from tests.data.test_builder import SAMPLE_AS_OF, builder  # noqa: F401  (fixture)


def _batch(b: LeadFeatureBuilder, lead: dict[str, Any]) -> Any:
    """The batch path on this lead (two copies: one lead would take the one-lead path)."""
    return b.build([lead, dict(lead)])


AWKWARD: list[dict[str, Any]] = [
    {"seniority": "Vice President"},  # an alias
    {"seniority": "astronaut"},  # unseen: scored as __other__, reported
    {"seniority": "n/a", "industry": ""},  # missing tokens
    {"company_size": 10**9},  # out of bounds: clipped, reported
    {"company_size": -1},  # a sentinel or out of bounds, as the spec says
    {"annual_revenue": float("inf")},
    {"annual_revenue": float("nan"), "company_size": None},
    {"business_email": "yes"},
    {"business_email": 0},
    {"business_email": None},
    {"actions": [{"type": "Pricing Page", "at": "2026-02-27T10:00:00+02:00"}]},
    {"actions": [{"type": "teleport", "at": "2026-02-27T10:00:00Z"}]},  # unknown type
    {"actions": [{"type": "webinar", "at": "2026-03-05T10:00:00Z"}]},  # after the cut-off
    {"actions": [{"type": "webinar", "at": datetime(2026, 2, 1, tzinfo=UTC)}]},
    {"actions": [{"type": "webinar", "at": "2026-02-28T23:59:59.9999999Z"}]},  # sub-µs
    {"created_at": None},
    {"created_at": "2027-01-01T00:00:00Z"},  # created after the cut-off
    {"company_size": "250"},  # a string number: left to the batch path
    {"as_of": datetime(2026, 1, 1, tzinfo=UTC)},
]


@pytest.fixture(scope="module")
def base_lead(sample_spec: FeatureSpec, sample_tables: Any) -> dict[str, Any]:
    """The sample lead with the most actions among the first 40."""
    leads, actions, _ = sample_tables
    records = frames_to_records(sample_spec, leads.head(40), actions, SAMPLE_AS_OF)
    return max(records, key=lambda r: len(r["actions"]))


@pytest.mark.parametrize("change", AWKWARD, ids=lambda c: ",".join(c))
def test_one_lead_equals_the_batch_path(
    builder: LeadFeatureBuilder,  # noqa: F811
    base_lead: dict[str, Any],
    change: dict[str, Any],
) -> None:
    lead = {**base_lead, **change}
    one = builder.build_one(lead)
    batch = _batch(builder, lead)
    assert np.array_equal(one.values[0], batch.values[0], equal_nan=True)
    assert np.array_equal(batch.values[0], batch.values[1], equal_nan=True)
    assert one.names == batch.names
    assert one.report.warnings_for(0) == batch.report.warnings_for(0)
    doubled = {
        "rows": 2,
        "missing": {k: 2 * v for k, v in one.report.summary()["missing"].items()},
        "unseen": {k: 2 * v for k, v in one.report.summary()["unseen"].items()},
        "clipped": {k: 2 * v for k, v in one.report.summary()["clipped"].items()},
        "unknown_action_types": 2 * one.report.unknown_action_types,
        "actions_after_cutoff": 2 * one.report.actions_after_cutoff,
    }
    assert batch.report.summary() == doubled
    assert one.report.unseen_values == batch.report.unseen_values


REFUSED: list[dict[str, Any]] = [
    {"company_size": True},
    {"business_email": "maybe"},
    {"business_email": 2},
    {"seniority": ["vp"]},
    {"as_of": "yesterday"},
    {"created_at": "2026-13-01"},
    {"actions": [{"type": "webinar", "at": "soon"}]},
    {"company_size": "many"},
]


@pytest.mark.parametrize("change", REFUSED, ids=lambda c: ",".join(c))
def test_one_lead_refuses_what_the_batch_path_refuses(
    builder: LeadFeatureBuilder,  # noqa: F811
    base_lead: dict[str, Any],
    change: dict[str, Any],
) -> None:
    lead = {**base_lead, **change}
    with pytest.raises(FeatureError) as one:
        builder.build_one(lead)
    with pytest.raises(FeatureError) as batch:
        _batch(builder, lead)
    assert (one.value.field, one.value.problem) == (batch.value.field, batch.value.problem)
    assert one.value.rows == [0] and batch.value.rows[0] == 0


def test_a_lead_without_a_cut_off_is_scored_now(
    builder: LeadFeatureBuilder,  # noqa: F811
) -> None:
    cap = builder.spec.actions.recency_cap_days  # type: ignore[union-attr]
    recent = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=2)).isoformat()
    lead = {"lead_id": "L1", "actions": [{"type": "webinar", "at": recent}]}
    m = builder.build_one(lead)
    days = m.values[0, m.names.index("webinar_days_since_last")]
    assert 2.0 <= days < 2.01 < cap
    assert m.values[0, m.names.index("webinar_count_7d")] == 1.0
