"""Outcomes become labels: the horizon, the already-qualified rule and rejections, by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from features.spec import FeatureSpec
from monitoring.labels import LabelRules, OutcomeTable, label_scores
from scorelog.history import LoggedOutcome

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def ns(when: datetime) -> int:
    return int(pd.Timestamp(when).value)


def outcome(
    lead: str, kind: str, at: float, stage: str | None = None, reason: str | None = None
) -> LoggedOutcome:
    return LoggedOutcome(lead, kind, stage, reason, day(at), day(at))


@pytest.fixture
def rules(sample_spec: FeatureSpec) -> LabelRules:
    return LabelRules.for_spec(sample_spec, horizon_days=30)


def test_labels_follow_the_horizon_and_the_ladder(rules: LabelRules) -> None:
    outcomes = [
        outcome("a", "stage_reached", 5, "mql"),  # within a's horizon
        outcome("b", "stage_reached", 45, "mql"),  # after b's horizon (score at day 0)
        outcome("c", "qualified", 10),  # sales confirmed: SQL, so MQL too
        outcome("d", "won", 20),  # a customer passed every scored stage
        outcome("e", "contacted", 3),  # says nothing about a stage
    ]
    table = OutcomeTable.build(outcomes, rules)
    leads = ["a", "b", "c", "d", "e", "f"]
    rows = label_scores(leads, np.full(6, ns(day(0))), table, rules, ns(day(60)))
    assert rows.keep.tolist() == [0, 1, 2, 3, 4, 5]
    assert rows.labels.tolist() == [[1, 0], [0, 0], [1, 1], [1, 1], [0, 0], [0, 0]]


def test_a_score_is_a_row_only_once_its_horizon_passed(rules: LabelRules) -> None:
    table = OutcomeTable.build([outcome("a", "stage_reached", 40, "sql")], rules)
    scored = np.array([ns(day(0)), ns(day(20)), ns(day(35))])
    rows = label_scores(["a", "a", "a"], scored, table, rules, ns(day(55)))
    # Day 35's horizon ends at day 65, after "now" (55): not a row yet, not a negative.
    assert rows.keep.tolist() == [0, 1]
    assert rows.labels.tolist() == [[0, 0], [1, 1]]
    assert rows.dropped == {
        "horizon_not_passed": 1,
        "already_qualified_at_score": 0,
        "excluded_by_rejection": 0,
    }


def test_leads_already_qualified_when_scored_are_not_rows(rules: LabelRules) -> None:
    table = OutcomeTable.build([outcome("a", "stage_reached", 10, "mql")], rules)
    rows = label_scores(["a", "a"], np.array([ns(day(5)), ns(day(12))]), table, rules, ns(day(90)))
    assert rows.keep.tolist() == [0]
    assert rows.dropped["already_qualified_at_score"] == 1


def test_rejections_label_or_exclude_by_reason(sample_spec: FeatureSpec) -> None:
    outcomes = [
        outcome("dup", "disqualified", 3, reason="duplicate"),
        outcome("fit", "disqualified", 3, reason="not_a_fit"),
        outcome("late", "disqualified", 50, reason="spam"),  # after the horizon: still a row
        outcome("none", "disqualified", 3),
    ]
    rules = LabelRules.for_spec(sample_spec, 30, {"not_a_fit": "exclude", "duplicate": "label"})
    table = OutcomeTable.build(outcomes, rules)
    leads = ["dup", "fit", "late", "none"]
    rows = label_scores(leads, np.full(4, ns(day(0))), table, rules, ns(day(90)))
    # Configured the other way round: not_a_fit excluded, duplicate a negative; an unknown
    # reason ("spam" is not configured here) and no reason count as negatives.
    assert [leads[i] for i in rows.keep] == ["dup", "late", "none"]
    assert rows.labels.tolist() == [[0, 0]] * 3
    assert rows.dropped["excluded_by_rejection"] == 1


def test_default_rejections_exclude_duplicates_and_spam(rules: LabelRules) -> None:
    outcomes = [
        outcome("s", "lost", 2, reason="spam"),
        outcome("t", "lost", 2, reason="bad_timing"),
    ]
    table = OutcomeTable.build(outcomes, rules)
    rows = label_scores(["s", "t"], np.full(2, ns(day(0))), table, rules, ns(day(90)))
    assert rows.keep.tolist() == [1]


def test_a_binary_spec_labels_its_one_stage(sample_spec: FeatureSpec) -> None:
    from features.spec import BinaryLabel

    spec = sample_spec.model_copy(
        update={"label": BinaryLabel(kind="binary", column="converted", stage="converted")}
    )
    rules = LabelRules.for_spec(spec, 30)
    outcomes = [outcome("a", "stage_reached", 5, "converted"), outcome("b", "qualified", 6)]
    table = OutcomeTable.build(outcomes, rules)
    rows = label_scores(["a", "b", "c"], np.full(3, ns(day(0))), table, rules, ns(day(90)))
    assert rows.labels.tolist() == [[1], [1], [0]]
