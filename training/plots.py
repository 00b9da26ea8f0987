"""Evaluation plots as matplotlib Figures, for MLflow artifacts and the model card.

Figures are built with :class:`matplotlib.figure.Figure` directly and never through
``pyplot``: no global figure registry, no interactive backend, nothing leaking
between calls or threads. Saving to PNG uses the Agg renderer automatically. Call
:func:`save` to write a figure and release its contents.

Curve plots take ``{stage: (y_true, p)}`` so one figure compares stages, and an
optional baseline mapping of the same shape drawn dashed in the same colour, so the
model's gain over the logistic baseline is visible at a glance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import matplotlib as mpl
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from training.evaluation import (
    FloatArray,
    IntArray,
    calibration_bins,
    cumulative_gains,
    validate_inputs,
)

StageData = Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]]

_MAX_CURVE_POINTS = 2000
_MISSING_COLOUR = "#9e9e9e"


def save(fig: Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` as an image (format from the suffix) and release its contents.

    The figure is not registered with pyplot, so clearing it is all the "closing" it
    needs; it must not be used after saving.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=dpi, bbox_inches="tight")
    fig.clear()
    return target


def _colour(i: int) -> str:
    return f"C{i % 10}"


def _has_both_classes(y: IntArray) -> bool:
    return 0 < int(y.sum()) < len(y)


def _note_undefined(ax: Axes, stage: str, colour: str) -> None:
    """Keep the stage in the legend, saying why it has no curve."""
    ax.plot([], [], color=colour, label=f"{stage}: one outcome class only, not defined")


def _thin(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Keep at most ~2000 evenly spaced points: curves on millions of leads stay light."""
    if len(x) <= _MAX_CURVE_POINTS:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, _MAX_CURVE_POINTS).astype(np.int64))
    return x[idx], y[idx]


def _iter_curves(
    y_by_stage: StageData, baseline: StageData | None
) -> list[tuple[str, str, str, IntArray, FloatArray]]:
    """(label, colour, linestyle, y, p) for each model curve and its baseline."""
    if not y_by_stage:
        raise ValueError("y_by_stage is empty; pass at least one {stage: (y_true, p)}")
    curves = []
    for i, (stage, (y_raw, p_raw)) in enumerate(y_by_stage.items()):
        y, p = validate_inputs(y_raw, p_raw)
        curves.append((stage, _colour(i), "-", y, p))
        if baseline and stage in baseline:
            by, bp = validate_inputs(*baseline[stage])
            curves.append((f"{stage} baseline", _colour(i), "--", by, bp))
    return curves


def roc_curve_plot(y_by_stage: StageData, baseline: StageData | None = None) -> Figure:
    """True vs false positive rate per stage, with the chance diagonal and AUC in the legend."""
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    for label, colour, style, y, p in _iter_curves(y_by_stage, baseline):
        if not _has_both_classes(y):
            _note_undefined(ax, label, colour)
            continue
        fpr, tpr, _ = sk_roc_curve(y, p)
        fpr, tpr = _thin(fpr, tpr)
        auc = roc_auc_score(y, p)
        ax.plot(fpr, tpr, color=colour, linestyle=style, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="Random ordering")
    ax.set_title("ROC curve: telling converting leads from the rest")
    ax.set_xlabel("False positive rate (share of non-converting leads flagged)")
    ax.set_ylabel("True positive rate (share of converting leads flagged)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def pr_curve_plot(y_by_stage: StageData, baseline: StageData | None = None) -> Figure:
    """Precision vs recall per stage, with each stage's base rate as the no-skill line."""
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    for label, colour, style, y, p in _iter_curves(y_by_stage, baseline):
        if not _has_both_classes(y):
            _note_undefined(ax, label, colour)
            continue
        precision, recall, _ = precision_recall_curve(y, p)
        recall, precision = _thin(recall, precision)
        ap = average_precision_score(y, p)
        ax.plot(recall, precision, color=colour, linestyle=style, label=f"{label} (AP {ap:.3f})")
        if style == "-":
            ax.axhline(float(y.mean()), color=colour, linestyle=":", linewidth=1)
    ax.set_title("Precision vs recall (dotted lines: share converting overall)")
    ax.set_xlabel("Recall (share of converting leads flagged)")
    ax.set_ylabel("Precision (share of flagged leads that convert)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="upper right", fontsize="small")
    return fig


def reliability_plot(
    y_by_stage: StageData,
    baseline: StageData | None = None,
    *,
    n_bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "quantile",
) -> Figure:
    """Predicted probability vs observed conversion rate, with the diagonal and bin counts.

    Points on the diagonal mean "a 30 % score converts 30 % of the time". The lower
    panel shows how many leads each model bin holds, so a wild point backed by a
    handful of leads is not over-read.
    """
    if strategy not in ("uniform", "quantile"):
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    fig = Figure(figsize=(6.5, 7.0))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="Perfectly calibrated")
    for label, colour, style, y, p in _iter_curves(y_by_stage, baseline):
        bins = calibration_bins(y, p, n_bins=n_bins, strategy=strategy)
        top.plot(
            bins.mean_predicted,
            bins.observed_rate,
            color=colour,
            linestyle=style,
            marker="o" if style == "-" else "s",
            markersize=4,
            label=label,
        )
        if style == "-":
            widths = np.maximum(bins.upper - bins.lower, 0.005)
            bottom.bar(
                bins.lower,
                bins.count,
                width=widths,
                align="edge",
                color=colour,
                alpha=0.4,
                edgecolor=colour,
                label=label,
            )
    top.set_title("Reliability: predicted probability vs observed conversion rate")
    top.set_ylabel("Observed conversion rate in the bin")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize="small")
    bottom.set_xlabel("Mean predicted probability in the bin")
    bottom.set_ylabel("Leads in the bin")
    return fig


def gains_plot(y_by_stage: StageData, baseline: StageData | None = None) -> Figure:
    """Share of conversions captured when working leads top-down, vs random and perfect."""
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    for label, colour, style, y, p in _iter_curves(y_by_stage, baseline):
        if not y.any():
            _note_undefined(ax, label, colour)
            continue
        x, captured = _thin(*cumulative_gains(y, p))
        ax.plot(x, captured, color=colour, linestyle=style, label=label)
        if style == "-":
            rate = float(y.mean())
            ax.plot(
                [0, rate, 1],
                [0, 1, 1],
                color=colour,
                linestyle=":",
                linewidth=1,
                label=f"{label} perfect ordering",
            )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="Random ordering")
    ax.set_title("Cumulative gains: conversions captured by working the top-scored leads")
    ax.set_xlabel("Share of leads worked (highest score first)")
    ax.set_ylabel("Share of all conversions captured")
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def score_histogram(
    y: npt.ArrayLike, scores: npt.ArrayLike, stage: str, *, bins: int = 20
) -> Figure:
    """Score distributions of converting and non-converting leads, each summing to 100 %.

    Normalising each group separately keeps the (usually rare) converting leads
    visible next to the much larger non-converting group.
    """
    y_arr = np.asarray(y)
    s = np.asarray(scores, dtype=np.float64)
    if y_arr.shape != s.shape or s.ndim != 1:
        raise ValueError(
            f"y and scores must be 1-D arrays of equal length; got {y_arr.shape} and {s.shape}"
        )
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if s.size == 0:
        raise ValueError("y and scores are empty")
    if not np.isin(y_arr, (0, 1)).all():
        raise ValueError("y must contain only 0 and 1")
    edges = np.histogram_bin_edges(s, bins=bins)
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    for outcome, name, colour in ((0, "Did not convert", "C7"), (1, "Converted", "C2")):
        group = s[y_arr == outcome]
        if group.size:
            weights = np.full(group.size, 1.0 / group.size)
            ax.hist(
                group, bins=edges.tolist(), weights=weights, alpha=0.55, color=colour, label=name
            )
    ax.set_title(f"Score distribution by outcome: {stage}")
    ax.set_xlabel("Score")
    ax.set_ylabel("Share of leads in the outcome group")
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.legend(fontsize="small")
    return fig


def _top_order(importance: FloatArray, top: int) -> IntArray:
    """Indices of the ``top`` largest values, largest first (stable for ties)."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    return np.argsort(-importance, kind="stable")[:top].astype(np.int64)


def feature_importance_plot(names: Sequence[str], gains: npt.ArrayLike, top: int = 20) -> Figure:
    """Horizontal bars of the ``top`` features by total gain, largest at the top."""
    g = np.asarray(gains, dtype=np.float64)
    if g.ndim != 1 or len(names) != g.size:
        raise ValueError(f"names ({len(names)}) and gains ({g.shape}) must match in length")
    if g.size == 0:
        raise ValueError("no features to plot")
    if not np.isfinite(g).all():
        raise ValueError("gains contain NaN or infinite values")
    order = _top_order(g, top)[::-1]  # barh draws bottom-up
    fig = Figure(figsize=(7.0, 1.0 + 0.3 * len(order)))
    ax = fig.subplots()
    ax.barh(np.arange(len(order)), g[order], color="C0")
    ax.set_yticks(np.arange(len(order)), [names[i] for i in order])
    ax.set_title(f"Feature importance (top {len(order)} by total gain)")
    ax.set_xlabel("Total gain: how much the feature's splits improved the model")
    ax.set_ylabel("Feature")
    return fig


def _numeric_columns(values: npt.ArrayLike) -> FloatArray:
    """Feature values as floats; anything non-numeric (e.g. categories) becomes NaN."""
    frame = pd.DataFrame(np.asarray(values, dtype=object))
    return frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _normalise(col: FloatArray) -> FloatArray:
    """Map a feature's values to [0, 1] by its 5th-95th percentiles; NaN stays NaN.

    Percentiles rather than min/max stop one outlier from washing out every colour.
    """
    finite = col[np.isfinite(col)]
    if finite.size == 0:
        return np.full_like(col, np.nan)
    lo, hi = np.percentile(finite, [5, 95])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.where(np.isfinite(col), 0.5, np.nan)
    return np.clip((col - lo) / (hi - lo), 0.0, 1.0)


def _swarm_offsets(x: FloatArray, order_key: FloatArray, n_bins: int = 60) -> FloatArray:
    """Vertical offsets that fan points out where SHAP values pile up (beeswarm-like).

    Points are binned along x; within a bin they alternate 0, +1, -1, +2, ... steps,
    sorted by feature value so colours group. The widest bin spans +-0.4 rows.
    """
    if x.size == 0:
        return x.copy()
    span = float(x.max() - x.min())
    bin_idx = np.zeros(x.size, dtype=np.int64)
    if span > 0:
        bin_idx = np.minimum(((x - x.min()) / span * n_bins).astype(np.int64), n_bins - 1)
    key = np.where(np.isfinite(order_key), order_key, -np.inf)
    order = np.lexsort((key, bin_idx))
    sorted_bins = bin_idx[order]
    starts = np.flatnonzero(np.r_[True, sorted_bins[1:] != sorted_bins[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, sorted_bins.size]))
    rank = np.arange(sorted_bins.size) - group_start
    layer = (rank + 1) // 2 * np.where(rank % 2 == 1, 1, -1)
    step = 0.4 / max(int(np.abs(layer).max()), 1)
    offsets = np.empty(x.size, dtype=np.float64)
    offsets[order] = layer * step
    return offsets


def shap_summary_plot(
    names: Sequence[str],
    contrib: npt.ArrayLike,
    values: npt.ArrayLike,
    top: int = 20,
    *,
    max_points: int = 5000,
    seed: int = 0,
) -> Figure:
    """Beeswarm-style SHAP summary without the ``shap`` package.

    One row per feature (``top`` by mean absolute contribution, largest first); each
    dot is a lead, placed by its contribution and coloured by the feature's value from
    low (blue) to high (red). Missing or non-numeric values are grey; NaN
    contributions are dropped. ``contrib`` must have one column per name: drop a
    trailing bias column (as LightGBM's ``pred_contrib`` adds) first. At most
    ``max_points`` leads are drawn, sampled with ``seed`` for a reproducible image.
    """
    c = np.asarray(contrib, dtype=np.float64)
    v = _numeric_columns(values)
    if c.ndim != 2 or c.shape != v.shape or c.shape[1] != len(names):
        raise ValueError(
            f"contrib {c.shape} and values {v.shape} must both be (n_leads, {len(names)}) "
            "with one column per name (drop any bias column from contrib)"
        )
    if c.shape[0] > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(c.shape[0], max_points, replace=False))
        c, v = c[rows], v[rows]
    finite = np.isfinite(c)
    counts = finite.sum(axis=0)
    mean_abs = np.where(finite, np.abs(c), 0.0).sum(axis=0) / np.maximum(counts, 1)
    order = _top_order(mean_abs, top)
    cmap = mpl.colormaps["coolwarm"]
    fig = Figure(figsize=(8.0, 1.2 + 0.35 * len(order)))
    ax = fig.subplots()
    any_missing = False
    for row, j in enumerate(order):
        ok = finite[:, j]
        x = c[ok, j]
        colour_value = _normalise(v[:, j])[ok]
        y_pos = (len(order) - 1 - row) + _swarm_offsets(x, colour_value)
        missing = ~np.isfinite(colour_value)
        any_missing = any_missing or bool(missing.any())
        ax.scatter(x[missing], y_pos[missing], s=6, color=_MISSING_COLOUR, linewidths=0)
        ax.scatter(
            x[~missing],
            y_pos[~missing],
            s=6,
            c=colour_value[~missing],
            cmap=cmap,
            vmin=0.0,
            vmax=1.0,
            linewidths=0,
        )
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(np.arange(len(order)), [names[j] for j in order[::-1]])
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.set_title(f"How each feature pushes the score (top {len(order)} features)")
    ax.set_xlabel("Contribution to the model output (SHAP value; right raises the score)")
    ax.set_ylabel("Feature")
    colourbar = fig.colorbar(
        ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), ax=ax, ticks=[0, 1]
    )
    colourbar.ax.set_yticklabels(["Low", "High"])
    colourbar.set_label("Feature value")
    if any_missing:
        ax.scatter([], [], s=12, color=_MISSING_COLOUR, label="Missing or non-numeric value")
        ax.legend(loc="lower right", fontsize="small")
    return fig
