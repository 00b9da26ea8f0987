"""The serving subcommands of ``leadscore``: ``serve`` (the API), ``score`` (a file) and
``rescore`` (every open lead of the scoring log, as of now).

    leadscore serve [--config CONFIG] [--host H] [--port P] [--workers N]
    leadscore score --leads FILE --out FILE [--actions FILE] [--model URI|FOLDER] ...
    leadscore rescore [--config CONFIG] [--batch-size N] [--reasons K]

``--config`` points the service (or batch scoring) at the champion of that config's
registered model and at its spec, so a model trained on your own data is served without
setting ``LEADSCORE_MODEL_URI`` and ``LEADSCORE_SPEC`` by hand; without it the service
reads its settings (``serving.settings``) as before. ``python -m serving`` is
``leadscore serve``. The work itself stays in ``serving.__main__.serve`` and
``serving.batch.job.run``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from features.batch import FeatureError
from features.loaders import DataError
from features.spec import FeatureSpec, SpecError
from serving import rescore_cli
from serving.batch import cli as batch_cli

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
    batch_cli.add_arguments(score)
    score.set_defaults(func=batch_cli.command)
    rescore = subparsers.add_parser(
        "rescore", help="re-score every open lead as of now from its stored input"
    )
    rescore_cli.add_arguments(rescore)
    rescore.set_defaults(func=rescore_cli.command)


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
