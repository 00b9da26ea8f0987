"""Rendered outputs: evaluation plots (Figures, PNG files) and the markdown model card."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from training.evaluation import stage_metrics
from training.model_card import DEFAULT_LIMITATIONS, fmt_value, render_model_card
from training.plots import (
    feature_importance_plot,
    gains_plot,
    pr_curve_plot,
    reliability_plot,
    roc_curve_plot,
    save,
    score_histogram,
    shap_summary_plot,
)
from training.thresholds import PrecisionTarget, choose_threshold, parse_policy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stages() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    p_mql = rng.uniform(size=600)
    p_sql = p_mql * rng.uniform(0.2, 0.6, size=600)
    y_mql = (rng.uniform(size=600) < p_mql).astype(int)
    y_sql = (rng.uniform(size=600) < p_sql).astype(int)
    return {"mql": (y_mql, p_mql), "sql": (y_sql, p_sql)}


@pytest.fixture(scope="module")
def baseline(stages) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    y, p = stages["mql"]
    return {"mql": (y, np.clip(0.5 * p + 0.25, 0, 1))}


def _assert_saves_png(fig: Figure, path: Path) -> None:
    written = save(fig, path)
    assert written == path
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(PNG_MAGIC)
    assert fig.axes == []  # save released the figure's contents


def _height(patch: Patch) -> float:
    assert isinstance(patch, Rectangle)
    return float(patch.get_height())


def _labels(fig: Figure) -> list[str]:
    return [str(line.get_label()) for line in fig.axes[0].get_lines()]


# --------------------------------------------------------------------------- curves


def test_roc_curve_plot(stages, baseline, tmp_path):
    fig = roc_curve_plot(stages, baseline)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title().startswith("ROC curve")
    assert ax.get_xlabel().startswith("False positive rate")
    assert ax.get_ylabel().startswith("True positive rate")
    labels = _labels(fig)
    assert len(labels) == 4  # mql, mql baseline, sql, chance line
    assert labels[0].startswith("mql (AUC ")
    assert labels[1].startswith("mql baseline (AUC ")
    assert "Random ordering" in labels
    _assert_saves_png(fig, tmp_path / "roc.png")


def test_roc_curve_plot_tolerates_a_single_class_stage(tmp_path):
    fig = roc_curve_plot({"sql": (np.zeros(20), np.linspace(0, 1, 20))})
    assert any("not defined" in label for label in _labels(fig))
    _assert_saves_png(fig, tmp_path / "roc_one_class.png")


def test_curve_plots_need_data():
    with pytest.raises(ValueError, match="empty"):
        roc_curve_plot({})
    with pytest.raises(ValueError, match="same length"):
        pr_curve_plot({"mql": ([0, 1], [0.5])})


def test_pr_curve_plot(stages, baseline, tmp_path):
    fig = pr_curve_plot(stages, baseline)
    ax = fig.axes[0]
    assert ax.get_title().startswith("Precision vs recall")
    assert ax.get_xlabel().startswith("Recall")
    assert ax.get_ylabel().startswith("Precision")
    labels = _labels(fig)
    assert any(label.startswith("sql (AP ") for label in labels)
    assert any(label.startswith("mql baseline (AP ") for label in labels)
    _assert_saves_png(fig, tmp_path / "pr.png")


def test_reliability_plot_has_diagonal_and_bin_counts(stages, baseline, tmp_path):
    fig = reliability_plot(stages, baseline, n_bins=10)
    top, bottom = fig.axes
    assert top.get_title().startswith("Reliability")
    assert top.get_ylabel() == "Observed conversion rate in the bin"
    assert bottom.get_xlabel() == "Mean predicted probability in the bin"
    assert bottom.get_ylabel() == "Leads in the bin"
    diagonal = top.get_lines()[0]
    assert diagonal.get_label() == "Perfectly calibrated"
    assert np.asarray(diagonal.get_xdata()).tolist() == [0, 1]
    assert np.asarray(diagonal.get_ydata()).tolist() == [0, 1]
    heights = [_height(patch) for patch in bottom.patches]
    assert sum(heights) == 2 * 600  # one bar set per stage (baselines draw no counts)
    _assert_saves_png(fig, tmp_path / "reliability.png")


def test_reliability_plot_rejects_unknown_strategy(stages):
    with pytest.raises(ValueError, match="strategy"):
        reliability_plot(stages, strategy="kmeans")  # type: ignore[arg-type]


def test_gains_plot_has_random_and_perfect_lines(stages, tmp_path):
    fig = gains_plot(stages)
    ax = fig.axes[0]
    assert ax.get_title().startswith("Cumulative gains")
    assert ax.get_xlabel() == "Share of leads worked (highest score first)"
    assert ax.get_ylabel() == "Share of all conversions captured"
    labels = _labels(fig)
    assert "Random ordering" in labels
    assert "mql perfect ordering" in labels
    assert "sql perfect ordering" in labels
    perfect = ax.get_lines()[labels.index("mql perfect ordering")]
    rate = stages["mql"][0].mean()
    assert np.asarray(perfect.get_xdata()).tolist() == pytest.approx([0, rate, 1])
    _assert_saves_png(fig, tmp_path / "gains.png")


def test_score_histogram_by_outcome(stages, tmp_path):
    y, p = stages["mql"]
    fig = score_histogram(y, p * 100, "mql")
    ax = fig.axes[0]
    assert ax.get_title() == "Score distribution by outcome: mql"
    assert ax.get_xlabel() == "Score"
    assert ax.get_ylabel() == "Share of leads in the outcome group"
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["Did not convert", "Converted"]
    # Each outcome group's bars sum to 100 %.
    heights = np.array([_height(patch) for patch in ax.patches])
    assert heights.sum() == pytest.approx(2.0)
    _assert_saves_png(fig, tmp_path / "hist.png")


def test_score_histogram_validates():
    with pytest.raises(ValueError, match="equal length"):
        score_histogram([0, 1], [10.0], "mql")
    with pytest.raises(ValueError, match="NaN"):
        score_histogram([0, 1], [10.0, math.nan], "mql")
    with pytest.raises(ValueError, match="only 0 and 1"):
        score_histogram([0, 2], [10.0, 20.0], "mql")


# --------------------------------------------------------------------------- features


def test_feature_importance_plot_top_features_largest_first(tmp_path):
    names = [f"feature_{i}" for i in range(30)]
    gains = np.arange(30, dtype=float)
    fig = feature_importance_plot(names, gains, top=5)
    ax = fig.axes[0]
    assert ax.get_title() == "Feature importance (top 5 by total gain)"
    assert ax.get_xlabel().startswith("Total gain")
    assert len(ax.patches) == 5
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[-1] == "feature_29"  # drawn at the top
    assert ticks[0] == "feature_25"
    _assert_saves_png(fig, tmp_path / "importance.png")


def test_feature_importance_plot_validates():
    with pytest.raises(ValueError, match="match in length"):
        feature_importance_plot(["a", "b"], np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        feature_importance_plot(["a"], np.array([math.nan]))
    with pytest.raises(ValueError, match="top"):
        feature_importance_plot(["a"], np.array([1.0]), top=0)


def test_shap_summary_plot_is_nan_safe(tmp_path):
    rng = np.random.default_rng(4)
    n, k = 400, 6
    values = rng.normal(size=(n, k))
    contrib = values * np.arange(1, k + 1) * 0.1
    values[rng.uniform(size=(n, k)) < 0.1] = np.nan
    contrib[rng.uniform(size=(n, k)) < 0.05] = np.nan
    mixed = values.astype(object)
    mixed[:, 0] = "category"  # non-numeric column: drawn grey
    names = [f"feature_{i}" for i in range(k)]
    fig = shap_summary_plot(names, contrib, mixed, top=4)
    ax = fig.axes[0]
    assert ax.get_title() == "How each feature pushes the score (top 4 features)"
    assert ax.get_xlabel().startswith("Contribution to the model output")
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["feature_2", "feature_3", "feature_4", "feature_5"]  # largest on top
    assert len(fig.axes) == 2  # the plot and its colour bar
    _assert_saves_png(fig, tmp_path / "shap.png")


def test_shap_summary_plot_subsamples_and_rejects_bias_column():
    rng = np.random.default_rng(5)
    contrib = rng.normal(size=(50, 3))
    fig = shap_summary_plot(["a", "b", "c"], contrib, contrib, max_points=20)
    drawn = sum(np.asarray(c.get_offsets()).shape[0] for c in fig.axes[0].collections)
    assert drawn == 20 * 3
    with_bias = np.c_[contrib, np.ones(50)]
    with pytest.raises(ValueError, match="bias column"):
        shap_summary_plot(["a", "b", "c"], with_bias, contrib)


# --------------------------------------------------------------------------- model card


@pytest.fixture(scope="module")
def card_inputs(stages, baseline) -> dict:
    y, p = stages["mql"]
    ys, ps = stages["sql"]
    metrics = {
        "mql": stage_metrics(y, p).as_dict() | stage_metrics(*baseline["mql"]).as_dict("baseline_"),
        "sql": stage_metrics(ys, ps).as_dict(),
    }
    thresholds = [
        choose_threshold("mql", y, p, parse_policy("top:10%"), weeks=6),
        choose_threshold("sql", ys, ps, PrecisionTarget(target=0.99)),
    ]
    return {
        "model_name": "leadscore-demo",
        "version": "7",
        "spec_name": "sample_crm",
        "spec_version": 2,
        "data_window": ("2024-01-01", "2024-06-30"),
        "n_train": 4000,
        "n_val": 600,
        "n_test": 600,
        "metrics": metrics,
        "thresholds": thresholds,
        "grade_bands": {"A": 90.0, "B": 75.0, "C": 50.0},
        "oracle": {"mql": 0.95},
    }


def test_model_card_contains_metrics_and_thresholds(card_inputs):
    card = render_model_card(**card_inputs)
    mql = card_inputs["metrics"]["mql"]
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_at_10"):
        assert fmt_value(mql[key]) in card
        assert fmt_value(mql[f"baseline_{key}"]) in card
    assert "| Leads | 600 | 600 | n/a |" in card
    assert "| Logistic baseline |" in card
    for t in card_inputs["thresholds"]:
        assert f"{t.threshold:.4f}" in card
        assert f"{t.expected_precision:.1%}" in card
        assert f"{t.expected_recall:.1%}" in card
    assert "| mql | top 10% of leads |" in card
    assert "| sql | precision >= 99% |" in card
    assert "| 10.0 |" in card  # 60 leads over 6 weeks


def test_model_card_sections_and_defaults(card_inputs):
    card = render_model_card(**card_inputs)
    for heading in (
        "# Model card: leadscore-demo",
        "## Overview",
        "## Intended use",
        "## Data",
        "## Performance (test split)",
        "## Thresholds",
        "## Grades",
        "## Limitations",
    ):
        assert heading in card
    assert "sample_crm (version 2)" in card
    assert "2024-01-01 to 2024-06-30" in card
    assert "| Train | 4,000 |" in card
    assert "not** intended for decisions about individuals' eligibility, credit" in card
    assert all(item in card for item in DEFAULT_LIMITATIONS)
    assert "| A | 90.0 |" in card
    assert "| D | below 50.0 |" in card
    auc = card_inputs["metrics"]["mql"]["roc_auc"]
    assert f"{auc / 0.95:.1%} of it" in card


def test_model_card_custom_text_and_missing_values(card_inputs):
    inputs = card_inputs | {
        "version": None,
        "data_window": None,
        "intended_use": "Internal benchmarking only.",
        "limitations": ["Synthetic data."],
        "oracle": None,
        "metrics": {"sql": {"roc_auc": math.nan, "n": 10.0}},
        "thresholds": [],
    }
    card = render_model_card(**inputs)
    assert "Internal benchmarking only." in card
    assert "- Synthetic data." in card
    assert DEFAULT_LIMITATIONS[0] not in card
    assert "unregistered" in card
    assert "not recorded" in card
    assert "| ROC-AUC | n/a |" in card
    assert "No thresholds were chosen." in card
    assert "Oracle" not in card
