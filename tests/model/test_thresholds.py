"""Threshold policies, their parsing, stage consistency and grade bands."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from models.readiness import category_index
from training.thresholds import (
    Capacity,
    ChosenThreshold,
    PrecisionTarget,
    check_thresholds,
    choose_threshold,
    describe_policy,
    grade_bands,
    parse_policy,
    policy_from_dict,
)

# Sorted by score; cumulative precision: 1, 1, 1, .75, .8, .667, .571, .625, .556, .5
P_KNOWN = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
Y_KNOWN = np.array([1, 1, 1, 0, 1, 0, 0, 1, 0, 0])


def _chosen(stage: str, threshold: float) -> ChosenThreshold:
    return ChosenThreshold(
        stage=stage,
        threshold=threshold,
        policy={"kind": "precision", "target": 0.5},
        met=True,
        expected_precision=0.5,
        expected_recall=0.5,
        expected_volume_share=0.1,
        expected_per_week=None,
    )


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize(
    ("target", "threshold", "recall", "share"),
    [
        (1.0, 0.7, 0.6, 0.3),
        (0.75, 0.5, 0.8, 0.5),  # 0.6 (precision .75) also meets it, but 0.5 has more recall
        (0.6, 0.2, 1.0, 0.8),  # precision dips below 0.6 at 0.3 and recovers at 0.2
        (0.5, 0.05, 1.0, 1.0),
    ],
)
def test_precision_target_picks_lowest_qualifying_threshold(target, threshold, recall, share):
    chosen = choose_threshold("mql", Y_KNOWN, P_KNOWN, PrecisionTarget(target=target))
    assert chosen.met
    assert chosen.threshold == threshold
    assert chosen.expected_precision >= target
    assert chosen.expected_recall == pytest.approx(recall)
    assert chosen.expected_volume_share == pytest.approx(share)
    assert chosen.policy == {"kind": "precision", "target": target}
    assert chosen.expected_per_week is None


def test_precision_target_unreachable_is_flagged_not_met():
    y = [0, 1, 0, 1]
    p = [0.9, 0.8, 0.7, 0.6]  # cumulative precision 0, .5, .333, .5
    chosen = choose_threshold("sql", y, p, PrecisionTarget(target=0.9))
    assert not chosen.met
    assert chosen.threshold == 0.6  # best precision (.5), lowest threshold among the ties
    assert chosen.expected_precision == 0.5
    assert chosen.expected_recall == 1.0


def test_precision_target_respects_tied_scores():
    # Cutting at 0.9 flags both tied leads (precision .5); cutting at 0.5 gives .75.
    chosen = choose_threshold(
        "mql", [1, 0, 1, 1], [0.9, 0.9, 0.5, 0.5], parse_policy("precision:0.7")
    )
    assert chosen.threshold == 0.5
    assert chosen.expected_precision == 0.75


# --------------------------------------------------------------------------- capacity


def test_capacity_top_share_selects_that_share():
    rng = np.random.default_rng(11)
    p = rng.uniform(size=1000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    chosen = choose_threshold("mql", y, p, parse_policy("top:5%"))
    assert chosen.met
    assert chosen.expected_volume_share == pytest.approx(0.05)
    assert (p >= chosen.threshold).sum() == 50
    assert chosen.policy == {"kind": "capacity", "top_share": 0.05}


def test_capacity_never_exceeds_because_of_ties():
    p = np.r_[[0.9, 0.8, 0.8, 0.8], np.linspace(0.5, 0.1, 16)]
    y = np.r_[[1, 1, 0, 0], np.zeros(16)]
    chosen = choose_threshold("mql", y, p, Capacity(top_share=0.1))  # at most 2 leads
    assert chosen.met
    assert chosen.threshold == 0.9
    assert chosen.expected_volume_share == pytest.approx(0.05)


def test_capacity_top_tie_group_larger_than_capacity_is_not_met():
    chosen = choose_threshold("mql", [1, 0, 0, 1], [0.5] * 4, Capacity(top_share=0.25))
    assert not chosen.met
    assert chosen.threshold == 0.5
    assert chosen.expected_volume_share == 1.0


def test_capacity_per_week_uses_validation_weeks():
    p = np.linspace(0.99, 0.0, 1000)
    y = (np.arange(1000) % 3 == 0).astype(int)
    # 1000 leads over 10 weeks = 100 a week; 20 a week = top 20 %.
    chosen = choose_threshold("sql", y, p, parse_policy("weekly:20"), weeks=10)
    assert chosen.met
    assert chosen.expected_volume_share == pytest.approx(0.2)
    assert chosen.expected_per_week == pytest.approx(20.0)
    assert chosen.policy == {"kind": "capacity", "per_week": 20}


def test_capacity_per_week_above_volume_flags_everything():
    chosen = choose_threshold(
        "sql", [1, 0, 0, 0], [0.4, 0.3, 0.2, 0.1], Capacity(per_week=50), weeks=2
    )
    assert chosen.expected_volume_share == 1.0
    assert chosen.expected_per_week == 2.0


def test_capacity_per_week_needs_weeks():
    with pytest.raises(ValueError, match="weeks"):
        choose_threshold("sql", Y_KNOWN, P_KNOWN, Capacity(per_week=5))


def test_weeks_also_fill_expected_per_week_for_other_policies():
    chosen = choose_threshold("mql", Y_KNOWN, P_KNOWN, PrecisionTarget(target=1.0), weeks=0.5)
    assert chosen.expected_per_week == pytest.approx(6.0)  # 3 leads in half a week


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stage": "", "y": Y_KNOWN}, "non-empty"),
        ({"y": np.zeros(10)}, "no positive outcomes"),
        ({"weeks": 0.0}, "weeks must be positive"),
        ({"weeks": -1.0}, "weeks must be positive"),
    ],
)
def test_choose_threshold_rejects_bad_inputs(kwargs, message):
    args = {"stage": "mql", "y": Y_KNOWN, "weeks": None} | kwargs
    with pytest.raises(ValueError, match=message):
        choose_threshold(
            args["stage"], args["y"], P_KNOWN, PrecisionTarget(target=0.5), weeks=args["weeks"]
        )


# --------------------------------------------------------------------------- policies


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("precision:0.6", PrecisionTarget(target=0.6)),
        ("precision:60%", PrecisionTarget(target=0.6)),
        ("precision:1", PrecisionTarget(target=1.0)),
        ("top:5%", Capacity(top_share=0.05)),
        ("top:0.05", Capacity(top_share=0.05)),
        (" TOP: 5% ", Capacity(top_share=0.05)),
        ("top:100%", Capacity(top_share=1.0)),
        ("weekly:200", Capacity(per_week=200)),
    ],
)
def test_parse_policy_valid(text, expected):
    assert parse_policy(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unrecognised"),
        ("precision", "unrecognised"),
        ("precision:abc", "unrecognised"),
        ("monthly:10", "unrecognised"),
        ("weekly:2.5", "unrecognised"),
        ("top:-5%", "unrecognised"),
        ("top:5", "ambiguous"),
        ("precision:1.5", "ambiguous"),
        ("top:150%", "invalid"),
        ("top:0%", "invalid"),
        ("precision:0", "invalid"),
        ("weekly:0", "invalid"),
    ],
)
def test_parse_policy_invalid(text, message):
    with pytest.raises(ValueError, match=message):
        parse_policy(text)


def test_unrecognised_policy_lists_accepted_forms():
    with pytest.raises(ValueError, match=r"'precision:0.6'.*'top:5%'.*'weekly:200'"):
        parse_policy("bogus")


def test_capacity_needs_exactly_one_limit():
    with pytest.raises(ValidationError, match="exactly one"):
        Capacity()
    with pytest.raises(ValidationError, match="exactly one"):
        Capacity(top_share=0.1, per_week=10)


def test_policy_round_trips_through_chosen_threshold_dict():
    for policy in (PrecisionTarget(target=0.6), Capacity(top_share=0.05), Capacity(per_week=9)):
        chosen = choose_threshold("mql", Y_KNOWN, P_KNOWN, policy, weeks=1)
        assert policy_from_dict(chosen.policy) == policy


def test_describe_policy():
    assert describe_policy({"kind": "precision", "target": 0.6}) == "precision >= 60%"
    assert describe_policy({"kind": "precision", "target": 0.999}) == "precision >= 99.9%"
    assert describe_policy({"kind": "capacity", "top_share": 0.05}) == "top 5% of leads"
    assert describe_policy({"kind": "capacity", "per_week": 200}) == "top 200 leads per week"


# --------------------------------------------------------------------------- stages


@pytest.mark.parametrize(("t_mql", "t_sql"), [(0.3, 0.6), (0.6, 0.3)])
def test_check_thresholds_accepts_either_order_and_changes_nothing(t_mql, t_sql):
    chosen = [_chosen("mql", t_mql), _chosen("sql", t_sql)]
    check_thresholds(chosen)
    assert [c.threshold for c in chosen] == [t_mql, t_sql]


def test_check_thresholds_rejects_duplicate_stage_and_bad_threshold():
    with pytest.raises(ValueError, match="more than one threshold"):
        check_thresholds([_chosen("mql", 0.3), _chosen("mql", 0.4)])
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        check_thresholds([_chosen("mql", 1.5)])
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        check_thresholds([_chosen("mql", math.nan)])


def test_the_served_category_cascade_takes_the_highest_stage_met():
    """models.readiness.category_index is what the API and batch scoring serve."""
    P = np.array([[0.9, 0.7], [0.9, 0.3], [0.5, 0.1], [0.2, 0.1], [0.45, 0.45]])
    labels = np.array(["nurture", "mql", "sql"])
    in_order = labels[category_index(P, np.array([0.5, 0.6]))]
    assert in_order.tolist() == ["sql", "mql", "mql", "nurture", "nurture"]
    # t_sql below t_mql: the last lead is SQL-worthy by the SQL policy alone.
    assert labels[category_index(P, np.array([0.5, 0.4]))].tolist()[-1] == "sql"


# --------------------------------------------------------------------------- grades


def test_grade_bands_exact_quantiles():
    assert grade_bands(np.arange(101)) == {"A": 90.0, "B": 75.0, "C": 50.0}


def test_grade_bands_cut_the_stated_shares():
    scores = np.arange(100)
    bands = grade_bands(scores)
    assert bands == pytest.approx({"A": 89.1, "B": 74.25, "C": 49.5})
    assert (scores >= bands["A"]).sum() == 10
    assert (scores >= bands["B"]).sum() == 25
    assert (scores >= bands["C"]).sum() == 50


def test_grade_bands_monotone_and_custom_shares():
    rng = np.random.default_rng(2)
    bands = grade_bands(rng.beta(2, 5, size=1000) * 100)
    assert bands["A"] >= bands["B"] >= bands["C"]
    assert grade_bands(np.arange(101), shares=(0.2, 0.4, 0.6)) == {"A": 80.0, "B": 60.0, "C": 40.0}
    assert grade_bands(np.full(10, 42.0)) == {"A": 42.0, "B": 42.0, "C": 42.0}


@pytest.mark.parametrize(
    ("scores", "shares", "message"),
    [
        ([], (0.1, 0.2, 0.3), "non-empty"),
        ([1.0, math.nan], (0.1, 0.2, 0.3), "NaN"),
        ([-1.0, 50.0], (0.1, 0.2, 0.3), r"within \[0, 100\]"),
        ([50.0, 101.0], (0.1, 0.2, 0.3), r"within \[0, 100\]"),
        ([50.0], (0.25, 0.1, 0.5), "strictly increasing"),
        ([50.0], (0.0, 0.2, 0.5), "strictly increasing"),
        ([50.0], (0.2, 0.5, 1.0), "strictly increasing"),
        ([50.0], (0.1, 0.2), "exactly 3 values"),
        ([50.0], (0.1, 0.2, 0.3, 0.4, 0.5, 0.6), "exactly 3 values"),
    ],
)
def test_grade_bands_reject_bad_input(scores, shares, message):
    with pytest.raises(ValueError, match=message):
        grade_bands(np.asarray(scores, dtype=float), shares)
