"""Precision against sales capacity: what each threshold policy would mean, side by side.

A threshold policy answers one question at a time ("flag leads that convert half the
time", "flag the 50 best leads a week"). Choosing between policies needs the answers
next to each other: how many leads each one flags a week, how many of those convert
(precision) and what share of all conversions they catch (recall). This module builds
that menu from outcomes and probabilities with the very policy code training uses
(:func:`training.thresholds.choose_threshold`), so the row for ``weekly:50`` holds the
threshold training would pick with that policy on the same rows.

The figures describe the rows they are given. On the test split they read "had sales
worked this policy during the test weeks, this is what they would have seen". The
threshold is fitted to those same rows, so a row describes the trade-off; it is not an
unbiased estimate for a deployed threshold (training chooses those on validation rows
and measures them on test rows).

"Flagged per week" counts scored rows: with several snapshots per lead (7, 14 and 30
days after it arrived), a lead can be flagged more than once in a period, exactly as
``weekly:N`` counts it in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from training.evaluation import threshold_stats, validate_inputs
from training.thresholds import ThresholdPolicy, choose_threshold, describe_policy, parse_policy
from training.thresholds import weeks_spanned as weeks_spanned  # re-exported for notebooks

#: Columns of :func:`tradeoff_table`, in order.
TABLE_COLUMNS: tuple[str, ...] = (
    "description",
    "threshold",
    "met",
    "flagged",
    "share_flagged",
    "flagged_per_week",
    "precision",
    "recall",
    "lift",
)
#: Columns of :func:`capacity_curve`, in order.
CURVE_COLUMNS: tuple[str, ...] = (
    "threshold",
    "flagged",
    "share_flagged",
    "flagged_per_week",
    "precision",
    "recall",
)
_MAX_CURVE_POINTS = 2000


def _policy(policy: str | ThresholdPolicy) -> tuple[str, ThresholdPolicy]:
    """The label to show for a policy and the parsed policy."""
    if isinstance(policy, str):
        return policy.strip(), parse_policy(policy)
    return describe_policy(policy.model_dump(exclude_none=True)), policy


def tradeoff_table(
    y_true: npt.ArrayLike,
    p: npt.ArrayLike,
    policies: Sequence[str | ThresholdPolicy],
    *,
    weeks: float | None = None,
    stage: str = "stage",
) -> pd.DataFrame:
    """One row per threshold policy: its threshold and what it flags, converts and misses.

    ``policies`` are policy strings (``"precision:0.5"``, ``"top:5%"``, ``"weekly:50"``)
    or policy objects; the index holds the string (or the policy's description). ``weeks``
    is the length of the period the rows cover (see :func:`weeks_spanned`); it is needed
    for ``weekly:N`` policies and fills ``flagged_per_week`` (NaN without it).

    Columns: ``description`` (the policy in words), ``threshold`` (leads with
    ``p >= threshold`` are flagged), ``met`` (False when the policy cannot be honoured
    exactly, e.g. an unreachable precision target), ``flagged`` (rows), ``share_flagged``,
    ``flagged_per_week``, ``precision`` (share of flagged rows that convert), ``recall``
    (share of all conversions flagged) and ``lift`` (precision over the overall
    conversion rate). Raises ValueError for an unparsable policy, a weekly policy without
    ``weeks``, or outcomes without any conversion (no threshold can be chosen then).
    """
    y, p_arr = validate_inputs(y_true, p)
    if not policies:
        raise ValueError("policies is empty; pass at least one, e.g. ['precision:0.5']")
    if weeks is not None and not weeks > 0:
        raise ValueError(f"weeks must be positive, got {weeks}")
    base_rate = float(y.mean())
    rows: dict[str, dict[str, object]] = {}
    for item in policies:
        label, policy = _policy(item)
        if label in rows:
            raise ValueError(f"policy {label!r} is listed twice")
        chosen = choose_threshold(stage, y, p_arr, policy, weeks=weeks)
        stats = threshold_stats(y, p_arr, chosen.threshold)
        rows[label] = {
            "description": describe_policy(chosen.policy),
            "threshold": chosen.threshold,
            "met": chosen.met,
            "flagged": stats.volume,
            "share_flagged": stats.volume_share,
            "flagged_per_week": stats.volume / weeks if weeks is not None else np.nan,
            "precision": stats.precision,
            "recall": stats.recall,
            "lift": stats.precision / base_rate if base_rate > 0 else np.nan,
        }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(TABLE_COLUMNS))
    table.index.name = "policy"
    return table.astype({"met": bool, "flagged": np.int64})


def capacity_curve(
    y_true: npt.ArrayLike, p: npt.ArrayLike, *, weeks: float | None = None
) -> pd.DataFrame:
    """Precision and recall at every possible threshold, most selective first.

    One row per distinct score: flagging every row with ``p >= threshold`` flags
    ``flagged`` rows (``flagged_per_week`` of them a week when ``weeks`` is given, else
    NaN), of which ``precision`` convert, catching ``recall`` of all conversions. Tied
    scores are flagged together, as a threshold cannot split them. Recall is NaN when
    there are no conversions.
    """
    y, p_arr = validate_inputs(y_true, p)
    if weeks is not None and not weeks > 0:
        raise ValueError(f"weeks must be positive, got {weeks}")
    order = np.argsort(-p_arr, kind="stable")
    p_sorted = p_arr[order]
    converted = np.cumsum(y[order])
    # Last position of each group of equal scores: the volume when that score is the cut.
    last = np.flatnonzero(np.append(p_sorted[1:] != p_sorted[:-1], True))
    flagged = last + 1
    n_pos = int(y.sum())
    return pd.DataFrame(
        {
            "threshold": p_sorted[last],
            "flagged": flagged.astype(np.int64),
            "share_flagged": flagged / len(y),
            "flagged_per_week": flagged / weeks if weeks is not None else np.nan,
            "precision": converted[last] / flagged,
            "recall": converted[last] / n_pos if n_pos else np.nan,
        },
        columns=list(CURVE_COLUMNS),
    )


def _thin(curve: pd.DataFrame) -> pd.DataFrame:
    """At most ~2000 evenly spaced rows, so a curve over millions of leads stays light."""
    if len(curve) <= _MAX_CURVE_POINTS:
        return curve
    idx = np.unique(np.linspace(0, len(curve) - 1, _MAX_CURVE_POINTS).astype(np.int64))
    return curve.iloc[idx]


def tradeoff_plot(
    y_true: npt.ArrayLike,
    p: npt.ArrayLike,
    *,
    weeks: float | None = None,
    table: pd.DataFrame | None = None,
    stage: str = "",
) -> Figure:
    """Precision and recall against how many leads are flagged, with policies marked.

    The x axis is leads flagged per week when ``weeks`` is given, else the share of
    leads flagged. Each row of ``table`` (from :func:`tradeoff_table`) is drawn as a
    dotted vertical line at the volume its policy flags. Built on
    :class:`matplotlib.figure.Figure` without pyplot, like :mod:`training.plots`.
    """
    curve = _thin(capacity_curve(y_true, p, weeks=weeks))
    x_column = "flagged_per_week" if weeks is not None else "share_flagged"
    y, _ = validate_inputs(y_true, p)
    fig = Figure(figsize=(7.0, 5.0))
    ax = fig.subplots()
    x = curve[x_column].to_numpy()
    ax.plot(x, curve["precision"].to_numpy(), color="C0", label="Precision (flagged that convert)")
    ax.plot(x, curve["recall"].to_numpy(), color="C1", label="Recall (conversions caught)")
    ax.axhline(float(y.mean()), color="C0", linestyle=":", linewidth=1, label="Overall rate")
    if table is not None:
        for i, (label, row) in enumerate(table.iterrows()):
            ax.axvline(
                float(row[x_column]),
                color=f"C{(i + 2) % 10}",
                linestyle="--",
                linewidth=1,
                label=f"{label}: precision {row['precision']:.0%}, recall {row['recall']:.0%}",
            )
    name = f" ({stage})" if stage else ""
    ax.set_title(f"Precision vs sales capacity{name}")
    if weeks is not None:
        ax.set_xlabel("Leads flagged per week (highest score first)")
    else:
        ax.set_xlabel("Share of leads flagged (highest score first)")
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_ylabel("Share")
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_xlim(0, float(x.max()) if len(x) else 1.0)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="center right", fontsize="small")
    return fig
