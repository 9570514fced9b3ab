"""`python -m adapters COMMAND ...`: every public module of this package adds one command through `register`."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from pathlib import Path
from typing import Sequence

from ._common import CommandError

VERBOSE_HELP = "log at DEBUG level (includes user text)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adapters",
                                     description="Run this app's Hugging Face models locally, as Dataloop runs them.")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(commands)
    for command in commands.choices.values():  # `-v` after the command too; unset there, the top level's stands
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def wants_verbose(argv: Sequence[str]) -> bool:
    """Whether `-v`/`--verbose` is anywhere among the options (before or after the command), read before the
    full parse so that logging is set up before any command imports dtlpy."""
    early = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    early.add_argument("-v", "--verbose", action="store_true")
    try:
        return early.parse_known_args([arg for arg in argv if arg.startswith("-")])[0].verbose
    except argparse.ArgumentError:  # e.g. `-vx`: the full parse reports it
        return False


def configure_logging(verbose: bool) -> None:
    """Warnings only on stderr unless --verbose; dtlpy sets its own logger to DEBUG, so the handler filters too.

    Without --verbose, the libraries' own chatter stays out: `transformers` logs at ERROR only (its weight-loading
    report of a wrong checkpoint, for one, is said by our one-line error) and draws no progress bars. Set through
    the environment, read when `transformers` is imported, so that a command which never needs it (`list`, a
    usage error) does not pay for importing it here.
    """
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    logging.getLogger("dtlpy").setLevel(level)
    quiet = {} if verbose else _QUIET_LIBRARIES
    for variable, value in _QUIET_LIBRARIES.items():  # a user's own setting stands; ours is undone by -v
        if variable in quiet and variable not in os.environ:
            os.environ[variable] = value
            _SET_HERE.add(variable)
        elif variable not in quiet and variable in _SET_HERE:
            os.environ.pop(variable, None)
            _SET_HERE.discard(variable)
    if "transformers" in sys.modules:  # imported already (in-process callers): set what the environment would
        library_logging = sys.modules["transformers"].utils.logging
        library_logging.set_verbosity(logging.WARNING if verbose else logging.ERROR)
        (library_logging.enable_progress_bar if verbose else library_logging.disable_progress_bar)()


_QUIET_LIBRARIES = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
_SET_HERE: set[str] = set()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging(verbose=wants_verbose(argv))  # before the commands import dtlpy
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
