"""``leadscore rescore``: scores that age, as a job for a scheduler (see :mod:`serving.rescore`).

    leadscore rescore [--config CONFIG] [--batch-size 5000] [--reasons 3] [--no-progress]

Uses the service's settings (``LEADSCORE_DATABASE_URL``, ``LEADSCORE_MODEL_URI``, ...),
or the champion and spec of ``--config``. Exit 0 done, 1 when the model or the scoring
log could not be used or another rescore of the same log is running.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from features.spec import SpecError

EXIT_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="use the champion and spec of this training config")
    parser.add_argument(
        "--batch-size", type=_within(1, 50_000), default=5000, help="leads per commit"
    )
    parser.add_argument(
        "--reasons", type=_within(0, 10), default=3, help="reasons per changed lead, 0 = none"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")


def command(args: argparse.Namespace) -> int:
    from serving.commands import apply_config
    from serving.model_store import ModelLoadError
    from serving.rescore import RescoreBusyError, RescoreSummary, run_job
    from serving.settings import ServingSettings

    apply_config(args.config)

    def progress(summary: RescoreSummary) -> None:
        print(f"\rrescore: {summary.open_leads:,} leads", end="", file=sys.stderr, flush=True)

    try:
        summary = run_job(
            ServingSettings(),
            batch_size=args.batch_size,
            reasons=args.reasons,
            progress=None if args.no_progress else progress,
        )
    except (ModelLoadError, SpecError, RescoreBusyError) as exc:
        print(f"error: cannot rescore: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_FAILED
    if not args.no_progress:
        print(file=sys.stderr)
    print(summary.line(), file=sys.stderr)
    return 0


def _within(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse
