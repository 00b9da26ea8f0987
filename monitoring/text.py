"""The monitoring report as a plain-text table (``leadscore monitor`` without ``--json``)."""

from __future__ import annotations

from monitoring.report import Drift, MonitorReport

#: Features listed besides those in watch/act: the few that moved most.
TOP_FEATURES = 5


def report_text(report: MonitorReport) -> str:
    lines = [
        f"Model {report.model_name or 'model'} version {report.model_version}: "
        f"state {report.state.upper()}  ({report.seconds:.1f} s)",
        f"  drift window   {report.drift_window[0]} to {report.drift_window[1]}: "
        f"{report.drift_rows:,} scores, {report.drift_sampled:,} inputs rebuilt"
        + (f", {report.drift_without_input:,} without input" if report.drift_without_input else ""),
        f"  matured window {report.matured_window[0]} to {report.matured_window[1]} "
        f"(horizon {report.horizon_days:g} d): {report.matured_rows:,} labelled scores"
        + _dropped(report.matured_dropped),
        "",
        "Score drift (PSI of each stage probability against the training reference)",
        *_drift_rows(report.scores, name_width=8),
        "",
        "Feature drift (PSI), worst first",
        *_drift_rows(_shown_features(report.features), name_width=28),
        "",
        "Live calibration on matured scores (probabilities as served)",
        f"  {'stage':<8}{'rows':>8}{'pos':>7}{'pred':>8}{'obs':>8}{'ECE':>8}  {'state':<8}"
        f"{'ROC-AUC':>8}{'trained':>9}  {'state':<8}{'precision vs promise':<48}  {'state'}",
    ]
    for s in report.stages:
        lines.append(
            f"  {s.stage:<8}{s.rows:>8,}{s.positives:>7,}{_f(s.mean_predicted, 8)}"
            f"{_f(s.observed_rate, 8)}{_f(s.ece, 8)}  {s.ece_state:<8}{_f(s.roc_auc, 8)}"
            f"{_f(s.roc_auc_trained, 9)}  {s.auc_state:<8}{s.sentence():<48}  {s.precision_state}"
        )
    lines += ["", "Volumes in the drift window (category: count, share; promised share)"]
    for v in report.volumes:
        promised = f"{v.promised_share:.3f}" if v.promised_share is not None else "n/a"
        lines.append(f"  {v.category:<10}{v.count:>10,}{v.share:>8.3f}   promised {promised}")
    lines += ["", _headline(report)]
    lines += [f"  - {r}" for r in report.reasons]
    return "\n".join(lines)


def _headline(report: MonitorReport) -> str:
    if report.reasons:
        return "Why:"
    if report.state == "unknown":
        return "Too few scores to judge yet (see the minimum rows in MonitorSettings)."
    return "Nothing needs attention."


def _shown_features(features: list[Drift]) -> list[Drift]:
    ranked = sorted(features, key=lambda d: -(d.psi or 0.0))
    flagged = [d for d in ranked if d.state in ("watch", "act")]
    rest = [d for d in ranked if d not in flagged][:TOP_FEATURES]
    return flagged + rest


def _drift_rows(items: list[Drift], name_width: int) -> list[str]:
    if not items:
        return ["  (no stored inputs in the window, or no training reference in the model)"]
    rows = [f"  {'name':<{name_width}}{'PSI':>8}  {'state':<8}moved most (training -> live)"]
    for d in items:
        moved = ", ".join(f"{label} {a:.1%} -> {b:.1%}" for label, a, b in d.moved[:2])
        rows.append(f"  {d.name:<{name_width}}{_f(d.psi, 8)}  {d.state:<8}{moved}")
    return rows


def _dropped(dropped: dict[str, int]) -> str:
    shown = [f"{k.replace('_', ' ')} {v:,}" for k, v in dropped.items() if v]
    return f" (not rows: {', '.join(shown)})" if shown else ""


def _f(value: float | None, width: int) -> str:
    return f"{value:>{width}.3f}" if value is not None else f"{'n/a':>{width}}"
