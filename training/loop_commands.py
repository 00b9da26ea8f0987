"""The learning loop's subcommands of ``leadscore`` (registered by ``training.commands``).

    leadscore train --from-log [--log-url URL] [--with-files]   rows from the scoring log
    leadscore monitor [--json] [--no-mlflow]                    drift and live calibration
    leadscore retrain [--dry-run]                               log -> challenger -> duel

Heavy imports (MLflow, pandas, SQLAlchemy) happen inside the commands, so ``leadscore
--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from training.config import (
    ConfigError,
    FromLogParams,
    TrainConfig,
    load_pair,
    scoring_log_url,
)

EXIT_ACT = 3


def register(subparsers: Any) -> None:
    _add_monitor(subparsers)
    _add_retrain(subparsers)


# --- train --from-log ----------------------------------------------------------------------


def from_log_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that make ``train`` (and ``retrain``) read the scoring log."""
    parser.add_argument(
        "--from-log",
        action="store_true",
        help="train on the scoring log's matured scores (the config's from_log section)",
    )
    parser.add_argument("--log-url", help="scoring log URL (default: the config's from_log.url)")
    parser.add_argument(
        "--with-files", action="store_true", help="add the config's historical files' rows"
    )


def with_log_choice(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """The config as the flags say: from_log only with --from-log, the URL and files as given."""
    if not getattr(args, "from_log", False):
        if args.log_url or args.with_files:
            raise ConfigError("--log-url and --with-files need --from-log")
        return config.model_copy(update={"from_log": None})
    section = config.from_log or FromLogParams()
    update: dict[str, Any] = {}
    if args.log_url:
        update["url"] = args.log_url
    if args.with_files:
        update["with_files"] = True
    return config.model_copy(update={"from_log": section.model_copy(update=update)})


# --- monitor -------------------------------------------------------------------------------


def _add_monitor(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "monitor", help="drift (PSI) and live calibration of the champion on the scoring log"
    )
    p.add_argument("--config", default=None, help="training config (model name, experiment)")
    p.add_argument(
        "--model-uri", help="model to judge (default: models:/<config's model>@champion)"
    )
    p.add_argument(
        "--log-url",
        help="scoring log URL (default: the config's from_log.url, LEADSCORE_DATABASE_URL, "
        "else artifacts/leadscore.db)",
    )
    p.add_argument("--window-days", type=float, help="recent scores compared for drift")
    p.add_argument("--matured-days", type=float, help="width of the matured window")
    p.add_argument("--horizon-days", type=float, help="label horizon (default: the model's)")
    p.add_argument("--now", help="judge as of this ISO-8601 time (default: now)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
    p.add_argument(
        "--fail-on-act",
        action="store_true",
        help=f"exit {EXIT_ACT} when the state is act (for a scheduled check)",
    )
    p.set_defaults(func=_monitor)


def _monitor(args: argparse.Namespace) -> int:
    from monitoring.collect import open_log
    from monitoring.report import build_report
    from monitoring.settings import MonitorSettings
    from monitoring.text import report_text

    config = load_pair(args.config)[0] if args.config else None
    overrides = {
        k: v
        for k, v in (
            ("window_days", args.window_days),
            ("matured_days", args.matured_days),
            ("horizon_days", args.horizon_days),
        )
        if v is not None
    }
    settings = MonitorSettings(**overrides)
    engine = open_log(
        scoring_log_url(config, args.log_url)
    )  # a missing log fails before anything else
    try:
        name, model = _judged_model(args.model_uri, config)
        rejections = config.from_log.rejections if config and config.from_log else None
        report = build_report(
            engine, model, settings, model_name=name, now=_now(args.now), rejections=rejections
        )
    finally:
        engine.dispose()
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=1) + "\n")
    else:
        print(report_text(report))
    if not args.no_mlflow:
        from training.monitor_log import log_report

        _tracking(config)
        run_id = log_report(report)
        if not args.json:
            print(f"Logged to MLflow run {run_id}.")
    return EXIT_ACT if args.fail_on_act and report.state == "act" else 0


def _judged_model(model_uri: str | None, config: TrainConfig | None) -> tuple[str, Any]:
    """The model named by --model-uri (a folder or models:/...), else the champion.

    MLflow is only configured when a registry is asked: a local model folder needs none.
    """
    import tempfile
    from pathlib import Path

    from models.readiness import ReadinessModel
    from models.registry_fetch import (
        ModelFetchError,
        download,
        is_registry_uri,
        local_version,
        model_folder,
    )

    uri = model_uri or f"models:/{_tracking_settings(config).model_name}@champion"
    try:
        if not is_registry_uri(uri):
            folder = model_folder(Path(uri))
            model = ReadinessModel.load(folder)
            model.metadata["version"] = local_version(folder)
            return folder.name, model
        tracking_uri = _tracking(config)
        with tempfile.TemporaryDirectory() as tmp:
            folder, name, version = download(uri, tracking_uri, Path(tmp))
            model = ReadinessModel.load(folder)
    except ModelFetchError as exc:
        raise ConfigError(f"monitor: the model cannot be loaded: {exc}") from None
    model.metadata["version"] = version
    return name, model


def _tracking_settings(config: TrainConfig | None) -> Any:
    from training.tracking import TrackingSettings

    settings = TrackingSettings()
    if config is not None:
        settings = settings.for_names(experiment=config.experiment, model_name=config.model_name)
    return settings


def _tracking(config: TrainConfig | None) -> str:
    """Configure MLflow (only when the command needs it) and return the tracking URI."""
    from training.tracking import configure, resolve_tracking_uri

    settings = _tracking_settings(config)
    configure(settings)
    return str(resolve_tracking_uri(settings))


def _now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--now: not an ISO-8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise ConfigError("--now: give a timezone (e.g. 2026-07-01T00:00:00Z)")
    return when.astimezone(UTC)


# --- retrain -------------------------------------------------------------------------------


def _add_retrain(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "retrain",
        help="train a challenger from the log, compare it with the champion on the same "
        "recent window, promote it if not worse",
    )
    p.add_argument("--config", default="sample", help="training config with a from_log section")
    p.add_argument("--log-url", help="scoring log URL (default: the config's from_log.url)")
    p.add_argument(
        "--with-files", action="store_true", help="add the config's historical files' rows"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="train in memory and say what would happen; register and promote nothing",
    )
    p.set_defaults(func=_retrain, from_log=True)


def _retrain(args: argparse.Namespace) -> int:
    from training.retrain import retrain
    from training.tracking import TrackingSettings

    config, _ = load_pair(args.config)
    config = with_log_choice(config, args)
    result = retrain(config, TrackingSettings(), dry_run=args.dry_run)
    print(result.text())
    return 0
