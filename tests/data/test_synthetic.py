"""The synthetic CRM: reproducible, realistic enough, messy on purpose, with an honest oracle."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features import synthetic as syn
from features.spec import (
    LIFECYCLE_STAGES,
    CategoricalField,
    FeatureSpec,
    load_spec,
    normalise_token,
)
from features.synthetic import SampleConfig, SampleData, generate, write
from leadscore.cli import main as leadscore

N = 4_000
STAGES = list(LIFECYCLE_STAGES)
P_COLUMNS = {
    "mql": "p_mql",
    "sql": "p_sql",
    "opportunity": "p_opportunity",
    "customer": "p_customer",
}
CATEGORICAL = ["seniority", "department", "industry", "country", "acquisition_source"]
DEMOGRAPHIC = [*CATEGORICAL, "company_size", "annual_revenue", "business_email"]
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.fixture(scope="module")
def config() -> SampleConfig:
    return SampleConfig(n_leads=N, seed=11)


@pytest.fixture(scope="module")
def data(config: SampleConfig) -> SampleData:
    return generate(config)


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return load_spec("sample_crm")


@pytest.fixture(scope="module")
def written(data: SampleData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write(data, tmp_path_factory.mktemp("sample"))


def _read(path: Path) -> pd.DataFrame:
    """Read a written table exactly as text, so missing-value spellings survive."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _furthest(data: SampleData) -> pd.Series:
    """Index of the furthest stage reached per lead, aligned with ``truth``."""
    rank = data.history["stage"].map({s: i for i, s in enumerate(STAGES)})
    furthest = rank.groupby(data.history["lead_id"]).max()
    return furthest.reindex(data.truth["lead_id"]).reset_index(drop=True)


def _missing(values: pd.Series, spec: FeatureSpec) -> pd.Series:
    tokens = {normalise_token(t) for t in spec.missing_tokens}
    return values.fillna("").astype(str).map(normalise_token).isin(tokens)


def _levels(field: CategoricalField) -> set[str]:
    """A field's levels as a set (the spec's type admits None; a loaded spec never has it)."""
    assert field.levels is not None
    return set(field.levels)


def _fold(values: pd.Series, field: CategoricalField) -> pd.Series:
    return values.astype(str).map(normalise_token).map(lambda t: field.aliases.get(t, t))


# --- reproducibility -------------------------------------------------------------------


def test_same_seed_gives_identical_frames_and_bytes(tmp_path: Path) -> None:
    cfg = SampleConfig(n_leads=1_500, seed=3)
    first, second = generate(cfg), generate(cfg)
    for name in ("leads", "actions", "history", "truth"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
    paths_a = write(first, tmp_path / "a")
    paths_b = write(second, tmp_path / "b")
    for key in paths_a:
        assert paths_a[key].read_bytes() == paths_b[key].read_bytes(), key


def test_different_seed_gives_different_data() -> None:
    a = generate(SampleConfig(n_leads=1_500, seed=3))
    b = generate(SampleConfig(n_leads=1_500, seed=4))
    assert not a.leads["created_at"].equals(b.leads["created_at"])
    assert not a.truth["p_mql"].equals(b.truth["p_mql"])
    assert len(a.actions) != len(b.actions)


# --- the funnel and the oracle ---------------------------------------------------------


def test_funnel_rates_are_in_the_target_ranges(data: SampleData) -> None:
    rates = syn.funnel_rates(data.history, N)
    assert rates["lead"] == 1.0
    assert 0.18 <= rates["mql"] <= 0.32
    assert 0.03 < rates["sql"] < 0.10
    assert 0.015 <= rates["opportunity"] <= 0.06
    assert 0.004 <= rates["customer"] <= 0.025
    shares = [rates[s] for s in STAGES]
    assert shares == sorted(shares, reverse=True)


def test_every_stage_above_lead_is_reached_after_the_decision(
    data: SampleData, config: SampleConfig
) -> None:
    h = data.history.merge(data.truth[["lead_id", "decision_at"]], on="lead_id")
    h = h.merge(data.leads[["lead_id", "created_at"]], on="lead_id")
    lead_rows = h["stage"] == "lead"
    assert (h.loc[lead_rows, "reached_at"] == h.loc[lead_rows, "created_at"]).all()
    assert lead_rows.sum() == N
    later = h[~lead_rows]
    assert (later["reached_at"] > later["decision_at"]).all()
    mql = h[h["stage"] == "mql"]
    gap = mql["reached_at"] - mql["decision_at"]
    assert gap.min() >= timedelta(days=1)
    assert gap.max() <= timedelta(days=20)
    decision_gap = data.truth["decision_at"] - data.leads["created_at"]
    assert (decision_gap == timedelta(days=config.decision_days)).all()


def test_history_is_a_lifecycle_prefix_in_time_order(data: SampleData) -> None:
    h = data.history
    rank = h["stage"].map({s: i for i, s in enumerate(STAGES)})
    assert rank.notna().all()
    position = h.groupby("lead_id").cumcount()
    assert (rank == position).all(), "stages skip or repeat"
    steps = h.groupby("lead_id")["reached_at"].diff().dropna()
    assert (steps >= timedelta(days=1)).all()
    assert (steps[rank.loc[steps.index] >= 2] >= timedelta(days=3)).all()
    assert (steps[rank.loc[steps.index] >= 2] <= timedelta(days=40)).all()


def test_truth_probabilities_are_proper_and_monotone(data: SampleData) -> None:
    p = data.truth[list(P_COLUMNS.values())].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    assert (np.diff(p, axis=1) <= 0).all(), "p_mql >= p_sql >= p_opportunity >= p_customer"
    assert data.truth["lead_id"].tolist() == data.leads["lead_id"].tolist()


def test_oracle_ranks_and_calibrates_the_realised_outcome(data: SampleData) -> None:
    furthest = _furthest(data)
    for k, (stage, col) in enumerate(P_COLUMNS.items(), start=1):
        reached = furthest >= k
        p = data.truth[col]
        assert abs(p.mean() - reached.mean()) < 4 * np.sqrt(p.mean() / N) + 1e-3, stage
        if stage in ("mql", "sql"):
            assert roc_auc_score(reached, p) > 0.75, stage
    top = data.truth["p_mql"] >= data.truth["p_mql"].quantile(0.8)
    assert (furthest[top] >= 1).mean() > 3 * (furthest[~top] >= 1).mean()


def test_truth_is_a_function_of_what_is_known_at_the_decision(
    data: SampleData, config: SampleConfig
) -> None:
    """Rebuild the oracle from the written actions cut at decision_at: it must not move."""
    streams = syn._Streams.from_seed(config.seed)
    profile = syn._draw_profile(config, streams.profile)
    decision_s = profile.created + config.decision_days * 86_400
    lead = pd.Index(data.leads["lead_id"]).get_indexer(data.actions["lead_id"])
    seconds = data.actions["occurred_at"].dt.as_unit("s").astype("int64").to_numpy()
    known = seconds <= decision_s[lead]
    kind = data.actions["action_type"].map({t: i for i, t in enumerate(syn.ACTION_TYPES)})
    cut = syn._Actions(
        lead=lead[known].astype(np.int64),
        at=seconds[known],
        kind=kind.to_numpy()[known].astype(np.int8),
    )
    conditional = syn._stage_probabilities(profile, syn._observe(cut, decision_s))
    rebuilt = np.cumprod(conditional, axis=1)
    expected = data.truth[list(P_COLUMNS.values())].to_numpy()
    np.testing.assert_allclose(rebuilt, expected, rtol=1e-12)
    assert 0.3 < known.mean() < 0.9, "a good share of actions happen after the decision"


# --- actions ---------------------------------------------------------------------------


def test_actions_belong_to_known_leads_within_the_horizon(
    data: SampleData, config: SampleConfig, spec: FeatureSpec
) -> None:
    a = data.actions.merge(data.leads[["lead_id", "created_at"]], on="lead_id", how="left")
    assert a["created_at"].notna().all()
    assert set(a["lead_id"].astype(str)) <= set(data.leads["lead_id"])
    assert (a["occurred_at"] >= a["created_at"]).all()
    assert (a["occurred_at"] < a["created_at"] + timedelta(days=config.horizon_days)).all()
    assert spec.actions is not None
    assert set(a["action_type"].astype(str)) == {t.name for t in spec.actions.types}
    assert (a["occurred_at"].dt.microsecond == 0).all()


def test_action_volume_and_mix_follow_intent(data: SampleData, config: SampleConfig) -> None:
    per_lead = data.actions.groupby("lead_id", observed=False).size()
    assert len(per_lead) == N
    assert 0.85 * config.mean_actions < per_lead.mean() < 1.15 * config.mean_actions
    assert 0.05 < (per_lead <= 2).mean() < 0.3, "some leads are almost silent"
    reached_mql = set(data.history.loc[data.history["stage"] == "mql", "lead_id"])
    buyer = data.actions["lead_id"].astype(str).isin(reached_mql)
    strong = data.actions["action_type"].isin(["demo_request", "trial_signup", "pricing_page"])
    assert strong[buyer].mean() > 1.5 * strong[~buyer].mean()


def test_actions_come_in_bursts(data: SampleData) -> None:
    gaps = data.actions.groupby("lead_id", observed=True)["occurred_at"].diff().dropna()
    assert (gaps < timedelta(hours=1)).mean() > 0.5, "most actions follow another closely"
    assert (gaps > timedelta(days=1)).mean() > 0.05, "sessions are days apart"


# --- profile realism and mess ----------------------------------------------------------


def test_lead_ids_and_creation_times(data: SampleData, config: SampleConfig) -> None:
    ids = data.leads["lead_id"]
    assert ids.iloc[0] == "L0000001"
    assert ids.str.fullmatch(r"L\d{7}").all() and ids.is_unique
    created = data.leads["created_at"]
    assert created.is_monotonic_increasing
    assert created.min() >= config.start and created.max() < config.end
    assert list(data.leads.columns) == list(syn.LEAD_COLUMNS)


def test_firmographics_are_skewed_and_correlated(data: SampleData) -> None:
    size = data.leads["company_size"].astype("float")
    revenue = data.leads["annual_revenue"].astype("float")
    assert size.min() >= 1 and size.max() <= 500_000
    assert size.mean() > 2 * size.median(), "log-normal: a long right tail"
    both = size.notna() & revenue.notna()
    assert np.corrcoef(np.log(size[both]), np.log1p(revenue[both]))[0, 1] > 0.7


def test_missing_values_per_demographic_column(data: SampleData, spec: FeatureSpec) -> None:
    spellings: set[str] = set()
    for col in DEMOGRAPHIC:
        values = data.leads[col]
        missing = values.isna() if col in ("company_size", "annual_revenue") else None
        if missing is None:
            missing = _missing(values, spec)
            spellings |= set(values[missing])
        assert 0.02 <= missing.mean() <= 0.10, col
    assert {"", "N/A", "Select", "null"} <= spellings


def test_messy_spellings_are_present(data: SampleData) -> None:
    leads = data.leads
    assert leads["seniority"].isin(["VP", "Vice-President", "Vice President"]).any()
    assert leads["seniority"].isin(["CEO", "CTO", "CFO", "Owner"]).any()
    assert leads["country"].isin(["USA", "United States"]).any()
    assert leads["country"].isin(["UK", "United Kingdom"]).any()
    text = pd.concat([leads[c] for c in CATEGORICAL])
    assert (text != text.str.strip()).mean() > 0.005, "stray spaces"
    assert (text.str.isupper() & (text.str.len() > 3)).any(), "shouting"
    assert 0.1 < (text != text.str.strip().str.lower()).mean() < 0.5


def test_categoricals_fold_mostly_into_the_spec_levels(data: SampleData, spec: FeatureSpec) -> None:
    unseen_total = 0
    for col in CATEGORICAL:
        field = spec.field(col)
        assert isinstance(field, CategoricalField)
        values = data.leads[field.source]
        present = values[~_missing(values, spec)]
        in_levels = _fold(present, field).isin(_levels(field))
        assert in_levels.mean() >= 0.98, col
        assert (~in_levels).mean() < 0.01, col
        unseen_total += int((~in_levels).sum())
    assert unseen_total > 0, "a few values the spec has never seen"
    industry = spec.field("industry")
    assert isinstance(industry, CategoricalField)
    assert "agriculture" in set(_fold(data.leads["industry"], industry))


def test_designed_spellings_fold_to_their_level(spec: FeatureSpec) -> None:
    for table in (syn._SENIORITY, syn._DEPARTMENT, syn._INDUSTRY, syn._COUNTRY, syn._SOURCE):
        field = spec.field(table.name)
        assert isinstance(field, CategoricalField)
        assert _levels(field) <= set(table.values), table.name
        for level in table.levels:
            folded = {
                field.aliases.get(normalise_token(s), normalise_token(s)) for s in level.spellings
            }
            if level.value in _levels(field):
                assert folded == {level.value}, (table.name, level.value)
            else:
                assert not folded & _levels(field), (table.name, level.value)


def test_business_email_agrees_with_the_address(data: SampleData) -> None:
    flag = data.leads["business_email"].str.strip().str.lower()
    free = data.leads["email"].str.split("@").str[1].isin(["gmail.com", "yahoo.com", "outlook.com"])
    assert data.leads["email"].str.fullmatch(r"[a-z0-9._]+@[a-z.]+").all()
    assert not free[flag.isin(["yes", "true", "1"])].any()
    assert free[flag.isin(["no", "false", "0"])].all()
    assert 0.5 < (flag.isin(["yes", "true", "1"])).mean() < 0.9


def test_owner_notes_leak_only_for_sales_qualified_leads(data: SampleData) -> None:
    furthest = _furthest(data)
    noted = data.leads["owner_notes"] != ""
    assert not noted[furthest < 2].any()
    assert noted[furthest >= 2].mean() > 0.8


# --- written files, spec, CLI ----------------------------------------------------------


def test_written_csvs_have_the_exact_columns_and_iso_timestamps(
    written: dict[str, Path], data: SampleData
) -> None:
    assert {p.name for p in written.values()} == set(syn.FILE_NAMES.values())
    expected = {
        "leads": syn.LEAD_COLUMNS,
        "actions": syn.ACTION_COLUMNS,
        "history": syn.HISTORY_COLUMNS,
        "truth": syn.TRUTH_COLUMNS,
    }
    stamp = {"leads": "created_at", "actions": "occurred_at", "history": "reached_at"}
    stamp["truth"] = "decision_at"
    for key, path in written.items():
        frame = _read(path)
        assert list(frame.columns) == list(expected[key]), key
        assert len(frame) == len(getattr(data, key)), key
        assert frame[stamp[key]].str.fullmatch(ISO_UTC).all(), key
    actions = _read(written["actions"])
    parsed = pd.to_datetime(actions["occurred_at"], utc=True)
    assert (parsed.to_numpy() == data.actions["occurred_at"].to_numpy()).all()


def test_written_numbers_stay_numeric(written: dict[str, Path], data: SampleData) -> None:
    leads = _read(written["leads"])
    for col in ("company_size", "annual_revenue"):
        raw = leads[col]
        assert raw.str.fullmatch(r"\d*").all(), col
        assert ((raw == "") == data.leads[col].isna().to_numpy()).all(), col
    truth = pd.read_csv(written["truth"])
    np.testing.assert_allclose(truth["p_mql"], data.truth["p_mql"], rtol=1e-5)
    assert ((truth["p_customer"] > 0) & (truth["p_customer"] < 1)).all()


def test_the_spec_describes_the_generated_tables(spec: FeatureSpec) -> None:
    assert spec.actions is not None
    assert [t.name for t in spec.actions.types] == list(syn.ACTION_TYPES)
    assert spec.actions.lead_id_column == syn.ACTION_COLUMNS[0]
    assert spec.actions.type_column == syn.ACTION_COLUMNS[1]
    assert spec.actions.timestamp_column == syn.ACTION_COLUMNS[2]
    assert {f.source for f in spec.fields} | {spec.id_column, spec.created_at_column} == set(
        syn.LEAD_COLUMNS
    )
    label = spec.label
    assert label.kind == "lifecycle"
    assert list(label.stages) == STAGES
    assert (
        label.history_lead_id_column,
        label.history_stage_column,
        label.history_timestamp_column,
    ) == syn.HISTORY_COLUMNS


@pytest.mark.parametrize(
    "bad",
    [
        {"n_leads": 0},
        {"decision_days": 0},
        {"decision_days": 120},
        {"mean_actions": 0.0},
        {"missing_rate": 0.5},
        {"messy_rate": 1.5},
        {"start": SampleConfig().end, "end": SampleConfig().start},
    ],
)
def test_config_refuses_impossible_settings(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SampleConfig(**bad)


def test_cli_writes_the_files_and_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sample"
    assert leadscore(["data", "--n-leads", "500", "--seed", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "leads 500" in printed
    assert re.search(r"reached mql\s+\d+\.\d+%", printed)
    assert re.search(r"generated in \d+\.\ds", printed)
    assert sorted(p.name for p in out.iterdir()) == sorted(syn.FILE_NAMES.values())
    assert len(_read(out / "leads.csv")) == 500


def test_cli_reports_a_bad_setting(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert leadscore(["data", "--n-leads", "0", "--out", str(tmp_path)]) == 2
    assert "n_leads" in capsys.readouterr().err
