"""Render a markdown model card from evaluation results.

The card is the human-readable contract of a trained model: what it is for, what it
must not be used for, which data it saw, how well it ranks and how honest its
probabilities are compared with a logistic baseline, and what each threshold and
grade means in practice. Rendering is a pure function of its inputs (no clock, no
file access), so the same run always produces the same card and it can be diffed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from training.evaluation import oracle_share
from training.thresholds import ChosenThreshold, describe_policy

DEFAULT_INTENDED_USE = (
    "Ranking inbound leads for sales follow-up: deciding which leads to contact first "
    "and which to leave in marketing nurture. The scores estimate how likely a lead is "
    "to become marketing-qualified (MQL) or sales-qualified (SQL). It is **not** "
    "intended for decisions about individuals' eligibility, credit, insurance, housing "
    "or employment, nor for any decision with legal or similarly significant effects on "
    "a person."
)

DEFAULT_LIMITATIONS: tuple[str, ...] = (
    "Trained only on leads from the data window above; sources, campaigns, products or "
    "markets absent from that window are scored by extrapolation.",
    "Calibration drifts: as lead mix, campaigns or sales process change, a stated "
    "probability stops matching the observed conversion rate. Monitor it and retrain.",
    "Thresholds and grade bands were fixed on the validation split; their precision, "
    "recall and volumes are expectations, not guarantees, for future leads.",
    "The labels reflect past sales behaviour (who was contacted and how quickly), so "
    "the model can reproduce historical follow-up biases.",
    "Scores rank leads by likelihood of qualifying, not by value, urgency or fit beyond "
    "what the features describe.",
)

#: Display names and order for known metric keys; others follow alphabetically.
METRIC_LABELS: dict[str, str] = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (average precision)",
    "log_loss": "Log loss (lower is better)",
    "brier": "Brier score (lower is better)",
    "ece": "Expected calibration error (lower is better)",
    "lift_at_10": "Lift in the top 10 %",
    "base_rate": "Base rate (share converting)",
    "n": "Leads",
    "n_positive": "Converting leads",
}
_COUNT_METRICS = frozenset({"n", "n_positive"})
_BASELINE_PREFIX = "baseline_"


def fmt_value(value: float | None, *, count: bool = False) -> str:
    """Format a number for the card: 4 decimals, integers for counts, ``n/a`` for NaN."""
    if value is None or math.isnan(value):
        return "n/a"
    if count:
        return f"{int(value):,}"
    return f"{value:.4f}"


def _pct(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.1%}"


def _cell(text: str) -> str:
    """Escape pipes so user-provided names cannot break a markdown table."""
    return text.replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _metric_order(keys: Sequence[str]) -> list[str]:
    known = [k for k in METRIC_LABELS if k in keys]
    return known + sorted(k for k in keys if k not in METRIC_LABELS)


def _overview(
    model_name: str,
    version: str | None,
    spec_name: str,
    spec_version: int,
    stages: Sequence[str],
) -> list[str]:
    return [
        "## Overview",
        "",
        f"- **Model:** {model_name}",
        f"- **Version:** {version or 'unregistered'}",
        f"- **Feature spec:** {spec_name} (version {spec_version})",
        f"- **Scored stages:** {', '.join(stages) if stages else 'none'}",
        "- **Outputs:** a probability per stage, a 0-100 score, a grade (A-D) and a "
        "category (`sql`, `mql` or `nurture`).",
        "",
    ]


def _data_section(
    data_window: tuple[str, str] | None, n_train: int, n_val: int, n_test: int
) -> list[str]:
    window = f"{data_window[0]} to {data_window[1]}" if data_window else "not recorded"
    total = n_train + n_val + n_test
    rows = [
        [name, f"{n:,}", _pct(n / total) if total else "n/a"]
        for name, n in (("Train", n_train), ("Validation", n_val), ("Test", n_test))
    ]
    return [
        "## Data",
        "",
        f"- **Data window:** {window}",
        "- Thresholds and grade bands are chosen on the validation split; the metrics "
        "below are measured on the test split, which played no part in any choice.",
        "",
        *_table(["Split", "Leads", "Share"], rows),
        "",
    ]


#: Optional metric: the model's ROC-AUC on exactly the rows the oracle was scored on.
ORACLE_ROWS_AUC = "oracle_rows_roc_auc"


def _stage_metrics_section(
    stage: str, values: Mapping[str, float], oracle_auc: float | None
) -> list[str]:
    model_keys = [k for k in values if not k.startswith(_BASELINE_PREFIX) and k != ORACLE_ROWS_AUC]
    has_baseline = any(k.startswith(_BASELINE_PREFIX) for k in values)
    header = ["Metric", "Model"]
    if has_baseline:
        header += ["Logistic baseline", "Model - baseline"]
    rows = []
    for key in _metric_order(model_keys):
        count = key in _COUNT_METRICS
        row = [METRIC_LABELS.get(key, key), fmt_value(values[key], count=count)]
        if has_baseline:
            base = values.get(_BASELINE_PREFIX + key)
            diff = None if base is None or count else values[key] - base
            row += [fmt_value(base, count=count), fmt_value(diff)]
        rows.append(row)
    lines = [f"### {stage}", "", *_table(header, rows), ""]
    if oracle_auc is not None:
        # Compared on the rows the oracle covers, when the caller says which AUC that is.
        model_auc = values.get(ORACLE_ROWS_AUC, values.get("roc_auc", math.nan))
        share = oracle_share(model_auc, oracle_auc)
        lines += [
            f"Oracle ROC-AUC: {fmt_value(oracle_auc)}; the model on the same rows: "
            f"{fmt_value(model_auc)}, {_pct(share)} of it (model AUC / oracle AUC).",
            "",
        ]
    return lines


def _metrics_section(
    metrics: Mapping[str, Mapping[str, float]], oracle: Mapping[str, float] | None
) -> list[str]:
    lines = [
        "## Performance (test split)",
        "",
        "Ranking: ROC-AUC, PR-AUC and lift. Probability honesty: log loss, Brier score and "
        "expected calibration error (the average gap, in probability points, between "
        "predicted and observed conversion rates).",
        "",
    ]
    if oracle:
        lines += [
            "The oracle is a model allowed information unavailable at scoring time; its "
            "ROC-AUC bounds what the data can support.",
            "",
        ]
    if not metrics:
        return [*lines, "No metrics were recorded.", ""]
    for stage, values in metrics.items():
        lines += _stage_metrics_section(stage, values, (oracle or {}).get(stage))
    return lines


def _thresholds_section(thresholds: Sequence[ChosenThreshold]) -> list[str]:
    lines = [
        "## Thresholds",
        "",
        "Chosen on the validation split by the stated policy. Each lead gets one "
        "category: `sql` if its SQL probability reaches the SQL threshold, otherwise `mql` "
        "if its MQL probability reaches the MQL threshold, otherwise `nurture`. Expected "
        "values describe all leads at or above each stage's threshold.",
        "",
    ]
    if not thresholds:
        return [*lines, "No thresholds were chosen.", ""]
    rows = [
        [
            t.stage,
            describe_policy(t.policy),
            f"{t.threshold:.4f}",
            "yes" if t.met else "**no**",
            _pct(t.expected_precision),
            _pct(t.expected_recall),
            _pct(t.expected_volume_share),
            f"{t.expected_per_week:,.1f}" if t.expected_per_week is not None else "n/a",
        ]
        for t in thresholds
    ]
    header = [
        "Stage",
        "Policy",
        "Threshold",
        "Policy met",
        "Expected precision",
        "Expected recall",
        "Share of leads flagged",
        "Leads per week",
    ]
    lines += [*_table(header, rows), ""]
    if not all(t.met for t in thresholds):
        lines += [
            "Where the policy is not met, the threshold is the closest achievable "
            "(best precision, or the smallest volume above capacity because of tied scores).",
            "",
        ]
    return lines


def _grades_section(grade_bands: Mapping[str, float]) -> list[str]:
    lines = [
        "## Grades",
        "",
        "Grades cut the validation score distribution at fixed shares: a lead gets the "
        "first grade whose minimum score it reaches.",
        "",
    ]
    if not grade_bands:
        return [*lines, "No grade bands were set.", ""]
    rows = [[grade, f"{cut:.1f}"] for grade, cut in grade_bands.items()]
    last = list(grade_bands)[-1]
    rows.append([chr(ord(last) + 1) if len(last) == 1 else "rest", f"below {rows[-1][1]}"])
    return [*lines, *_table(["Grade", "Minimum score (0-100)"], rows), ""]


def render_model_card(
    *,
    model_name: str,
    version: str | None,
    spec_name: str,
    spec_version: int,
    data_window: tuple[str, str] | None,
    n_train: int,
    n_val: int,
    n_test: int,
    metrics: dict[str, dict[str, float]],
    thresholds: list[ChosenThreshold],
    grade_bands: dict[str, float],
    intended_use: str | None = None,
    limitations: list[str] | None = None,
    oracle: dict[str, float] | None = None,
) -> str:
    """Markdown model card.

    ``metrics`` are expected to be measured on the test split (the card says so) and
    map stage -> metric -> value (as from ``StageMetrics.as_dict``), with
    the logistic baseline's values under ``baseline_``-prefixed keys where present.
    ``oracle`` maps stage -> the oracle's ROC-AUC; the card reports the model's share
    of it as ``model AUC / oracle AUC``.
    """
    lines = [f"# Model card: {model_name}", ""]
    lines += _overview(model_name, version, spec_name, spec_version, list(metrics))
    lines += ["## Intended use", "", intended_use or DEFAULT_INTENDED_USE, ""]
    lines += _data_section(data_window, n_train, n_val, n_test)
    lines += _metrics_section(metrics, oracle)
    lines += _thresholds_section(thresholds)
    lines += _grades_section(grade_bands)
    chosen_limits = DEFAULT_LIMITATIONS if limitations is None else tuple(limitations)
    lines += ["## Limitations", ""]
    lines += [f"- {item}" for item in chosen_limits] or ["- None recorded."]
    return "\n".join(lines) + "\n"
