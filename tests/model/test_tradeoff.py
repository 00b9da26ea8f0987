"""The precision-vs-capacity menu: policies side by side, the full curve, its plot."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from training.evaluation import threshold_stats
from training.thresholds import Capacity, PrecisionTarget, choose_threshold, parse_policy
from training.tradeoff import (
    CURVE_COLUMNS,
    TABLE_COLUMNS,
    capacity_curve,
    tradeoff_plot,
    tradeoff_table,
    weeks_spanned,
)

# Sorted by score; cumulative precision: 1, 1, 1, .75, .8, .667, .571, .625, .556, .5
P_KNOWN = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
Y_KNOWN = np.array([1, 1, 1, 0, 1, 0, 0, 1, 0, 0])


# --------------------------------------------------------------------------- table


def test_table_rows_hold_each_policys_threshold_and_outcome():
    table = tradeoff_table(
        Y_KNOWN, P_KNOWN, ["precision:0.75", "top:30%", "weekly:2"], weeks=2.0, stage="sql"
    )
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert list(table.index) == ["precision:0.75", "top:30%", "weekly:2"]
    assert table.index.name == "policy"
    # precision:0.75 -> lowest threshold keeping precision >= .75: 0.5 flags 5, 4 convert.
    row = table.loc["precision:0.75"]
    assert row["threshold"] == 0.5
    assert row["flagged"] == 5
    assert row["precision"] == pytest.approx(0.8)
    assert row["recall"] == pytest.approx(0.8)
    assert row["lift"] == pytest.approx(1.6)
    assert row["flagged_per_week"] == pytest.approx(2.5)
    assert row["met"]
    # top:30% -> 3 leads, all convert.
    row = table.loc["top:30%"]
    assert (row["threshold"], row["flagged"]) == (0.7, 3)
    assert row["share_flagged"] == pytest.approx(0.3)
    assert row["precision"] == pytest.approx(1.0)
    # weekly:2 over 2 weeks of 5 leads a week -> 40 % -> 4 leads.
    row = table.loc["weekly:2"]
    assert (row["threshold"], row["flagged"]) == (0.6, 4)
    assert row["flagged_per_week"] == pytest.approx(2.0)
    assert row["precision"] == pytest.approx(0.75)
    assert row["description"] == "top 2 leads per week"


@pytest.mark.parametrize("text", ["precision:0.6", "precision:1.0", "top:5%", "top:0.5"])
def test_table_agrees_with_training_policy_code(text):
    rng = np.random.default_rng(3)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    row = tradeoff_table(y, p, [text]).iloc[0]
    chosen = choose_threshold("stage", y, p, parse_policy(text))
    stats = threshold_stats(y, p, chosen.threshold)
    assert row["threshold"] == chosen.threshold
    assert row["met"] == chosen.met
    assert row["precision"] == pytest.approx(chosen.expected_precision)
    assert row["recall"] == pytest.approx(stats.recall)
    assert row["flagged"] == stats.volume


def test_policy_objects_are_labelled_in_words():
    table = tradeoff_table(
        Y_KNOWN, P_KNOWN, [PrecisionTarget(target=0.75), Capacity(top_share=0.3)]
    )
    assert list(table.index) == ["precision >= 75%", "top 30% of leads"]
    assert table["threshold"].tolist() == [0.5, 0.7]


def test_without_weeks_per_week_is_nan_and_weekly_policies_are_refused():
    table = tradeoff_table(Y_KNOWN, P_KNOWN, ["top:50%"])
    assert math.isnan(table.loc["top:50%", "flagged_per_week"])
    with pytest.raises(ValueError, match="weeks"):
        tradeoff_table(Y_KNOWN, P_KNOWN, ["weekly:3"])


def test_unreachable_precision_target_is_reported_not_hidden():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.9, 0.8, 0.7, 0.6])
    row = tradeoff_table(y, p, ["precision:0.9"]).iloc[0]
    assert not row["met"]


@pytest.mark.parametrize(
    ("policies", "weeks", "message"),
    [
        ([], None, "empty"),
        (["top:10%", "top:10%"], None, "twice"),
        (["best:10"], None, "unrecognised"),
        (["top:10%"], 0.0, "weeks must be positive"),
    ],
)
def test_bad_requests_are_refused(policies, weeks, message):
    with pytest.raises(ValueError, match=message):
        tradeoff_table(Y_KNOWN, P_KNOWN, policies, weeks=weeks)


def test_no_conversions_at_all_is_refused():
    with pytest.raises(ValueError, match="no positive"):
        tradeoff_table(np.zeros(4), np.array([0.4, 0.3, 0.2, 0.1]), ["top:50%"])


# --------------------------------------------------------------------------- curve


def test_curve_has_one_row_per_distinct_score_and_matches_threshold_stats():
    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([0.9, 0.7, 0.7, 0.4, 0.2, 0.2])
    curve = capacity_curve(y, p, weeks=3.0)
    assert list(curve.columns) == list(CURVE_COLUMNS)
    assert curve["threshold"].tolist() == [0.9, 0.7, 0.4, 0.2]
    assert curve["flagged"].tolist() == [1, 3, 4, 6]  # ties flagged together
    for _, row in curve.iterrows():
        stats = threshold_stats(y, p, row["threshold"])
        assert row["flagged"] == stats.volume
        assert row["precision"] == pytest.approx(stats.precision)
        assert row["recall"] == pytest.approx(stats.recall)
        assert row["flagged_per_week"] == pytest.approx(stats.volume / 3.0)
    last = curve.iloc[-1]
    assert (last["recall"], last["share_flagged"]) == (1.0, 1.0)
    assert last["precision"] == pytest.approx(y.mean())


def test_curve_without_conversions_has_nan_recall():
    curve = capacity_curve(np.zeros(3), np.array([0.3, 0.2, 0.1]))
    assert curve["recall"].isna().all()
    assert curve["flagged_per_week"].isna().all()
    assert (curve["precision"] == 0).all()


# --------------------------------------------------------------------------- weeks


def test_weeks_spanned():
    times = pd.Series(pd.to_datetime(["2026-01-01", "2026-01-15", None, "2026-01-08"], utc=True))
    assert weeks_spanned(times) == pytest.approx(2.0)
    assert weeks_spanned(times.iloc[:1]) is None
    assert weeks_spanned(pd.Series(pd.to_datetime(["2026-01-01"] * 3, utc=True))) is None


# --------------------------------------------------------------------------- plot


def test_plot_marks_each_policy():
    table = tradeoff_table(Y_KNOWN, P_KNOWN, ["precision:0.75", "weekly:2"], weeks=2.0)
    fig = tradeoff_plot(Y_KNOWN, P_KNOWN, weeks=2.0, table=table, stage="sql")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.startswith("precision:0.75") for label in labels)
    assert any(label.startswith("weekly:2") for label in labels)
    assert "sql" in ax.get_title()
    assert "per week" in ax.get_xlabel()


def test_plot_without_weeks_uses_share_of_leads():
    fig = tradeoff_plot(Y_KNOWN, P_KNOWN, table=tradeoff_table(Y_KNOWN, P_KNOWN, ["top:30%"]))
    ax = fig.axes[0]
    assert "Share of leads" in ax.get_xlabel()
    marked = [line for line in ax.get_lines() if line.get_label().startswith("top:30%")]
    assert marked[0].get_xdata()[0] == pytest.approx(0.3)
