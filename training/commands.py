"""The data scientists' subcommands of ``leadscore``: from a file to a promoted model.

    leadscore init DATA --label COLUMN [--out DIR]   draft spec.yaml and config.yaml
    leadscore check SPEC CONFIG                      validate both against the data
    leadscore spec-schema                            JSON Schema of the spec (for editors)
    leadscore data                                   generate the synthetic sample CRM
    leadscore cv --config CONFIG                     k-fold cross-validation of the pipeline
    leadscore train --config CONFIG                  train, log to MLflow, register challenger
    leadscore tune --config CONFIG                   search settings, nested-CV estimate
    leadscore train --from-log --config CONFIG       train on the scoring log's matured scores
    leadscore monitor | retrain                      drift and live calibration; close the loop
    leadscore promote | rollback | models            the registry's aliases

Argument parsing lives here; the work is done by library functions (``training.run``,
``training.cv``, ``training.tune``, ``training.draft``, ``training.check``), which tests and
notebooks call directly. MLflow is imported only by the commands that need it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from features.batch import FeatureError
from features.loaders import DataError
from features.spec import SpecError
from monitoring.errors import LogUnavailableError
from training import loop_commands
from training.config import ConfigError, load_config, load_pair
from training.tracking import RegistryError, TrackingError

#: Exceptions whose message is the whole story for the user (``leadscore`` prints one line).
USER_ERRORS: tuple[type[BaseException], ...] = (
    DataError,
    SpecError,
    FeatureError,
    ConfigError,
    RegistryError,
    TrackingError,
    LogUnavailableError,
    ValueError,
)
DEFAULT_CONFIG = "sample"


def register(subparsers: Any) -> None:
    """Add this package's subcommands to ``leadscore``'s parser."""
    _add_init(subparsers)
    _add_check(subparsers)
    _add_spec_schema(subparsers)
    _add_data(subparsers)
    _add_cv(subparsers)
    _add_train(subparsers)
    _add_rows(subparsers)
    _add_tune(subparsers)
    _add_registry(subparsers)
    loop_commands.register(subparsers)


def _config_argument(parser: argparse.ArgumentParser, default: str | None = DEFAULT_CONFIG) -> None:
    parser.add_argument(
        "--config",
        default=default,
        help="training config file, or a bundled config's name"
        + (f" (default: {default})" if default else ""),
    )


# --- init, check, spec-schema --------------------------------------------------------------


def _add_init(subparsers: Any) -> None:
    p = subparsers.add_parser("init", help="draft a spec and a config from a data file")
    p.add_argument("data", type=Path, help="the leads table (.csv, .csv.gz, .parquet)")
    p.add_argument("--label", required=True, help="the column saying whether a lead converted")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the two YAML files")
    p.add_argument("--name", help="data set name (default: from the file name)")
    p.add_argument("--force", action="store_true", help="overwrite existing spec/config files")
    p.set_defaults(func=_init)


def _init(args: argparse.Namespace) -> int:
    from training.draft import draft, write_draft

    result = draft(args.data, args.label, name=args.name)
    spec_path, config_path = write_draft(result, args.out, force=args.force)
    print(result.summary())
    print(f"Wrote {spec_path} and {config_path}.")
    print(f"Next: review them, then `leadscore check {spec_path} {config_path}`.")
    return 0


def _add_check(subparsers: Any) -> None:
    p = subparsers.add_parser("check", help="validate a spec and a config against the data")
    p.add_argument("spec", type=Path, help="the feature spec (YAML)")
    p.add_argument("config", help="the training config (YAML)")
    p.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from training.check import check

    print(check(args.spec, args.config).text())
    return 0


def _add_spec_schema(subparsers: Any) -> None:
    p = subparsers.add_parser("spec-schema", help="print the spec's JSON Schema (for editors)")
    p.add_argument("--out", type=Path, help="write it to this file instead of stdout")
    p.set_defaults(func=_spec_schema)


def _spec_schema(args: argparse.Namespace) -> int:
    from features.spec import spec_json_schema

    text = json.dumps(spec_json_schema(), indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"Wrote {args.out}")
    return 0


# --- data ----------------------------------------------------------------------------------


def _add_data(subparsers: Any) -> None:
    from features.synthetic import SampleConfig

    defaults = SampleConfig()
    p = subparsers.add_parser("data", help="generate the synthetic sample CRM as CSV files")
    p.add_argument("--n-leads", type=int, default=defaults.n_leads)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--mean-actions", type=float, default=defaults.mean_actions)
    p.add_argument("--decision-days", type=int, default=defaults.decision_days)
    p.add_argument("--out", type=Path, default=Path("data/sample"))
    p.set_defaults(func=_data)


def _data(args: argparse.Namespace) -> int:
    from features import synthetic

    try:
        config = synthetic.SampleConfig(
            n_leads=args.n_leads,
            seed=args.seed,
            mean_actions=args.mean_actions,
            decision_days=args.decision_days,
        )
    except ValueError as exc:
        raise ConfigError(f"sample data: {exc}") from None
    started = time.perf_counter()
    data = synthetic.generate(config)
    generated = time.perf_counter()
    paths = synthetic.write(data, args.out)
    written = time.perf_counter()
    n = len(data.leads)
    print(f"leads {n:,}  actions {len(data.actions):,}  history rows {len(data.history):,}")
    for stage, share in synthetic.funnel_rates(data.history, n).items():
        print(f"  reached {stage:<12} {share:7.2%}")
    print(
        f"generated in {generated - started:.1f}s, written in {written - generated:.1f}s "
        f"to {args.out}"
    )
    for path in paths.values():
        print(f"  {path}")
    return 0


# --- cv, train, tune -----------------------------------------------------------------------


def _add_cv(subparsers: Any) -> None:
    p = subparsers.add_parser("cv", help="cross-validate the whole training pipeline")
    _config_argument(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--leads", type=Path, default=None, help="override the config's leads file")
    p.set_defaults(func=_cv)


def _cv(args: argparse.Namespace) -> int:
    from training.cv import cross_validate, format_table
    from training.dataset import load_training_set

    if args.folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {args.folds}")
    config, spec = load_pair(args.config)
    config = config.with_overrides(seed=args.seed, leads=args.leads)
    started = time.perf_counter()
    data = load_training_set(spec, config)
    results = cross_validate(spec, config, data, folds=args.folds)
    print(
        f"{spec.name}: {args.folds}-fold cross-validation, seed {config.seed}, "
        f"{len(data):,} rows, {time.perf_counter() - started:.1f} s"
    )
    print(format_table(results))
    return 0


def _add_train(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train, log to MLflow and register a challenger")
    _config_argument(p)
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--no-register", action="store_true", help="log the run, register nothing")
    loop_commands.from_log_arguments(p)
    p.add_argument(
        "--rows", type=Path, help="train on rows built by `leadscore rows` (a Parquet folder)"
    )
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from training.run import describe_result, run_training
    from training.tracking import TrackingSettings

    config, _ = load_pair(args.config)
    config = loop_commands.with_log_choice(
        config.with_overrides(seed=args.seed, rows=args.rows), args
    )
    started = time.perf_counter()
    result = run_training(config, TrackingSettings(), register_model=not args.no_register)
    print(f"Trained in {time.perf_counter() - started:.1f} s, run {result.run_id}")
    print(describe_result(result))
    if result.version is not None:
        target = "" if args.config == DEFAULT_CONFIG else f" --config {args.config}"
        print(
            f"Registered {result.version.name} version {result.version.version} as "
            f"'challenger'. Promote it with `leadscore promote{target}`."
        )
    return 0


def _add_rows(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "rows", help="build the config's training rows on Apache Spark (huge event logs)"
    )
    _config_argument(p)
    p.add_argument("--out", required=True, help="where to write the rows (a Parquet folder)")
    p.add_argument("--spark-master", help="Spark master (default: the session's, else local[*])")
    p.add_argument(
        "--leads-per-group",
        type=int,
        default=20_000,
        help="leads aggregated together in one task (their actions must fit its memory)",
    )
    p.set_defaults(func=_rows)


def _rows(args: argparse.Namespace) -> int:
    """The snapshots ``train`` would build, built on Spark; ``train --rows`` reads them."""
    try:
        from features.spark import local_session, read_table, spark_refusal
        from training.spark_rows import training_rows
    except ImportError:
        raise ConfigError("leadscore rows needs PySpark: pip install 'leadscore[spark]'") from None

    config, spec = load_pair(args.config)
    if config.history is None:
        raise ConfigError("leadscore rows needs a stage history file (config.history)")
    started = time.perf_counter()
    spark = local_session("leadscore-rows", master=args.spark_master)
    actions = None
    if config.actions is not None and spec.actions is not None:
        actions = read_table(spark, str(config.actions), spec, multiline=False)
    rows = training_rows(
        read_table(spark, str(config.leads), spec),
        actions,
        read_table(spark, str(config.history), spec, multiline=False),
        spec,
        config,
        leads_per_group=args.leads_per_group,
    )
    try:
        rows.write.mode("errorifexists").parquet(args.out)
    except Exception as exc:  # Spark wraps a task's error in its own exception types
        refusal = spark_refusal(exc)
        if refusal is None:
            raise
        raise refusal from None
    n = spark.read.parquet(args.out).count()
    print(
        f"Built {n:,} training rows on Spark in {time.perf_counter() - started:.1f} s -> "
        f"{args.out}. Train on them with `leadscore train --config {args.config} "
        f"--rows {args.out}`."
    )
    return 0


def _add_tune(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tune", help="search LightGBM and head settings; nested-CV estimate; write the config"
    )
    _config_argument(p)
    p.add_argument("--trials", type=int, default=30, help="settings tried per search")
    p.add_argument("--outer-folds", type=int, default=5, help="folds of the honest estimate")
    p.add_argument("--inner-folds", type=int, default=3, help="folds scoring each trial")
    p.add_argument("--timeout", type=float, default=None, help="seconds per search, at most")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument(
        "--no-write", action="store_true", help="report only; leave the config file unchanged"
    )
    p.set_defaults(func=_tune)


def _tune(args: argparse.Namespace) -> int:
    from training.tune import TuneOptions, tune, write_tuned_config

    config, spec = load_pair(args.config)
    config = config.with_overrides(seed=args.seed)
    options = TuneOptions(
        trials=args.trials,
        outer_folds=args.outer_folds,
        inner_folds=args.inner_folds,
        timeout_s=args.timeout,
    )
    report = tune(spec, config, options, log_to_mlflow=True)
    print(report.text())
    if args.no_write:
        return 0
    if report.gain <= 0:
        # Better by selection only: the held-out folds say the search found nothing.
        print(
            f"Kept the config unchanged: on held-out folds the tuned settings did not beat it "
            f"(mean {report.gain:+.4f} ROC-AUC)."
        )
        return 0
    from training.config import resolve_config_path

    path = resolve_config_path(args.config)
    write_tuned_config(path, report.chosen)
    print(f"Wrote the chosen settings to {path} (nested-CV gain {report.gain:+.4f}).")
    return 0


# --- registry ------------------------------------------------------------------------------


def _add_registry(subparsers: Any) -> None:
    promote = subparsers.add_parser("promote", help="make the challenger champion if not worse")
    _registry_arguments(promote)
    promote.add_argument("--metric", help="run metric to compare (default: the model's own)")
    promote.add_argument("--tolerance", type=float, help="allowed absolute shortfall")
    promote.add_argument(
        "--lower-is-better", action="store_true", help="for losses: smaller metric wins"
    )
    promote.add_argument("--force", action="store_true", help="promote even if worse")
    promote.set_defaults(func=_promote)
    rollback = subparsers.add_parser("rollback", help="return champion to the previous one")
    _registry_arguments(rollback)
    rollback.set_defaults(func=_rollback)
    models = subparsers.add_parser("models", help="list registered versions and their aliases")
    _registry_arguments(models)
    models.add_argument("--metric", help="metric to show per version (default: the model's own)")
    models.set_defaults(func=_models)


def _registry_arguments(parser: argparse.ArgumentParser) -> None:
    _config_argument(parser, default=None)
    parser.add_argument(
        "--name", help="registered model name (default: the config's, else lead-readiness)"
    )


def _registry_target(args: argparse.Namespace) -> tuple[str, Any]:
    """Configure MLflow and return the model name and the config (if one was given)."""
    from training.tracking import TrackingSettings, configure

    config = load_config(args.config) if args.config else None
    settings = TrackingSettings()
    if config is not None:
        settings = settings.for_names(experiment=config.experiment, model_name=config.model_name)
    configure(settings)
    return args.name or settings.model_name, config


def _promote(args: argparse.Namespace) -> int:
    from training import registry

    name, config = _registry_target(args)
    gate = config.promotion if config is not None else None
    tolerance = args.tolerance
    if tolerance is None:
        tolerance = gate.tolerance if gate is not None else registry.DEFAULT_TOLERANCE
    higher = not args.lower_is_better and (gate.higher_is_better if gate is not None else True)
    decision = registry.promote(
        name,
        metric=args.metric or (gate.metric if gate is not None else None),
        tolerance=tolerance,
        higher_is_better=higher,
        force=args.force,
    )
    if decision.promoted or decision.unchanged:
        print(decision.reason)
        return 0
    print(f"{decision.reason} Use --force to override.")
    return 1


def _rollback(args: argparse.Namespace) -> int:
    from training import registry

    name, _ = _registry_target(args)
    print(registry.rollback(name).reason)
    return 0


def _models(args: argparse.Namespace) -> int:
    from training import registry

    name, _ = _registry_target(args)
    versions = registry.describe(name)
    if not versions:
        print(f"No versions of model {name!r} are registered.")
    for info in versions:
        metric = args.metric or info.promotion_metric or "n/a"
        value = info.metrics.get(metric)
        shown = f"{value:.3f}" if value is not None else "n/a"
        tags = f" [{', '.join(info.aliases)}]" if info.aliases else ""
        print(f"Version {info.version}{tags}: {metric} {shown}, run {info.run_id or 'none'}.")
    return 0
