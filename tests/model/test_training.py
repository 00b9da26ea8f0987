"""Training pipeline and model behaviour on the small synthetic CRM (no MLflow here)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.batch import frames_to_records
from features.spec import FeatureSpec
from models.readiness import NURTURE, ReadinessModel
from tests.sample import small_config
from training.dataset import AS_OF, TrainingSet, load_training_set, split
from training.pipeline import TrainOutcome, train


@pytest.fixture(scope="module")
def trained(sample_dir: Path, sample_spec: FeatureSpec) -> tuple[TrainingSet, TrainOutcome]:
    config = small_config(sample_dir)
    data = load_training_set(sample_spec, config)
    return data, train(sample_spec, config, data, split(data, sample_spec, config))


def test_snapshots_are_labelled_from_history_within_the_horizon(
    trained: tuple[TrainingSet, TrainOutcome],
) -> None:
    data, _ = trained
    # Three snapshots per lead (7, 14 and 30 days after it arrived).
    assert len(data) + data.dropped["horizon_not_observed"] == 3 * 3000
    assert 0 < data.dropped["horizon_not_observed"] < 300  # only the newest leads
    assert list(data.labels.columns) == ["mql", "sql"]
    assert (data.labels["sql"] <= data.labels["mql"]).all()
    assert 0.18 < data.labels["mql"].mean() < 0.32
    assert 0.03 < data.labels["sql"].mean() < 0.12
    created = pd.to_datetime(data.leads["created_at"], utc=True)
    ages = (data.leads[AS_OF] - created).dt.days
    assert set(ages) == {7, 14, 30}
    assert (data.leads.groupby("lead_id")[AS_OF].count() <= 3).all()


def test_time_split_puts_the_newest_leads_in_test(
    trained: tuple[TrainingSet, TrainOutcome], sample_spec: FeatureSpec, sample_dir: Path
) -> None:
    data, _ = trained
    parts = split(data, sample_spec, small_config(sample_dir))
    as_of = data.leads[AS_OF]
    assert parts.kind == "time"
    # Leads (all their snapshots together) are ordered by their first cut-off.
    first = data.leads.groupby("lead_id")[AS_OF].transform("min")
    assert first.iloc[parts.train].max() <= first.iloc[parts.validation].min()
    assert first.iloc[parts.validation].max() <= first.iloc[parts.test].min()
    ids = data.leads["lead_id"]
    assert not set(ids.iloc[parts.train]) & set(ids.iloc[parts.test])
    assert not set(ids.iloc[parts.train]) & set(ids.iloc[parts.validation])
    assert len(parts.train) + parts.embargoed + len(parts.validation) + len(parts.test) == len(data)
    # Embargo: no training label (cut-off + 90 days) reaches into the validation period.
    horizon = pd.Timedelta(days=90)
    assert (as_of.iloc[parts.train] + horizon).max() <= as_of.iloc[parts.validation].min()
    assert parts.embargoed > 0
    test_leads = ids.iloc[parts.test].nunique()
    assert test_leads == pytest.approx(0.2 * ids.nunique(), abs=3)


def test_model_ranks_close_to_the_oracle_and_beats_chance(
    trained: tuple[TrainingSet, TrainOutcome],
) -> None:
    _, outcome = trained
    metrics = outcome.metrics()
    for stage in ("mql", "sql"):
        assert metrics[f"test_{stage}_roc_auc"] > 0.7
        assert metrics[f"oracle_share_test_{stage}_roc_auc"] > 0.9
        assert metrics[f"baseline_test_{stage}_roc_auc"] > 0.65
        assert metrics[f"test_{stage}_lift_at_10"] > 1.5


def test_probabilities_are_calibrated_and_ordered_along_the_funnel(
    trained: tuple[TrainingSet, TrainOutcome],
) -> None:
    _, outcome = trained
    P = outcome.model.probabilities(outcome.X_test)
    assert P.shape == (len(outcome.X_test), 2)
    assert np.all(P[:, 1] <= P[:, 0])
    assert np.all((P > 0) & (P < 1))
    for r in outcome.stages:
        # ~600 test leads: calibration error within a few points, mean within ~3 sd of noise
        # (validation and test are different months, each a few hundred leads).
        assert r.metrics.ece < 0.06
        assert abs(r.p_test.mean() - r.y_test.mean()) < 0.06


def test_thresholds_meet_their_precision_policy_on_validation(
    trained: tuple[TrainingSet, TrainOutcome],
) -> None:
    _, outcome = trained
    for r in outcome.stages:
        assert r.threshold.policy == {"kind": "precision", "target": 0.5}
        # Met exactly when validation precision reaches the target (SQL may not, on 450
        # validation leads with ~35 SQLs); MQL with ~100 positives always does.
        assert r.threshold.met == (r.threshold.expected_precision >= 0.5)
        assert outcome.model.thresholds[r.stage] == r.threshold.threshold


def test_mql_threshold_reaches_its_target(trained: tuple[TrainingSet, TrainOutcome]) -> None:
    mql = trained[1].stages[0].threshold
    assert mql.stage == "mql" and mql.met and mql.expected_precision >= 0.5


def test_grades_and_categories_follow_the_stored_bands_and_thresholds(
    trained: tuple[TrainingSet, TrainOutcome],
) -> None:
    _, outcome = trained
    model = outcome.model
    bands = model.grade_bands
    assert bands["A"] >= bands["B"] >= bands["C"]
    frame = model.score_matrix(outcome.X_test)
    assert set(frame["grade"]) <= {"A", "B", "C", "D"}
    assert (frame.loc[frame["grade"] == "A", "score"] >= bands["A"]).all()
    assert (frame.loc[frame["grade"] == "D", "score"] < bands["C"]).all()
    t = model.thresholds
    sql = frame["category"] == "sql"
    assert (frame.loc[sql, "p_sql"] >= t["sql"]).all()
    nurture = frame["category"] == NURTURE
    assert (frame.loc[nurture, "p_mql"] < t["mql"]).all()
    assert frame["score"].between(0, 100).all()


def test_same_data_and_seed_give_the_same_metrics(
    sample_dir: Path, sample_spec: FeatureSpec, trained: tuple[TrainingSet, TrainOutcome]
) -> None:
    config = small_config(sample_dir, baseline=False)
    data = load_training_set(sample_spec, config)
    again = train(sample_spec, config, data, split(data, sample_spec, config))
    first = {k: v for k, v in trained[1].metrics().items() if k.startswith("test_")}
    second = {k: v for k, v in again.metrics().items() if k.startswith("test_")}
    assert first == second


def test_save_and_load_give_identical_scores_and_reasons(
    trained: tuple[TrainingSet, TrainOutcome], tmp_path: Path
) -> None:
    data, outcome = trained
    model = outcome.model
    loaded = ReadinessModel.load(model.save(tmp_path / "model"))
    records = frames_to_records(model.builder.spec, data.leads.head(50), data.actions)
    for record in records:
        assert loaded.score_one(record).to_dict() == model.score_one(record).to_dict()
    assert not list(tmp_path.glob("**/*.pkl"))


def _score(model: ReadinessModel, lead: dict[str, Any]) -> int:
    return model.score_one(lead, reasons=0).score


def _margins(model: ReadinessModel, lead: dict[str, Any]) -> np.ndarray:
    X = model.builder.build_one(lead).values
    return np.array([h.margin(X)[0] for h in model.heads])


def test_a_recent_demo_request_never_lowers_readiness(
    trained: tuple[TrainingSet, TrainOutcome],
) -> None:
    data, outcome = trained
    model = outcome.model
    records = frames_to_records(model.builder.spec, data.leads.head(200), data.actions)
    raised = 0
    for lead in records:
        more = copy.deepcopy(lead)
        at = pd.Timestamp(lead["as_of"]) - pd.Timedelta(hours=2)
        more["actions"].append({"type": "demo_request", "at": at.isoformat()})
        before, after = _margins(model, lead), _margins(model, more)
        assert np.all(after >= before - 1e-12)
        assert _score(model, more) >= _score(model, lead)
        raised += int(_score(model, more) > _score(model, lead))
    assert raised > 50  # it is not just "never lower": it usually helps


def test_name_and_email_never_change_the_score(trained: tuple[TrainingSet, TrainOutcome]) -> None:
    data, outcome = trained
    model = outcome.model
    for lead in frames_to_records(model.builder.spec, data.leads.head(100), data.actions):
        renamed = {**lead, "first_name": "Zebedee", "email": "z@example.org"}
        assert model.score_one(renamed).to_dict() == model.score_one(lead).to_dict()


def test_reasons_are_words_about_the_lead_with_signed_effects(
    trained: tuple[TrainingSet, TrainOutcome],
) -> None:
    data, outcome = trained
    model = outcome.model
    lead = frames_to_records(model.builder.spec, data.leads.head(1), data.actions)[0]
    lead["actions"] = [
        {
            "type": "pricing_page",
            "at": (pd.Timestamp(lead["as_of"]) - pd.Timedelta(days=d)).isoformat(),
        }
        for d in (1.5, 2.5, 3.5)
    ]
    result = model.score_one(lead, reasons=3)
    positive, negative = result.reasons["positive"], result.reasons["negative"]
    assert 1 <= len(positive) <= 3 and len(negative) <= 3
    assert all(r.effect > 0 for r in positive) and all(r.effect < 0 for r in negative)
    assert all(isinstance(r.text, str) and r.text for r in positive + negative)
    x = model.builder.build_one(lead).values[0]
    words = model.reasons.phrase
    assert (
        words("pricing_page", x) == "pricing page visits: 3 in the last 7 days (latest yesterday)"
    )
    assert words("demo_request", x) == "no demo requests yet"
    assert words("activity", x) == "active on 3 days in the last 90 days"


def test_batch_scores_equal_single_lead_scores(trained: tuple[TrainingSet, TrainOutcome]) -> None:
    data, outcome = trained
    model = outcome.model
    leads = data.leads.head(300)
    batch = model.score_frame(leads, data.actions)
    singles = [
        model.score_one(r, reasons=0)
        for r in frames_to_records(model.builder.spec, leads, data.actions)
    ]
    assert batch["score"].tolist() == [s.score for s in singles]
    assert batch["category"].tolist() == [s.category for s in singles]
    np.testing.assert_array_equal(batch["p_sql"], [s.probabilities["sql"] for s in singles])


def test_the_training_reference_travels_with_the_model(
    trained: tuple[TrainingSet, TrainOutcome], tmp_path: Path
) -> None:
    """Binned training distributions and the thresholds' promise survive save and load."""
    from models.reference import HORIZON_KEY, promises_of, reference_of
    from monitoring.psi import psi_against

    _, outcome = trained
    model = outcome.model
    model.save(tmp_path / "m")
    loaded = ReadinessModel.load(tmp_path / "m")
    reference = reference_of(loaded.metadata)
    assert reference is not None
    names = [str(n) for n in model.builder.get_feature_names_out()]
    assert list(reference.features) == names
    assert list(reference.probabilities) == ["mql", "sql"]
    for dist in [*reference.features.values(), *reference.probabilities.values()]:
        assert sum(dist.shares) == pytest.approx(1.0)
    seniority = reference.features["seniority"]
    assert seniority.kind == "categorical"
    assert seniority.labels[-2:] == ["__missing__", "__other__"]
    assert 0.02 < seniority.shares[seniority.labels.index("__missing__")] < 0.12
    assert reference.probabilities["sql"].kind == "numeric"
    assert len(reference.probabilities["sql"].labels) == 11  # missing + 10 quantile bins
    # The held-out rows come from the same population: no drift worth a word.
    X = outcome.X_test
    for j, name in enumerate(names):
        assert psi_against(reference.features[name], X[:, j])[0] < 0.1, name
    promise = promises_of(loaded.metadata)
    assert set(promise) == {"mql", "sql"}
    assert promise["sql"].threshold == pytest.approx(model.thresholds["sql"])
    assert 0.3 < promise["sql"].precision <= 1.0
    assert loaded.metadata[HORIZON_KEY] == 90.0
