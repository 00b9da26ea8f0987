"""The serving subcommands of ``leadscore``: ``serve`` (the API) and ``score`` (a file).

    leadscore serve [--config CONFIG] [--host H] [--port P] [--workers N]
    leadscore score --leads FILE --out FILE [--actions FILE] [--model URI|FOLDER] ...

``--config`` points the service (or batch scoring) at the champion of that config's
registered model and at its spec, so a model trained on your own data is served without
setting ``LEADSCORE_MODEL_URI`` and ``LEADSCORE_SPEC`` by hand; without it the service
reads its settings (``serving.settings``) as before. ``python -m serving`` is
``leadscore serve``. The work itself stays in ``serving.__main__.serve`` and
``serving.batch_score.run``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.batch import FeatureError
from features.loaders import DataError
from features.spec import FeatureSpec, SpecError

if TYPE_CHECKING:
    import pandas as pd

#: Errors ``leadscore`` reports in one line with exit 2. Model-loading failures are not
#: here: batch scoring reports them itself with exit 1 (the input was fine).
USER_ERRORS: tuple[type[BaseException], ...] = (DataError, SpecError, FeatureError)
_SERVE_ERRORS: tuple[type[BaseException], ...] = (*USER_ERRORS, ValueError)
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``score`` to ``leadscore``'s parser."""
    serve = subparsers.add_parser("serve", help="serve the scoring API (one worker per core)")
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)
    score = subparsers.add_parser("score", help="score a leads file with the champion")
    _add_score_arguments(score)
    score.set_defaults(func=_score)


# --- serve ---------------------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="serve the champion of this training config's model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)


def apply_config(config_path: str | None) -> FeatureSpec | None:
    """Point the service's settings at a training config's spec and champion.

    Written to the environment (explicit variables still win) because every worker
    process builds its own settings from it. Returns the config's spec.
    """
    if not config_path:
        return None
    from training.config import load_pair

    config, spec = load_pair(config_path)
    os.environ.setdefault("LEADSCORE_SPEC", config.spec)
    os.environ.setdefault("LEADSCORE_MODEL_URI", f"models:/{config.model_name}@champion")
    return spec


def example_request(spec: FeatureSpec, host: str, port: int) -> str:
    """A curl that scores one made-up lead of this spec's shape (keys stay in .env)."""
    from serving.schemas import example_lead

    body = json.dumps(example_lead(spec))
    return (
        "  Score a lead of this data set:\n"
        "    KEY=$(sed -n 's/^LEADSCORE_API_KEYS_CRM=\\([^,]*\\).*/\\1/p' .env)\n"
        f'    curl -s -X POST http://{host}:{port}/v1/score -H "X-API-Key: $KEY" \\\n'
        f"      -H 'Content-Type: application/json' -d '{body}'"
    )


def _serve(args: argparse.Namespace) -> int:
    from serving.__main__ import serve
    from serving.bootstrap import ensure_env

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    spec = apply_config(args.config)
    if ensure_env():
        print("leadscore: wrote .env with new random API keys (see .env.example)")
    if spec is not None:
        print(example_request(spec, args.host, args.port), flush=True)
    return serve(args.host, args.port, args.workers)


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``python -m serving``: the same options as ``leadscore serve``."""
    parser = argparse.ArgumentParser(prog="python -m serving", description="= leadscore serve")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return _serve(args)
    except _SERVE_ERRORS as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT


# --- score ---------------------------------------------------------------------------------


def _add_score_arguments(p: argparse.ArgumentParser) -> None:
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


def _score(args: argparse.Namespace) -> int:
    """Exit 0 done, 2 bad input, 1 anything else (the model or the output failed)."""
    from serving.batch_score import DEFAULT_CHUNK, Options, UsageError, run
    from serving.model_store import ModelLoadError
    from serving.settings import ServingSettings

    apply_config(args.config)
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
        return _fail(str(exc), EXIT_BAD_INPUT)
    except (ModelLoadError, SpecError) as exc:
        return _fail(f"cannot load the model: {exc}", EXIT_FAILED)
    except OSError as exc:
        return _fail(f"{exc.strerror or exc} ({exc.filename})", EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted; nothing was written", 130)
    print(summary.line(), file=sys.stderr)
    return 0


def _fail(message: str, status: int) -> int:
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
