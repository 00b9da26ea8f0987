"""`leadscore` command line: the data scientists' jobs behind the Makefile.

    leadscore data      generate the bundled synthetic CRM
    leadscore train     train, evaluate, log to MLflow and register a challenger
    leadscore eval-real 5-fold cross-validation on the X Education file
    leadscore promote   move `champion` to the challenger if it is not worse
    leadscore rollback  return `champion` to the previous version
    leadscore models    list the registered versions and their aliases

Errors a user can fix (a bad file, a bad config) print one line and exit 2; nothing
here prints a traceback for them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from features import synthetic
from features.batch import FeatureError
from features.loaders import DataError
from features.spec import SpecError, load_spec
from training import registry
from training.config import load_config
from training.tracking import TrackingSettings

USER_ERRORS = (DataError, SpecError, FeatureError, ValueError, FileNotFoundError)


def _train(args: argparse.Namespace) -> int:
    from training.run import run_training  # imports MLflow: only when training

    config = load_config(args.config).with_overrides(seed=args.seed)
    started = time.perf_counter()
    result = run_training(config, TrackingSettings(), register_model=not args.no_register)
    seconds = time.perf_counter() - started
    print(f"Trained in {seconds:.1f} s, run {result.run_id}")
    for r in result.outcome.stages:
        line = (
            f"  {r.stage:<9} test ROC-AUC {r.metrics.roc_auc:.4f}  PR-AUC {r.metrics.pr_auc:.4f}"
            f"  ECE {r.metrics.ece:.4f}  lift@10% {r.metrics.lift_at_10:.2f}"
            f"  threshold {r.threshold.threshold:.3f}"
        )
        if r.baseline is not None:
            line += f"  | baseline ROC-AUC {r.baseline.roc_auc:.4f}"
        if r.oracle is not None:
            line += (
                f"  | oracle rows: model {r.oracle.model_auc:.4f} = {100 * r.oracle.share:.1f} %"
                f" of oracle {r.oracle.oracle_auc:.4f}"
            )
        print(line)
    if result.version is not None:
        print(
            f"Registered {result.version.name} version {result.version.version} "
            f"as '{registry.CHALLENGER}'. Promote it with `make promote`."
        )
    return 0


def _eval_real(args: argparse.Namespace) -> int:
    from training.cv import cross_validate, format_table
    from training.dataset import load_training_set

    config = load_config(args.config).with_overrides(seed=args.seed)
    if args.leads:
        config = config.with_overrides(leads=args.leads)
    if not Path(config.leads).exists():
        print(
            f"{config.leads}: file not found (the X Education data lives in ../shared)",
            file=sys.stderr,
        )
        return 2
    spec = load_spec(config.spec)
    started = time.perf_counter()
    data = load_training_set(spec, config)
    results = cross_validate(spec, config, data, folds=args.folds)
    print(
        f"{spec.name}: stratified {args.folds}-fold cross-validation, seed {config.seed}, "
        f"{len(data)} leads, {time.perf_counter() - started:.1f} s"
    )
    print(format_table(results))
    return 0


def _data(args: argparse.Namespace) -> int:
    argv = ["--n-leads", str(args.n_leads), "--seed", str(args.seed), "--out", str(args.out)]
    return synthetic.main(argv)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leadscore", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="generate the synthetic sample CRM")
    data.add_argument("--n-leads", type=int, default=20_000)
    data.add_argument("--seed", type=int, default=7)
    data.add_argument("--out", type=Path, default=Path("data/sample"))
    data.set_defaults(func=_data)
    train = sub.add_parser("train", help="train, evaluate, log and register a challenger")
    train.add_argument("--config", default="sample", help="config file or bundled name")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--no-register", action="store_true")
    train.set_defaults(func=_train)
    real = sub.add_parser("eval-real", help="cross-validate on the X Education data")
    real.add_argument("--config", default="x_education")
    real.add_argument("--leads", type=Path, default=None)
    real.add_argument("--folds", type=int, default=5)
    real.add_argument("--seed", type=int, default=None)
    real.set_defaults(func=_eval_real)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in {"promote", "rollback", "models"}:
        command = "list" if args_list[0] == "models" else args_list[0]
        return registry.main([command, *args_list[1:]])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(args_list)
    try:
        return int(args.func(args))
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
