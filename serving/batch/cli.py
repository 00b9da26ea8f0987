"""``leadscore score``: its options, and the run they ask for with one-line errors.

Registered by :mod:`serving.commands`; imports nothing heavy until a run starts, so
``leadscore --help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from features.loaders import DataError
from features.spec import SpecError

if TYPE_CHECKING:
    import pandas as pd

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--leads", type=Path, required=True, help="leads file (.csv, .csv.gz, .parquet)")
    p.add_argument(
        "--actions",
        type=Path,
        help="tracked actions; without it the leads file must carry the pre-aggregated columns",
    )
    p.add_argument("--out", type=Path, required=True, help="scores file (.csv, .csv.gz, .parquet)")
    p.add_argument("--config", help="score with the champion of this training config's model")
    p.add_argument(
        "--model",
        help="registry URI (models:/name@alias) or a model folder; default LEADSCORE_MODEL_URI",
    )
    p.add_argument(
        "--as-of", type=_timestamp, help="score as of this ISO-8601 time (default: now, UTC)"
    )
    p.add_argument("--chunk-size", type=_positive, help="leads per chunk (default 50,000)")
    p.add_argument(
        "--reasons", type=_reason_count, default=3, help="reasons per lead, 0 = none (faster)"
    )
    p.add_argument("--sort", action="store_true", help="order by score desc, then lead id")
    p.add_argument("--to-log", action="store_true", help="also write the scores to the scoring log")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local: this machine, in bounded memory (default); spark: Apache Spark "
        "(pip install leadscore[spark]; files or folders of parts, any size)",
    )
    p.add_argument(
        "--features-out",
        help="with --engine spark: also write the feature table here (Parquet) and score it",
    )
    p.add_argument(
        "--spark-master",
        help="Spark master for --engine spark (default: the session's, else local[*])",
    )


def command(args: argparse.Namespace) -> int:
    """Exit 0 done, 2 bad input, 1 anything else (the model or the output failed)."""
    from serving.batch.job import DEFAULT_CHUNK, Options, UsageError, run
    from serving.commands import apply_config
    from serving.model_store import ModelLoadError
    from serving.settings import ServingSettings

    apply_config(args.config)
    if args.engine == "spark":
        return _spark(args)
    if args.features_out or args.spark_master:
        flag = "--features-out" if args.features_out else "--spark-master"
        return fail(f"{flag} is only available with --engine spark", EXIT_BAD_INPUT)
    options = Options(
        leads=args.leads,
        out=args.out,
        actions=args.actions,
        model=args.model,
        as_of=args.as_of,
        chunk_size=args.chunk_size or DEFAULT_CHUNK,
        reasons=args.reasons,
        sort=args.sort,
        to_log=args.to_log,
        progress=not args.no_progress,
    )
    try:
        summary = run(options, ServingSettings())
    except (DataError, UsageError) as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except (ModelLoadError, SpecError) as exc:
        return fail(f"cannot load the model: {exc}", EXIT_FAILED)
    except OSError as exc:
        return fail(f"{exc.strerror or exc} ({exc.filename})", EXIT_FAILED)
    except KeyboardInterrupt:
        return fail("interrupted; nothing was written", EXIT_INTERRUPTED)
    print(summary.line(), file=sys.stderr)
    return 0


def _spark(args: argparse.Namespace) -> int:
    """``--engine spark``: the same columns, written by Spark as a folder of parts."""
    from serving.batch.job import UsageError
    from serving.model_store import ModelLoadError
    from serving.settings import ServingSettings

    unsupported = [
        flag for flag, given in (("--sort", args.sort), ("--to-log", args.to_log)) if given
    ]
    if unsupported:
        return fail(f"{unsupported[0]} is not available with --engine spark", EXIT_BAD_INPUT)
    try:
        from serving.batch.spark import run_files
    except ImportError:
        return fail("--engine spark needs PySpark: pip install 'leadscore[spark]'", EXIT_FAILED)
    from features.spark import spark_refusal

    settings = ServingSettings()
    try:
        summary = run_files(
            str(args.leads),
            None if args.actions is None else str(args.actions),
            str(args.out),
            args.model or settings.model_uri,
            settings,
            as_of=args.as_of,
            reasons=args.reasons,
            master=args.spark_master,
            features_out=args.features_out,
        )
    except (DataError, UsageError) as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except (ModelLoadError, SpecError) as exc:
        return fail(f"cannot load the model: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        return fail("interrupted; nothing was written", EXIT_INTERRUPTED)
    except Exception as exc:  # Spark wraps a task's error in its own exception types
        refusal = spark_refusal(exc)
        if refusal is None:
            raise
        return fail(str(refusal), EXIT_BAD_INPUT)
    print(summary.line(), file=sys.stderr)
    return 0


def fail(message: str, status: int) -> int:
    """Print ``message`` as one line on stderr; return ``status``."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return status


def _timestamp(text: str) -> pd.Timestamp:
    import pandas as pd

    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 timestamp: {text!r}") from None
    if ts is pd.NaT:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 timestamp: {text!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _reason_count(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError("must be between 0 and 10")
    return value
