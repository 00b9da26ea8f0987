"""The ``leadscore`` command line: every data-science and serving job behind one name.

Each package contributes its subcommands through a ``register(subparsers)`` function and
says which of its exceptions are the user's to fix (``USER_ERRORS``); this module only
puts them together. A user error (a bad file, a bad config, an unreachable MLflow) prints
one line on stderr and exits 2, without a traceback; anything else is a bug and keeps its
traceback. ``LEADSCORE_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from serving import commands as serving_commands
from training import commands as training_commands

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
COMMAND_MODULES: tuple[ModuleType, ...] = (training_commands, serving_commands)

DESCRIPTION = """\
Lead scoring you can train on your own data.

  leadscore init DATA.csv --label COLUMN     draft a spec and a config from a file
  leadscore check SPEC CONFIG                what will be a feature, what not, and why
  leadscore cv --config CONFIG               honest cross-validated accuracy
  leadscore train --config CONFIG            train, log to MLflow, register a challenger
  leadscore promote --config CONFIG          make the challenger champion if not worse
  leadscore serve --config CONFIG            serve the champion over HTTP
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="leadscore",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [OSError]
    for module in COMMAND_MODULES:
        found += list(getattr(module, "USER_ERRORS", ()))
    return tuple(found)


def is_user_error(exc: BaseException) -> bool:
    """A failure the user can act on: the packages' declared errors, files, and MLflow's own.

    MLflow's exceptions are recognised by module so that commands which never touch MLflow
    do not pay its import to catch them.
    """
    if isinstance(exc, user_errors()):
        return True
    return any(cls.__module__.split(".")[0] == "mlflow" for cls in type(exc).__mro__)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 2000 else text[:1997] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("leadscore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not is_user_error(exc) or os.environ.get("LEADSCORE_DEBUG"):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
