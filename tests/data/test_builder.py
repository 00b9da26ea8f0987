"""The feature builder: the scikit-learn contract, online = offline, and every stated rule.

The rules tested here are the ones in the module docstring of ``features.builder``: how
missing, unseen and out-of-range values are coded and reported, which actions count as of
a cut-off, and how the action aggregates are computed. Exact values are checked on small
hand-made leads; the equality and no-look-ahead properties on the 3,000-lead sample CRM.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.base import clone

from features.batch import FeatureError, aggregated_columns, frames_to_records
from features.builder import (
    MISSING_LEVEL,
    OTHER_LEVEL,
    BuildReport,
    FeatureMatrix,
    LeadFeatureBuilder,
)
from features.spec import SPECS_DIR, FeatureSpec, load_spec

X_EDUCATION_CSV = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "x_education" / "Leads.csv"
)

#: Cut-off for the sample CRM: leads are created from 2025-01 to 2026-06 and act until
#: 2026-10, so some leads do not exist yet and many have actions after it.
SAMPLE_AS_OF = pd.Timestamp("2026-03-01T00:00:00Z")
#: Cut-off for the hand-made leads.
AS_OF = pd.Timestamp("2025-06-30T00:00:00Z")
_SIGN: dict[str | None, int] = {"increasing": 1, "decreasing": -1, None: 0}
SENIORITY = ["intern", "individual_contributor", "manager", "director", "vp", "c_level"]


# -- helpers ----------------------------------------------------------------------------


def _variant(change: Callable[[dict[str, Any]], None]) -> FeatureSpec:
    """The sample spec with one change applied, validated like a loaded file."""
    raw = yaml.safe_load((SPECS_DIR / "sample_crm.yaml").read_text(encoding="utf-8"))
    change(raw)
    return FeatureSpec.model_validate(raw)


def _field(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in raw["fields"] if f["name"] == name)


def _at(days_before: float, *, kind: str = "pricing_page") -> dict[str, str]:
    """An action ``days_before`` days before :data:`AS_OF`, in the API's dict shape."""
    stamp = AS_OF - pd.Timedelta(days=days_before)
    return {"type": kind, "at": stamp.isoformat()}


def _lead(**fields: Any) -> dict[str, Any]:
    """A hand-made lead dict as the API receives it."""
    record: dict[str, Any] = {
        "lead_id": "L1",
        "created_at": "2025-06-01T00:00:00Z",
        "as_of": AS_OF.isoformat(),
        "actions": [],
    }
    record.update(fields)
    return record


def _col(matrix: FeatureMatrix, name: str) -> np.ndarray:
    return matrix.values[:, matrix.names.index(name)]


def _fitted(spec: FeatureSpec, records: list[dict[str, Any]] | None = None) -> LeadFeatureBuilder:
    return LeadFeatureBuilder(spec).fit(records or [_lead()])


@pytest.fixture(scope="module")
def builder(sample_spec: FeatureSpec, sample_tables: Any) -> LeadFeatureBuilder:
    leads, actions, _ = sample_tables
    return LeadFeatureBuilder(sample_spec).fit(leads, actions=actions, as_of=SAMPLE_AS_OF)


@pytest.fixture(scope="module")
def sample_1000(sample_tables: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """1,000 random sample leads (not in file order) and exactly their actions."""
    leads, actions, _ = sample_tables
    rng = np.random.default_rng(7)
    pick = np.sort(rng.choice(len(leads), size=1000, replace=False))[::-1]
    subset = leads.iloc[pick].reset_index(drop=True)
    own = actions[actions["lead_id"].isin(subset["lead_id"])].reset_index(drop=True)
    return subset, own


# -- scikit-learn contract --------------------------------------------------------------


def test_fit_returns_self_and_transform_has_one_column_per_name(
    sample_spec: FeatureSpec, sample_tables: Any
) -> None:
    leads, actions, _ = sample_tables
    b = LeadFeatureBuilder(sample_spec)
    assert b.fit(leads, actions=actions, as_of=SAMPLE_AS_OF) is b
    values = b.transform(leads, actions=actions, as_of=SAMPLE_AS_OF)
    names = list(b.get_feature_names_out())
    assert values.shape == (len(leads), len(names))
    assert values.dtype == np.float64
    assert len(names) == 8 + len(aggregated_columns(sample_spec)) + 1 == 84
    assert len(set(names)) == len(names)
    # Profile features first (spec order), then the action aggregates, then lead age.
    assert names[:8] == [f.name for f in sample_spec.feature_fields]
    assert names[8:-1] == aggregated_columns(sample_spec)
    assert names[-1] == "lead_age_days"
    assert b.n_features_in_ == 8
    assert set(b.reference_) == set(names)
    assert b.fit_report_["rows"] == len(leads)


def test_unfitted_builder_refuses_to_transform(sample_spec: FeatureSpec) -> None:
    b = LeadFeatureBuilder(sample_spec)
    with pytest.raises(RuntimeError, match="not fitted"):
        b.transform([_lead()])
    with pytest.raises(RuntimeError, match="not fitted"):
        b.build_one(_lead())
    with pytest.raises(RuntimeError, match="not fitted"):
        b.get_feature_names_out()
    with pytest.raises(RuntimeError, match="not fitted"):
        b.to_dict()


def test_clone_gives_an_unfitted_copy_that_refits_identically(
    builder: LeadFeatureBuilder, sample_1000: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    leads, actions = sample_1000
    twin = clone(builder)
    assert twin is not builder
    assert twin.get_params() == {"spec": builder.spec}
    with pytest.raises(RuntimeError, match="not fitted"):
        twin.transform(leads, actions=actions, as_of=SAMPLE_AS_OF)
    twin.fit(leads, actions=actions, as_of=SAMPLE_AS_OF)
    assert np.array_equal(
        twin.transform(leads, actions=actions, as_of=SAMPLE_AS_OF),
        builder.transform(leads, actions=actions, as_of=SAMPLE_AS_OF),
        equal_nan=True,
    )


def test_to_dict_through_json_gives_an_identical_transform(
    builder: LeadFeatureBuilder, sample_1000: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    leads, actions = sample_1000
    text = json.dumps(builder.to_dict())
    restored = LeadFeatureBuilder.from_dict(json.loads(text))
    assert restored.spec == builder.spec
    assert restored.levels_ == builder.levels_
    assert list(restored.get_feature_names_out()) == list(builder.get_feature_names_out())
    assert restored.monotone_constraints_ == builder.monotone_constraints_
    expected = builder.transform(leads, actions=actions, as_of=SAMPLE_AS_OF)
    got = restored.transform(leads, actions=actions, as_of=SAMPLE_AS_OF)
    assert np.array_equal(got, expected, equal_nan=True)


def test_from_dict_refuses_an_unknown_format(builder: LeadFeatureBuilder) -> None:
    data = builder.to_dict()
    data["format"] = 2
    with pytest.raises(ValueError, match="unsupported feature builder format: 2"):
        LeadFeatureBuilder.from_dict(data)


def test_pickle_round_trip_rebuilds_lookup_tables(
    builder: LeadFeatureBuilder, sample_1000: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    leads, actions = sample_1000
    restored = pickle.loads(pickle.dumps(builder))
    assert np.array_equal(
        restored.transform(leads, actions=actions, as_of=SAMPLE_AS_OF),
        builder.transform(leads, actions=actions, as_of=SAMPLE_AS_OF),
        equal_nan=True,
    )


# -- online = offline -------------------------------------------------------------------


def test_batch_and_dict_paths_give_bit_identical_vectors(
    builder: LeadFeatureBuilder,
    sample_spec: FeatureSpec,
    sample_1000: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    leads, actions = sample_1000
    offline = builder.build(leads, actions=actions, as_of=SAMPLE_AS_OF)
    records = frames_to_records(sample_spec, leads, actions, SAMPLE_AS_OF)
    assert len(records) == 1000
    assert {len(r["actions"]) for r in records} != {0}
    online = np.vstack([builder.build_one(r).values for r in records])
    assert online.shape == offline.values.shape == (1000, 84)
    assert np.array_equal(online, offline.values, equal_nan=True)
    # Through the scikit-learn entry point with a list of dicts as well.
    assert np.array_equal(builder.transform(records), offline.values, equal_nan=True)
    # The comparison is not vacuous: actions were counted, cut off, categories coded.
    assert np.nansum(_col(offline, "actions_count_90d")) > 1000
    assert offline.report.actions_after_cutoff > 0
    assert offline.report.missing["seniority"] > 0
    assert len(offline.report.unseen_rows) > 0


def test_dict_path_report_matches_batch_report(
    builder: LeadFeatureBuilder,
    sample_spec: FeatureSpec,
    sample_1000: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    leads, actions = sample_1000
    offline = builder.build(leads, actions=actions, as_of=SAMPLE_AS_OF)
    online = builder.build(frames_to_records(sample_spec, leads, actions, SAMPLE_AS_OF))
    assert online.report.summary() == offline.report.summary()
    for name, rows in offline.report.unseen_rows.items():
        assert np.array_equal(online.report.unseen_rows[name], rows)


# -- no look-ahead ----------------------------------------------------------------------


def _future_actions(leads: pd.DataFrame, spec: FeatureSpec, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    assert spec.actions is not None
    types = [t.name for t in spec.actions.types]
    offsets = rng.integers(1, 200 * 86_400 * 10**9, size=n)
    offsets[:3] = [1, 1000, 86_400 * 10**9]  # one nanosecond, one microsecond, one day late
    return pd.DataFrame(
        {
            "lead_id": rng.choice(leads["lead_id"].to_numpy(), size=n),
            "action_type": rng.choice(types, size=n),
            "occurred_at": SAMPLE_AS_OF + pd.to_timedelta(offsets, unit="ns"),
        }
    )


def test_actions_after_the_cutoff_never_change_a_vector(
    builder: LeadFeatureBuilder,
    sample_spec: FeatureSpec,
    sample_1000: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    leads, actions = sample_1000
    base = builder.build(leads, actions=actions, as_of=SAMPLE_AS_OF)

    future = _future_actions(leads, sample_spec, 5000)
    more = pd.concat([actions, future], ignore_index=True)
    added = builder.build(leads, actions=more, as_of=SAMPLE_AS_OF)
    assert np.array_equal(added.values, base.values, equal_nan=True)
    assert added.report.actions_after_cutoff == base.report.actions_after_cutoff + 5000

    past_only = actions[actions["occurred_at"] <= SAMPLE_AS_OF]
    assert len(past_only) < len(actions)
    trimmed = builder.build(leads, actions=past_only, as_of=SAMPLE_AS_OF)
    assert np.array_equal(trimmed.values, base.values, equal_nan=True)
    assert trimmed.report.actions_after_cutoff == 0


def test_actions_after_the_cutoff_never_change_a_vector_online(
    builder: LeadFeatureBuilder,
    sample_spec: FeatureSpec,
    sample_1000: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    leads, actions = sample_1000
    leads = leads.iloc[:100]
    own = actions[actions["lead_id"].isin(leads["lead_id"])]
    records = frames_to_records(sample_spec, leads, own, SAMPLE_AS_OF)
    base = builder.build(records)
    future = _future_actions(leads, sample_spec, 300)
    # Second-precision future stamps: the dict path parses ISO strings.
    future["occurred_at"] = future["occurred_at"].dt.ceil("s")
    noisy = frames_to_records(
        sample_spec, leads, pd.concat([own, future], ignore_index=True), SAMPLE_AS_OF
    )
    after = builder.build(noisy)
    assert np.array_equal(after.values, base.values, equal_nan=True)
    assert after.report.actions_after_cutoff == base.report.actions_after_cutoff + 300


def test_an_action_one_hour_before_the_cutoff_counts(
    builder: LeadFeatureBuilder, sample_1000: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    leads, actions = sample_1000
    base = builder.build(leads, actions=actions, as_of=SAMPLE_AS_OF)
    target = 17
    extra = pd.DataFrame(
        {
            "lead_id": [leads["lead_id"].iloc[target]],
            "action_type": ["demo_request"],
            "occurred_at": [SAMPLE_AS_OF - pd.Timedelta(hours=1)],
        }
    )
    more = builder.build(
        leads, actions=pd.concat([actions, extra], ignore_index=True), as_of=SAMPLE_AS_OF
    )
    for name in ("demo_request_count_1d", "demo_request_count_90d", "actions_count_1d"):
        assert _col(more, name)[target] == _col(base, name)[target] + 1
    assert _col(more, "demo_request_days_since_last")[target] == pytest.approx(1 / 24)
    assert _col(more, "active_days_1d")[target] == 1
    others = np.arange(len(leads)) != target
    assert np.array_equal(more.values[others], base.values[others], equal_nan=True)


# -- exact action features --------------------------------------------------------------


def test_action_features_of_a_hand_made_lead(
    sample_spec: FeatureSpec,
) -> None:
    b = _fitted(sample_spec)
    ages = [0.5, 3.0, 10.0, 100.0]
    lead = _lead(
        actions=[
            *(_at(a) for a in ages),
            _at(0.6, kind="page_view"),  # same day as the 0.5-day visit
        ]
    )
    m = b.build_one(lead)
    assert m.values.shape == (1, 84)
    assert _col(m, "pricing_page_count_1d")[0] == 1
    assert _col(m, "pricing_page_count_7d")[0] == 2
    assert _col(m, "pricing_page_count_30d")[0] == 3
    assert _col(m, "pricing_page_count_90d")[0] == 3
    assert _col(m, "pricing_page_days_since_last")[0] == pytest.approx(0.5, abs=1e-12)
    half_life = sample_spec.actions.half_life_days  # type: ignore[union-attr]
    assert half_life == 14
    expected_decay = sum(0.5 ** (a / half_life) for a in ages)
    assert _col(m, "pricing_page_decayed")[0] == pytest.approx(expected_decay, rel=1e-12)
    assert _col(m, "page_view_count_1d")[0] == 1
    assert _col(m, "page_view_days_since_last")[0] == pytest.approx(
        0.6, abs=2e-11
    )  # µs precision; 0.6 d is 1 ns off in pandas
    # Distinct active days: day 0 (two actions), day 3, day 10; day 100 is outside 90 d.
    assert [_col(m, f"active_days_{w}d")[0] for w in (1, 7, 30, 90)] == [1, 2, 3, 3]
    assert [_col(m, f"actions_count_{w}d")[0] for w in (1, 7, 30, 90)] == [2, 3, 4, 4]
    assert _col(m, "recent_velocity")[0] == pytest.approx(3 / 7 - 4 / 90, rel=1e-12)
    assert _col(m, "lead_age_days")[0] == 29.0
    # A type never seen: the recency cap, nothing counted, nothing decayed.
    assert _col(m, "demo_request_days_since_last")[0] == 365
    assert _col(m, "demo_request_count_90d")[0] == 0
    assert _col(m, "demo_request_decayed")[0] == 0
    assert m.report.unknown_action_types == 0
    assert m.report.actions_after_cutoff == 0


def test_hand_made_lead_gives_the_same_vector_as_a_table(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    record = _lead(
        seniority="VP",
        company_size=250,
        business_email=True,
        actions=[_at(0.5), _at(3.0), _at(40.0, kind="webinar"), _at(-1.0)],
    )
    leads = pd.DataFrame(
        {
            "lead_id": ["L1"],
            "created_at": [pd.Timestamp("2025-06-01T00:00:00Z")],
            "seniority": ["VP"],
            "company_size": [250.0],
            "business_email": [1.0],
        }
    )
    actions = pd.DataFrame(
        {
            "lead_id": ["L1"] * 4,
            "action_type": [a["type"] for a in record["actions"]],
            "occurred_at": pd.to_datetime([a["at"] for a in record["actions"]], utc=True),
        }
    )
    online = b.build_one(record)
    offline = b.build(leads, actions=actions, as_of=AS_OF)
    assert np.array_equal(online.values, offline.values, equal_nan=True)
    assert online.report.actions_after_cutoff == offline.report.actions_after_cutoff == 1


def test_window_boundaries_and_the_recency_cap(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    m = b.build_one(
        _lead(
            actions=[
                _at(0.0),  # exactly at the cut-off: counts
                _at(7.0),  # exactly 7 days: outside the 7-day window, inside 30
                _at(400.0, kind="webinar"),  # older than the cap
            ]
        )
    )
    assert [_col(m, f"pricing_page_count_{w}d")[0] for w in (1, 7, 30, 90)] == [1, 1, 2, 2]
    assert _col(m, "pricing_page_days_since_last")[0] == 0
    assert [_col(m, f"active_days_{w}d")[0] for w in (1, 7, 30, 90)] == [1, 1, 2, 2]
    assert _col(m, "webinar_count_90d")[0] == 0
    assert _col(m, "webinar_days_since_last")[0] == 365  # capped
    assert _col(m, "webinar_decayed")[0] == pytest.approx(0.5 ** (400 / 14), rel=1e-12)


def test_a_lead_without_actions(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    m = b.build_one(_lead(actions=[]))
    assert _col(m, "pricing_page_days_since_last")[0] == 365
    assert _col(m, "actions_count_90d")[0] == 0
    assert _col(m, "active_days_90d")[0] == 0
    assert _col(m, "recent_velocity")[0] == 0
    without_key = {k: v for k, v in _lead().items() if k != "actions"}
    assert np.array_equal(b.build_one(without_key).values, m.values, equal_nan=True)


def test_unknown_action_type_is_ignored_and_reported(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    plain = b.build_one(_lead(actions=[_at(2.0)]))
    noisy = b.build_one(_lead(actions=[_at(2.0), _at(1.0, kind="fax_received")]))
    assert noisy.report.unknown_action_types == 1
    assert plain.report.unknown_action_types == 0
    assert np.array_equal(noisy.values, plain.values, equal_nan=True)
    assert noisy.report.summary()["unknown_action_types"] == 1


def test_action_type_spelling_is_normalised(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    m = b.build_one(
        _lead(actions=[_at(2.0, kind="  Pricing-Page "), _at(3.0, kind="PRICING PAGE")])
    )
    assert _col(m, "pricing_page_count_7d")[0] == 2
    assert m.report.unknown_action_types == 0


def test_lead_age_needs_a_created_at(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    lead = _lead(created_at="2025-06-29T12:00:00+02:00")  # 10:00 UTC
    assert _col(b.build_one(lead), "lead_age_days")[0] == pytest.approx(14 / 24)
    assert np.isnan(_col(b.build_one(_lead(created_at=None)), "lead_age_days")[0])


# -- categorical rules ------------------------------------------------------------------


def test_messy_spellings_and_aliases_map_to_the_level_code(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    values = ["  VP ", "Vice-President", "vice president", "ceo", "C-Level", "IC", "Manager"]
    m = b.build([_lead(seniority=v) for v in values])
    codes = [SENIORITY.index(t) for t in ("vp", "vp", "vp", "c_level", "c_level")]
    codes += [SENIORITY.index("individual_contributor"), SENIORITY.index("manager")]
    assert _col(m, "seniority").tolist() == codes
    assert m.report.missing["seniority"] == 0
    assert "seniority" not in m.report.unseen_rows
    assert b.categories_of("seniority") == [*SENIORITY, MISSING_LEVEL, OTHER_LEVEL]


def test_missing_tokens_are_the_missing_code_and_are_counted(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    values: list[Any] = ["", "N/A", "Select", None, float("nan"), "  null ", "-", "vp"]
    m = b.build([_lead(seniority=v) for v in values])
    k = len(SENIORITY)
    assert _col(m, "seniority").tolist() == [k] * 7 + [SENIORITY.index("vp")]
    assert m.report.missing["seniority"] == 7
    assert "seniority" not in m.report.unseen_rows
    assert m.report.warnings_for(0) == []
    # An omitted key is a missing value too.
    assert _col(b.build_one({"as_of": AS_OF.isoformat()}), "seniority")[0] == k


def test_unseen_value_is_the_other_code_and_is_reported(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    m = b.build([_lead(seniority="vp"), _lead(seniority="Astronaut"), _lead(seniority="manager")])
    k = len(SENIORITY)
    assert _col(m, "seniority").tolist() == [SENIORITY.index("vp"), k + 1, 2]
    assert m.report.unseen_rows["seniority"].tolist() == [1]
    assert m.report.summary()["unseen"] == {"seniority": 1}
    warnings = m.report.warnings_for(1)
    assert len(warnings) == 1
    assert "seniority" in warnings[0]
    assert OTHER_LEVEL in warnings[0]
    assert "astronaut" not in warnings[0].lower()
    assert m.report.warnings_for(0) == []
    assert m.report.warnings_for(2) == []
    assert "astronaut" not in json.dumps(m.report.summary()).lower()


def test_unseen_error_refuses_the_row_naming_field_and_row() -> None:
    spec = _variant(lambda raw: _field(raw, "seniority").update({"unseen": "error"}))
    b = _fitted(spec)
    leads = [_lead(seniority="vp"), _lead(seniority="Astronaut"), _lead(seniority=None)]
    with pytest.raises(FeatureError) as info:
        b.build(leads)
    assert info.value.field == "seniority"
    assert info.value.rows == [1]
    message = str(info.value)
    assert "'seniority'" in message
    assert "rows 1" in message
    assert "astronaut" not in message.lower()
    # Known and missing values still pass.
    assert _col(b.build([leads[0], leads[2]]), "seniority").tolist() == [4, 6]


# -- numeric rules ----------------------------------------------------------------------


def test_numeric_out_of_bounds_is_clipped_and_reported(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    values: list[Any] = [0, 1e9, 250, float("nan"), float("inf"), -float("inf"), None, "12"]
    m = b.build([_lead(company_size=v) for v in values])
    got = _col(m, "company_size")
    assert got[[0, 1, 2, 7]].tolist() == [1.0, 500_000.0, 250.0, 12.0]
    assert np.isnan(got[3:7]).all()
    assert m.report.clipped_rows["company_size"].tolist() == [0, 1]
    assert m.report.missing["company_size"] == 4
    assert m.report.summary()["clipped"] == {"company_size": 2}
    (warning,) = m.report.warnings_for(1)
    assert "company_size" in warning
    assert "clipped" in warning
    assert "1000000000" not in warning
    assert m.report.warnings_for(2) == []


def test_numeric_out_of_bounds_error_refuses_the_row() -> None:
    spec = _variant(lambda raw: _field(raw, "company_size").update({"out_of_bounds": "error"}))
    b = _fitted(spec)
    with pytest.raises(FeatureError) as info:
        b.build([_lead(company_size=10), _lead(company_size=None), _lead(company_size=-5)])
    assert info.value.field == "company_size"
    assert info.value.rows == [2]
    assert "outside [1, 500000] employees" in str(info.value)
    assert "-5" not in str(info.value)


def test_non_number_string_is_refused_naming_the_field(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    with pytest.raises(FeatureError) as info:
        b.build([_lead(company_size=12), _lead(company_size="lots"), _lead(company_size=3)])
    assert info.value.field == "company_size"
    assert info.value.rows == [1]
    assert "not a number" in str(info.value)
    assert "lots" not in str(info.value)


def test_numeric_values_of_a_table_are_encoded_like_dicts(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    leads = pd.DataFrame(
        {
            "lead_id": ["a", "b", "c"],
            "annual_revenue": [np.inf, -1.0, 5e6],
            "company_size": [np.nan, 600_000.0, 3.0],
        }
    )
    for key in aggregated_columns(sample_spec):
        leads[key] = 0.0
    m = b.build(leads, as_of=AS_OF)
    assert np.isnan(_col(m, "annual_revenue")[0])
    assert _col(m, "annual_revenue")[1:].tolist() == [0.0, 5e6]
    assert np.isnan(_col(m, "company_size")[0])
    assert _col(m, "company_size")[1:].tolist() == [500_000.0, 3.0]
    assert m.report.missing["annual_revenue"] == 1
    assert m.report.clipped_rows["annual_revenue"].tolist() == [1]
    assert m.report.clipped_rows["company_size"].tolist() == [1]


# -- boolean rules ----------------------------------------------------------------------


def test_boolean_spellings(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    values: list[Any] = [True, False, "yes", "No", 1, 0, None, "TRUE", " n ", float("nan")]
    values += ["Select", np.bool_(True), 1.0]
    m = b.build([_lead(business_email=v) for v in values])
    got = _col(m, "business_email")
    expected = [1, 0, 1, 0, 1, 0, np.nan, 1, 0, np.nan, np.nan, 1, 1]
    assert np.array_equal(got, np.array(expected, dtype=float), equal_nan=True)
    assert m.report.missing["business_email"] == 3


@pytest.mark.parametrize("value", ["maybe", 2, "0.5"])
def test_a_non_boolean_answer_is_refused(sample_spec: FeatureSpec, value: Any) -> None:
    b = _fitted(sample_spec)
    with pytest.raises(FeatureError) as info:
        b.build([_lead(business_email=True), _lead(business_email=value)])
    assert info.value.field == "business_email"
    assert info.value.rows == [1]
    assert "yes/no" in str(info.value)
    assert str(value) not in str(info.value)


def test_boolean_float_column_of_a_table(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    leads = pd.DataFrame({"lead_id": ["a", "b", "c"], "business_email": [1.0, 0.0, np.nan]})
    for key in aggregated_columns(sample_spec):
        leads[key] = 0.0
    m = b.build(leads, as_of=AS_OF)
    assert np.array_equal(_col(m, "business_email"), [1.0, 0.0, np.nan], equal_nan=True)
    leads.loc[2, "business_email"] = 0.5
    with pytest.raises(FeatureError) as info:
        b.build(leads, as_of=AS_OF)
    assert (info.value.field, info.value.rows) == ("business_email", [2])


# -- learned levels ---------------------------------------------------------------------


def _learnt_spec() -> FeatureSpec:
    def learn(raw: dict[str, Any]) -> None:
        department = _field(raw, "department")
        del department["levels"]
        department["min_count"] = 2

    return _variant(learn)


def test_levels_are_learnt_from_fit_data_with_min_count() -> None:
    spec = _learnt_spec()
    fit_values: list[Any] = ["Sales", "sales ", " SALES", "marketing", "Marketing", "Legal"]
    fit_values += [None, "Select", "", "Legal Team"]
    b = LeadFeatureBuilder(spec).fit([_lead(department=v) for v in fit_values])
    # Frequency order: sales (3), marketing (2); legal (1) and legal_team (1) are too rare.
    assert b.levels_["department"] == ["sales", "marketing"]
    assert b.categories_of("department") == ["sales", "marketing", MISSING_LEVEL, OTHER_LEVEL]
    m = b.build([_lead(department=v) for v in ["legal", "MARKETING", None, "sales", "hr"]])
    assert _col(m, "department").tolist() == [3, 1, 2, 0, 3]
    assert m.report.unseen_rows["department"].tolist() == [0, 4]
    assert m.report.missing["department"] == 1


def test_learnt_levels_come_from_fit_data_only() -> None:
    spec = _learnt_spec()
    b = LeadFeatureBuilder(spec).fit([_lead(department=v) for v in ["it", "it", "hr", "hr"]])
    assert b.levels_["department"] == ["hr", "it"]  # tie on count: by name
    many_new = [_lead(department="finance") for _ in range(50)]
    m = b.build(many_new)
    assert set(_col(m, "department").tolist()) == {3.0}
    assert len(m.report.unseen_rows["department"]) == 50
    assert b.levels_["department"] == ["hr", "it"]


def test_learnt_levels_survive_json(sample_1000: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    leads, actions = sample_1000
    spec = _learnt_spec()
    b = LeadFeatureBuilder(spec).fit(leads, actions=actions, as_of=SAMPLE_AS_OF)
    assert len(b.levels_["department"]) >= 8
    restored = LeadFeatureBuilder.from_dict(json.loads(json.dumps(b.to_dict())))
    assert restored.levels_ == b.levels_
    assert np.array_equal(
        restored.transform(leads, actions=actions, as_of=SAMPLE_AS_OF),
        b.transform(leads, actions=actions, as_of=SAMPLE_AS_OF),
        equal_nan=True,
    )


# -- monotone constraints and categorical indices ---------------------------------------


def test_monotone_constraints_follow_the_spec(
    builder: LeadFeatureBuilder, sample_spec: FeatureSpec
) -> None:
    names = list(builder.get_feature_names_out())
    mono = dict(zip(names, builder.monotone_constraints_, strict=True))
    assert len(builder.monotone_constraints_) == len(names)
    assert sample_spec.actions is not None
    activity = _SIGN[sample_spec.actions.activity_direction]
    for w in (1, 7, 30, 90):
        assert mono[f"pricing_page_count_{w}d"] == 1
        assert mono[f"unsubscribe_count_{w}d"] == -1
        assert mono[f"email_open_count_{w}d"] == 0
        assert mono[f"active_days_{w}d"] == activity
        assert mono[f"actions_count_{w}d"] == activity
    assert mono["recent_velocity"] == activity
    assert mono["pricing_page_days_since_last"] == -1
    assert mono["pricing_page_decayed"] == 1
    assert mono["unsubscribe_days_since_last"] == 1
    assert mono["unsubscribe_decayed"] == -1
    assert mono["email_open_days_since_last"] == 0
    assert mono["email_open_decayed"] == 0
    assert mono["business_email"] == 1
    for name in ("seniority", "country", "company_size", "annual_revenue", "lead_age_days"):
        assert mono[name] == 0


@pytest.mark.parametrize(("direction", "sign"), [("increasing", 1), ("decreasing", -1), (None, 0)])
def test_activity_direction_constrains_the_all_type_totals(
    direction: str | None, sign: int
) -> None:
    spec = _variant(lambda raw: raw["actions"].update({"activity_direction": direction}))
    b = _fitted(spec)
    mono = dict(zip(b.get_feature_names_out(), b.monotone_constraints_, strict=True))
    totals = [f"{p}_{w}d" for p in ("active_days", "actions_count") for w in (1, 7, 30, 90)]
    assert [mono[n] for n in [*totals, "recent_velocity"]] == [sign] * 9
    # Per-type constraints do not depend on it.
    assert mono["pricing_page_count_7d"] == 1
    assert mono["email_open_count_7d"] == 0
    assert mono["seniority"] == 0


def test_categorical_indices_are_the_categorical_fields(builder: LeadFeatureBuilder) -> None:
    names = list(builder.get_feature_names_out())
    assert [names[i] for i in builder.categorical_indices_] == [
        "seniority",
        "department",
        "industry",
        "country",
        "acquisition_source",
    ]


# -- pre-aggregated input ---------------------------------------------------------------


def _pre_aggregated(
    leads: pd.DataFrame, spec: FeatureSpec
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    frame = leads.iloc[:30].reset_index(drop=True).copy()
    values = {}
    for name in aggregated_columns(spec):
        column = rng.integers(0, 20, size=len(frame)).astype(float)
        if name.endswith(("_days_since_last", "_decayed", "recent_velocity")):
            column = rng.uniform(0, 365, size=len(frame))
        values[name] = column
    return pd.concat([frame, pd.DataFrame(values)], axis=1), values


def test_pre_aggregated_columns_are_used_as_given(
    builder: LeadFeatureBuilder, sample_spec: FeatureSpec, sample_tables: Any
) -> None:
    leads, _, _ = sample_tables
    frame, values = _pre_aggregated(leads, sample_spec)
    m = builder.build(frame, as_of=SAMPLE_AS_OF)
    for name, column in values.items():
        assert np.array_equal(_col(m, name), column), name
    assert m.report.actions_after_cutoff == 0
    # The profile block is the same as with an (empty) actions table.
    empty = pd.DataFrame(
        {
            "lead_id": pd.Series([], dtype=object),
            "action_type": pd.Series([], dtype=object),
            "occurred_at": pd.Series([], dtype="datetime64[ns, UTC]"),
        }
    )
    with_events = builder.build(frame, actions=empty, as_of=SAMPLE_AS_OF)
    assert np.array_equal(with_events.values[:, :8], m.values[:, :8], equal_nan=True)
    assert np.array_equal(with_events.values[:, -1], m.values[:, -1], equal_nan=True)


def test_pre_aggregated_dicts_match_the_table(
    builder: LeadFeatureBuilder, sample_spec: FeatureSpec, sample_tables: Any
) -> None:
    leads, _, _ = sample_tables
    frame, values = _pre_aggregated(leads, sample_spec)
    offline = builder.build(frame, as_of=SAMPLE_AS_OF)
    records = frames_to_records(sample_spec, frame, None, SAMPLE_AS_OF)
    for i, record in enumerate(records):
        record.update({name: float(column[i]) for name, column in values.items()})
    online = np.vstack([builder.build_one(r).values for r in records])
    assert np.array_equal(online, offline.values, equal_nan=True)


def test_missing_aggregated_columns_are_refused(
    builder: LeadFeatureBuilder, sample_spec: FeatureSpec, sample_tables: Any
) -> None:
    leads, _, _ = sample_tables
    frame, _ = _pre_aggregated(leads, sample_spec)
    with pytest.raises(FeatureError) as info:
        builder.build(frame.drop(columns=["webinar_count_7d"]), as_of=SAMPLE_AS_OF)
    assert info.value.field == "webinar_count_7d"
    assert "1 pre-aggregated action columns are absent" in str(info.value)
    with pytest.raises(FeatureError) as info:
        builder.build(leads.iloc[:5], as_of=SAMPLE_AS_OF)
    assert info.value.field == aggregated_columns(sample_spec)[0]
    assert f"{len(aggregated_columns(sample_spec))} pre-aggregated" in str(info.value)


def test_negative_aggregates_are_refused(
    builder: LeadFeatureBuilder, sample_spec: FeatureSpec, sample_tables: Any
) -> None:
    leads, _, _ = sample_tables
    frame, _ = _pre_aggregated(leads, sample_spec)
    frame.loc[4, "email_open_count_30d"] = -1.0
    frame.loc[9, "email_open_count_30d"] = -3.0
    with pytest.raises(FeatureError) as info:
        builder.build(frame, as_of=SAMPLE_AS_OF)
    assert info.value.field == "email_open_count_30d"
    assert info.value.rows == [4, 9]
    assert "cannot be negative" in str(info.value)


# -- snapshots --------------------------------------------------------------------------


def test_each_snapshot_of_a_lead_gets_only_its_own_past(
    builder: LeadFeatureBuilder, sample_spec: FeatureSpec
) -> None:
    t1 = pd.Timestamp("2025-03-01T00:00:00Z")
    t2 = pd.Timestamp("2025-04-01T00:00:00Z")
    leads = pd.DataFrame(
        {
            "lead_id": ["A", "B", "A", "C"],
            "created_at": [pd.Timestamp("2025-02-01T00:00:00Z")] * 4,
            "as_of": [t2, t1, t1, t2],
        }
    )
    day = pd.Timedelta(days=1)
    actions = pd.DataFrame(
        {
            "lead_id": ["A", "A", "B", "A", "C", "A"],
            "action_type": ["pricing_page"] * 6,
            "occurred_at": [t1 - 2 * day, t1 + day, t1 - day / 24, t2 + day, t2, t1],
        }
    )
    m = builder.build(leads, actions=actions)
    assert _col(m, "pricing_page_count_90d").tolist() == [3, 1, 2, 1]
    assert _col(m, "pricing_page_days_since_last").tolist() == pytest.approx([30, 1 / 24, 0, 0])
    assert _col(m, "lead_age_days").tolist() == [59, 28, 28, 59]
    # A's t2+1d for its t2 row; A's t1+1d and t2+1d for its t1 row. C's action at t2 counts.
    assert m.report.actions_after_cutoff == 3
    # Each snapshot equals that lead built alone at that cut-off, and the dict path agrees.
    for i in range(len(leads)):
        alone = builder.build(
            leads.iloc[[i]].drop(columns="as_of"),
            actions=actions[actions["lead_id"] == leads["lead_id"][i]],
            as_of=leads["as_of"][i],
        )
        assert np.array_equal(alone.values[0], m.values[i], equal_nan=True), i
    records = frames_to_records(sample_spec, leads, actions)
    assert [r["as_of"] for r in records] == [
        "2025-04-01T00:00:00Z",
        "2025-03-01T00:00:00Z",
        "2025-03-01T00:00:00Z",
        "2025-04-01T00:00:00Z",
    ]
    assert np.array_equal(builder.build(records).values, m.values, equal_nan=True)


def test_snapshots_of_sample_leads_match_single_builds(
    builder: LeadFeatureBuilder, sample_1000: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    leads, actions = sample_1000
    few = leads.iloc[:40]
    cutoffs = [pd.Timestamp("2025-09-01T00:00:00Z"), SAMPLE_AS_OF]
    stacked = pd.concat([few.assign(as_of=c) for c in cutoffs], ignore_index=True).sample(
        frac=1.0, random_state=1, ignore_index=True
    )
    m = builder.build(stacked, actions=actions)
    for cutoff in cutoffs:
        rows = np.flatnonzero(stacked["as_of"] == cutoff)
        alone = builder.build(
            stacked.iloc[rows].drop(columns="as_of"), actions=actions, as_of=cutoff
        )
        assert np.array_equal(alone.values, m.values[rows], equal_nan=True)


# -- the real X Education file ----------------------------------------------------------


@pytest.mark.shared
@pytest.mark.skipif(not X_EDUCATION_CSV.exists(), reason="../shared/data/x_education is absent")
def test_x_education_file_builds_twenty_fair_features() -> None:
    from features.loaders import load_leads

    spec = load_spec("x_education")
    leads = load_leads(X_EDUCATION_CSV, spec, require_label=True)
    b = LeadFeatureBuilder(spec).fit(leads)
    values = b.transform(leads)
    assert values.shape == (9240, 20)
    names = list(b.get_feature_names_out())
    assert names == [f.name for f in spec.feature_fields]
    leaky = {"tags", "lead_quality", "lead_profile", "last_activity", "last_notable_activity"}
    assert leaky.isdisjoint(names)
    assert not any("index" in n or "score" in n for n in names)
    assert "label" not in names

    report = b.build(leads).report
    raw = pd.read_csv(X_EDUCATION_CSV, dtype=str, keep_default_na=False)
    for column, name in [("Specialization", "specialization"), ("City", "city")]:
        cell = raw[column].str.strip()
        selects = int((cell == "Select").sum())
        blanks = int(cell.isin(["", "nan", "NaN"]).sum())
        assert selects > 1000
        # "Select" is a missing value, never a level of its own.
        assert report.missing[name] == selects + blanks
        assert "select" not in b.levels_[name]
        column_values = values[:, names.index(name)]
        assert int(np.count_nonzero(column_values == len(b.levels_[name]))) == selects + blanks
    assert not np.isnan(values[:, names.index("lead_origin")]).any()
    assert b.levels_["lead_origin"][:2] == ["landing_page_submission", "api"]


def test_build_report_defaults_are_empty() -> None:
    report = BuildReport()
    assert report.summary() == {
        "rows": 0,
        "missing": {},
        "unseen": {},
        "clipped": {},
        "unknown_action_types": 0,
        "actions_after_cutoff": 0,
    }
    assert report.warnings_for(0) == []


# -- regressions found in review ----------------------------------------------------------


def test_an_action_a_nanosecond_after_the_cutoff_never_counts_on_either_path(
    sample_spec: FeatureSpec,
) -> None:
    b = _fitted(sample_spec)
    late = (AS_OF + pd.Timedelta(nanoseconds=500)).isoformat()
    assert late.endswith("00.000000500+00:00")
    leads = pd.DataFrame({"lead_id": ["L1"], "created_at": ["2025-06-01T00:00:00Z"]})
    actions = pd.DataFrame(
        {"lead_id": ["L1"], "action_type": ["pricing_page"], "occurred_at": [late]}
    )
    batch = b.build(leads, actions=actions, as_of=AS_OF)
    online = b.build_one(_lead(actions=[{"type": "pricing_page", "at": late}]))
    assert _col(batch, "pricing_page_count_1d")[0] == 0
    assert np.array_equal(batch.values, online.values, equal_nan=True)
    assert batch.report.actions_after_cutoff == online.report.actions_after_cutoff == 1


def test_records_from_a_pre_aggregated_table_keep_their_aggregates(
    sample_spec: FeatureSpec,
) -> None:
    b = _fitted(sample_spec)
    names = aggregated_columns(sample_spec)
    leads = pd.DataFrame([{"lead_id": "L1", **{c: 2.0 for c in names}}])
    batch = b.build(leads, as_of=AS_OF)
    records = frames_to_records(sample_spec, leads, None, AS_OF)
    assert set(names) <= set(records[0])
    assert np.array_equal(batch.values, b.build_one(records[0]).values, equal_nan=True)


def test_a_nan_like_string_and_a_real_nan_do_not_share_a_cached_code(
    sample_spec: FeatureSpec,
) -> None:
    b = _fitted(sample_spec)
    other = len(SENIORITY) + 1
    assert _col(b.build_one(_lead(seniority="nan")), "seniority")[0] == other
    assert _col(b.build_one(_lead(seniority=float("nan"))), "seniority")[0] == len(SENIORITY)
    assert _col(b.build_one(_lead(seniority=pd.NA)), "seniority")[0] == len(SENIORITY)


def test_records_take_the_as_of_argument_and_refuse_a_separate_actions_table(
    sample_spec: FeatureSpec,
) -> None:
    b = _fitted(sample_spec)
    lead = _lead(actions=[_at(0.5)])
    del lead["as_of"]
    values = b.transform([lead], as_of=AS_OF)
    assert values[0, list(b.get_feature_names_out()).index("pricing_page_count_1d")] == 1
    with pytest.raises(ValueError, match="carry their own 'actions'"):
        b.transform([lead], actions=pd.DataFrame())


def test_a_batch_mixing_actions_and_aggregates_is_refused_by_field(
    sample_spec: FeatureSpec,
) -> None:
    b = _fitted(sample_spec)
    with pytest.raises(FeatureError) as mixed:
        b.transform([_lead(actions=[_at(1)]), {"pricing_page_count_1d": 2}])
    assert mixed.value.field == "actions" and mixed.value.rows == [0]
    with pytest.raises(FeatureError) as partial:
        b.build_one({"pricing_page_count_1d": 2})
    assert "pre-aggregated action columns are absent" in str(partial.value)


def test_pd_na_and_missing_spellings_are_missing_in_every_kind(sample_spec: FeatureSpec) -> None:
    b = _fitted(sample_spec)
    m = b.build_one(
        _lead(seniority=pd.NA, company_size="N/A", annual_revenue=pd.NA, business_email=pd.NA)
    )
    assert _col(m, "seniority")[0] == len(SENIORITY)
    assert np.isnan(_col(m, "company_size")[0]) and np.isnan(_col(m, "annual_revenue")[0])
    assert np.isnan(_col(m, "business_email")[0])
    assert m.report.missing["company_size"] == 1


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("seniority", ["vp"], "not a single category"),
        ("company_size", True, "yes/no answer, not a number"),
        ("business_email", ["yes"], "not a yes/no answer"),
        ("created_at", "yesterday", "not an ISO-8601 timestamp"),
    ],
)
def test_values_of_the_wrong_shape_raise_a_feature_error_naming_the_field(
    sample_spec: FeatureSpec, field: str, value: Any, problem: str
) -> None:
    b = _fitted(sample_spec)
    with pytest.raises(FeatureError) as err:
        b.build_one(_lead(**{field: value}))
    assert err.value.field == field and err.value.rows == [0]
    assert problem in str(err.value)
