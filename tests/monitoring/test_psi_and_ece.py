"""PSI, ECE and the live figures on values small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.reference import (
    BinnedDistribution,
    Promise,
    categorical_distribution,
    numeric_distribution,
)
from monitoring.live import stage_live
from monitoring.psi import FLOOR, psi, psi_against
from monitoring.settings import MonitorSettings
from monitoring.states import above, below, worst


def test_psi_by_hand() -> None:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)
    assert psi(np.array([5, 5]), np.array([1, 3])) == pytest.approx(expected)  # counts work too
    assert psi(np.array([0.2, 0.3, 0.5]), np.array([0.2, 0.3, 0.5])) == 0.0


def test_psi_floors_an_empty_bin_instead_of_going_infinite() -> None:
    value = psi(np.array([1.0, 0.0]), np.array([0.9, 0.1]))
    by_hand = (0.9 - 1.0) * math.log(0.9) + (0.1 - FLOOR) * math.log(0.1 / FLOOR)
    assert value == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="same bins"):
        psi(np.array([1.0]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="at least one value"):
        psi(np.array([1.0, 0.0]), np.array([0.0, 0.0]))


def test_numeric_bins_are_quantiles_with_a_missing_bin() -> None:
    values = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, np.nan, np.nan], dtype=float)
    dist = numeric_distribution(values, bins=5)
    assert dist.edges == [2.0, 4.0, 6.0, 8.0]
    assert dist.labels[1:3] == ["<= 2", "> 2 to 4"]
    assert dist.labels[0] == "missing"
    assert dist.shares == pytest.approx([2 / 12, 2 / 12, 2 / 12, 2 / 12, 2 / 12, 2 / 12])
    # Live values below, between and above the edges all land in a bin; NaN is missing.
    counts = dist.counts(np.array([-5.0, 2.0, 2.5, 100.0, np.nan]))
    assert counts.tolist() == [1, 2, 1, 0, 0, 1]
    same, _ = psi_against(dist, values)
    assert same == pytest.approx(0.0)


def test_a_count_that_is_mostly_zero_keeps_few_bins() -> None:
    values = np.array([0.0] * 90 + [1.0] * 6 + [4.0] * 4)
    dist = numeric_distribution(values, bins=10)
    assert dist.edges == [0.0]  # the zero quantiles collapse into one "0" bin
    assert dist.labels == ["missing", "<= 0", "> 0"]
    assert dist.shares == pytest.approx([0.0, 0.9, 0.1])


def test_a_new_level_shows_as_other() -> None:
    dist = categorical_distribution(np.array([0, 0, 1, 1]), ["a", "b", "__missing__", "__other__"])
    assert dist.shares == [0.5, 0.5, 0.0, 0.0]
    value, counts = psi_against(dist, np.array([0, 1, 3, 3]))
    assert counts.tolist() == [1, 1, 0, 2]
    by_hand = 2 * (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.5 - FLOOR) * math.log(0.5 / FLOOR)
    assert value == pytest.approx(by_hand)
    back = BinnedDistribution.from_dict(dist.to_dict())
    assert back == dist


def test_states_and_their_order() -> None:
    assert [above(v, 0.1, 0.25) for v in (0.05, 0.1, 0.2, 0.25, None)] == [
        "ok",
        "watch",
        "watch",
        "act",
        "unknown",
    ]
    assert [below(v, 0.8, 0.6) for v in (0.9, 0.7, 0.5, None)] == ["ok", "watch", "act", "unknown"]
    assert worst(["ok", "unknown", "watch"]) == "watch"
    assert worst(["unknown"]) == "unknown"
    assert worst([]) == "unknown"
    with pytest.raises(ValueError, match="psi_watch must not exceed psi_act"):
        MonitorSettings(psi_watch=0.3, psi_act=0.2)


def test_live_figures_by_hand() -> None:
    """Two bins of 200: predicted 0.1 observed 0.2, predicted 0.6 observed 0.3."""
    p = np.array([0.1] * 200 + [0.6] * 200)
    y = np.array([1] * 40 + [0] * 160 + [1] * 60 + [0] * 140)
    settings = MonitorSettings(bins=2, min_matured_rows=100, min_positives=10)
    promise = Promise("sql", threshold=0.5, precision=0.5, volume_share=0.5)
    live = stage_live("sql", y, p, promise, trained_auc=0.75, settings=settings)
    assert live.rows == 400 and live.positives == 100
    # ECE: half the leads off by 0.1, half off by 0.3.
    assert live.ece == pytest.approx(0.5 * 0.1 + 0.5 * 0.3)
    assert live.ece_state == "act"
    assert [(b.mean_predicted, b.observed_rate, b.count) for b in live.reliability] == [
        pytest.approx((0.1, 0.2, 200)),
        pytest.approx((0.6, 0.3, 200)),
    ]
    # ROC-AUC: a positive of the top bin outranks a negative of the bottom bin, ties count half.
    pairs = 60 * 160 + 0.5 * (40 * 160 + 60 * 140)
    assert live.roc_auc == pytest.approx(pairs / (100 * 300))
    assert live.auc_state == "act"  # 0.75 - 0.593 > 0.06
    assert live.flagged == 200
    assert live.live_precision == pytest.approx(0.3)
    assert live.precision_state == "watch"  # 0.3 / 0.5 = 0.6: below 0.8, not below 0.6
    assert live.sentence() == "precision 0.50 at the SQL threshold: live 0.30"
    assert live.state == "act"


def test_too_few_matured_leads_are_unknown_not_ok() -> None:
    live = stage_live(
        "mql", np.array([0, 1, 0]), np.array([0.2, 0.8, 0.1]), None, None, MonitorSettings()
    )
    assert live.ece is not None
    assert (live.ece_state, live.auc_state, live.precision_state) == ("unknown",) * 3
    assert live.state == "unknown"
