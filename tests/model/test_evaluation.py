"""Pure evaluation metrics: exact values on hand-made data, tolerances on synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from training.evaluation import (
    StageMetrics,
    ThresholdStats,
    calibration_bins,
    cumulative_gains,
    expected_calibration_error,
    lift_at,
    oracle_share,
    stage_metrics,
    threshold_stats,
    validate_inputs,
)


def _calibrated_groups(shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Three score groups whose observed rates are exactly 0.2, 0.5 and 0.8."""
    y = np.array([1] * 2 + [0] * 8 + [1] * 5 + [0] * 5 + [1] * 8 + [0] * 2)
    p = np.repeat([0.2, 0.5, 0.8], 10) + shift
    return y, p


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1], [0.5], "same length"),
        ([[0, 1]], [[0.5, 0.5]], "1-D"),
        ([], [], "empty"),
        ([0, 1], [0.5, 1.2], r"within \[0, 1\]"),
        ([0, 1], [-0.1, 0.5], r"within \[0, 1\]"),
        ([0, 1], [0.5, math.nan], "p contains 1 NaN"),
        ([0, math.nan], [0.5, 0.5], "y_true contains 1 NaN"),
        ([0, 2], [0.5, 0.5], "only 0 and 1"),
        (["a", "b"], [0.5, 0.5], "numeric"),
    ],
)
def test_invalid_inputs_raise_value_error_with_message(y, p, message):
    with pytest.raises(ValueError, match=message):
        validate_inputs(y, p)
    with pytest.raises(ValueError, match=message):
        stage_metrics(y, p)


def test_validate_accepts_bools_and_floats():
    y, p = validate_inputs([True, False, True], [1, 0, 0.5])
    assert y.dtype == np.int64
    assert y.tolist() == [1, 0, 1]
    assert p.tolist() == [1.0, 0.0, 0.5]


# --------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_ece_is_zero_when_perfectly_calibrated(strategy):
    y, p = _calibrated_groups()
    assert expected_calibration_error(y, p, strategy=strategy) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_ece_equals_a_uniform_shift(strategy):
    y, p = _calibrated_groups(shift=0.1)
    assert expected_calibration_error(y, p, strategy=strategy) == pytest.approx(0.1, abs=1e-12)


def test_ece_on_synthetic_data():
    rng = np.random.default_rng(7)
    p = rng.uniform(0.0, 0.9, size=100_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, p + 0.1) == pytest.approx(0.1, abs=0.01)


def test_ece_weights_bins_by_lead_count():
    # 3 leads at 0.0 (none convert: gap 0) and 1 lead at 0.5 that converts (gap 0.5).
    y = [0, 0, 0, 1]
    p = [0.0, 0.0, 0.0, 0.5]
    assert expected_calibration_error(y, p, strategy="uniform") == pytest.approx(0.125)


def test_calibration_bins_put_probability_one_in_last_uniform_bin():
    bins = calibration_bins([0, 1, 1], [0.05, 0.95, 1.0], n_bins=10, strategy="uniform")
    assert bins.count.tolist() == [1, 2]
    assert bins.lower.tolist() == pytest.approx([0.0, 0.9])
    assert bins.upper.tolist() == pytest.approx([0.1, 1.0])
    assert bins.observed_rate.tolist() == [0.0, 1.0]


def test_calibration_bins_survive_identical_scores():
    bins = calibration_bins([0, 1, 1, 0], [0.3] * 4)
    assert bins.count.tolist() == [4]
    assert bins.mean_predicted.tolist() == pytest.approx([0.3])
    assert bins.observed_rate.tolist() == [0.5]


def test_ece_rejects_bad_bins_and_strategy():
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0, 1], [0.2, 0.8], n_bins=0)
    with pytest.raises(ValueError, match="strategy"):
        expected_calibration_error([0, 1], [0.2, 0.8], strategy="kmeans")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ranking


@pytest.mark.parametrize(
    ("n_pos", "expected"),
    [
        (50, 10.0),  # base rate 5 % < 10 %: capped at 1 / fraction
        (200, 5.0),  # base rate 20 %: 1 / base rate
        (100, 10.0),  # base rate exactly 10 %: both bounds agree
    ],
)
def test_lift_of_perfect_ranker(n_pos, expected):
    y = np.r_[np.ones(n_pos), np.zeros(1000 - n_pos)]
    p = np.linspace(1.0, 0.0, 1000)
    assert lift_at(y, p, 0.10) == pytest.approx(expected)


def test_lift_of_random_ranker_is_about_one():
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=100_000) < 0.2).astype(int)
    assert lift_at(y, rng.uniform(size=y.size)) == pytest.approx(1.0, abs=0.1)


def test_lift_breaks_ties_stably():
    # All scores tie, so the "top 10 %" is the first 10 rows in input order.
    y = np.r_[np.ones(5), np.zeros(95)]
    assert lift_at(y, np.full(100, 0.5)) == pytest.approx(0.5 / 0.05)
    assert lift_at(y[::-1], np.full(100, 0.5)) == 0.0


def test_lift_top_slice_rounds_up_and_is_at_least_one_lead():
    y = [1, 0, 0, 0]
    p = [0.9, 0.1, 0.2, 0.3]
    assert lift_at(y, p, 0.10) == pytest.approx(4.0)  # ceil(0.4) = 1 lead
    assert lift_at(y, p, 0.5) == pytest.approx(2.0)


def test_lift_without_positives_is_nan_and_fraction_is_checked():
    assert math.isnan(lift_at([0, 0], [0.1, 0.2]))
    with pytest.raises(ValueError, match="fraction"):
        lift_at([0, 1], [0.1, 0.2], 0.0)
    with pytest.raises(ValueError, match="fraction"):
        lift_at([0, 1], [0.1, 0.2], 1.5)


def test_cumulative_gains_exact_and_endpoints():
    x, captured = cumulative_gains([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.2])
    assert x.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert captured.tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]


def test_cumulative_gains_shape_and_monotone():
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=500) < 0.3).astype(int)
    x, captured = cumulative_gains(y, rng.uniform(size=500))
    assert len(x) == len(captured) == 501
    assert (x[0], captured[0], x[-1], captured[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert (np.diff(captured) >= 0).all()


def test_cumulative_gains_needs_a_positive():
    with pytest.raises(ValueError, match="at least one positive"):
        cumulative_gains([0, 0], [0.1, 0.2])


# --------------------------------------------------------------------------- thresholds


def test_threshold_stats_hand_made():
    y = [1, 0, 1, 1, 0, 0, 1, 0]
    p = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    assert threshold_stats(y, p, 0.6) == ThresholdStats(
        threshold=0.6, precision=0.75, recall=0.75, volume=4, volume_share=0.5
    )
    assert threshold_stats(y, p, 0.0) == ThresholdStats(
        threshold=0.0, precision=0.5, recall=1.0, volume=8, volume_share=1.0
    )


def test_threshold_stats_with_nothing_flagged_has_zero_precision():
    stats = threshold_stats([1, 0], [0.4, 0.3], 0.5)
    assert (stats.precision, stats.recall, stats.volume, stats.volume_share) == (0.0, 0.0, 0, 0.0)


def test_threshold_stats_recall_is_nan_without_positives():
    assert math.isnan(threshold_stats([0, 0], [0.4, 0.3], 0.3).recall)
    with pytest.raises(ValueError, match="NaN"):
        threshold_stats([0, 1], [0.4, 0.3], math.nan)


# --------------------------------------------------------------------------- summary


def test_stage_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    p = rng.uniform(size=2000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    m = stage_metrics(y, p)
    assert m.roc_auc == pytest.approx(roc_auc_score(y, p))
    assert m.pr_auc == pytest.approx(average_precision_score(y, p))
    assert m.log_loss == pytest.approx(log_loss(y, p))
    assert m.brier == pytest.approx(np.mean((p - y) ** 2))
    assert m.ece == pytest.approx(expected_calibration_error(y, p))
    assert m.lift_at_10 == pytest.approx(lift_at(y, p, 0.1))
    assert (m.n, m.n_positive, m.base_rate) == (2000, int(y.sum()), y.mean())


def test_stage_metrics_one_class_gives_nan_aucs_not_an_exception():
    m = stage_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(m.roc_auc)
    assert math.isnan(m.pr_auc)
    assert math.isnan(m.lift_at_10)
    assert m.n_positive == 0
    assert math.isfinite(m.log_loss)


def test_stage_metrics_clips_probabilities_for_log_loss():
    m = stage_metrics([1, 0], [0.0, 1.0])
    assert math.isfinite(m.log_loss)
    assert m.log_loss == pytest.approx(-math.log(1e-15), rel=1e-4)  # 1 - 1e-15 rounds


def test_as_dict_prefix_and_types():
    m = StageMetrics(0.8, 0.5, 0.4, 0.1, 0.02, 3.0, 0.1, 100, 10)
    d = m.as_dict("mql_")
    assert list(d) == [
        "mql_roc_auc",
        "mql_pr_auc",
        "mql_log_loss",
        "mql_brier",
        "mql_ece",
        "mql_lift_at_10",
        "mql_base_rate",
        "mql_n",
        "mql_n_positive",
    ]
    assert d["mql_n"] == 100.0
    assert all(isinstance(v, float) for v in d.values())
    assert m.as_dict()["roc_auc"] == 0.8


def test_oracle_share_is_a_plain_ratio():
    assert oracle_share(0.8, 0.9) == pytest.approx(0.8 / 0.9)
    assert oracle_share(0.9, 0.9) == 1.0
    assert math.isnan(oracle_share(0.8, math.nan))
    assert math.isnan(oracle_share(math.nan, 0.9))
    assert math.isnan(oracle_share(0.8, 0.0))
