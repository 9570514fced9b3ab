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
    """Warnings only on stderr unless --verbose; dtlpy sets its own logger to DEBUG, so the handler filters too."""
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    logging.getLogger("dtlpy").setLevel(level)
    if not verbose:  # transformers' own weight-loading bars are noise around a JSON answer
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        importlib.import_module("transformers").utils.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging(verbose=wants_verbose(argv))  # before the commands import dtlpy
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
