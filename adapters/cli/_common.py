"""What the model commands share: their arguments, loading a manifest model offline, and how they fail.

A command raises `CommandError` for anything the user has to fix; `adapters.cli.main` prints it as one line
on stderr and exits with its code.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
from typing import Any, Iterator

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2

logger = logging.getLogger(__name__)


class CommandError(Exception):
    """A one-line reason and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model name from `python -m adapters list`")


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-path", help="local folder of save_pretrained weights (default: the hub id of "
                                             "the manifest)")
    parser.add_argument("--set", dest="assignments", metavar="KEY=VALUE", action="append", default=[],
                        help="override a configuration key; VALUE is parsed as JSON when it can be (repeatable)")


def checked_configuration(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """`args.model`'s configuration with --set/--model-path (and `overrides`), checked as far as it can be before
    torch, transformers and dtlpy are imported (a mistake here is reported in a fraction of a second)."""
    from adapters.core.errors import ConfigurationError
    from adapters.dataloop.local_runner import parse_assignments, precheck_configuration

    try:
        configuration = parse_assignments(args.assignments)
        if args.model_path is not None:
            configuration["model_path"] = args.model_path
        configuration.update({k: v for k, v in overrides.items() if v is not None})
        precheck_configuration(args.model, configuration)
    except KeyError as error:
        raise CommandError(error.args[0]) from None
    except ConfigurationError as error:
        raise CommandError(with_set_hint(str(error), args.assignments)) from None
    return configuration


def open_runner(args: argparse.Namespace, configuration: dict[str, Any] | None = None, **overrides: Any) -> Any:
    """The `LocalRunner` of `args.model` with `configuration` (by default `checked_configuration(args,
    **overrides)`); CommandError if it can't load."""
    if configuration is None:
        configuration = checked_configuration(args, **overrides)
    from adapters.core.errors import ConfigurationError
    from adapters.core.loading import WeightsUnavailable
    from adapters.dataloop.local_runner import LocalRunner, quiet_platform_logs

    try:
        if not args.verbose:
            quiet_platform_logs()
        return LocalRunner(args.model, configuration)
    except WeightsUnavailable as error:
        raise CommandError(f"model {args.model!r}: "
                           + error.advice("pass a local folder of save_pretrained files with --model-path DIR")) from None
    except ConfigurationError as error:
        raise CommandError(with_set_hint(str(error), args.assignments)) from None
    except Exception as error:  # noqa: BLE001 - e.g. weights not found offline: say it in one line
        logger.debug("model load failed", exc_info=True)
        raise CommandError(f"could not load model {args.model!r}: {error}") from None


def with_set_hint(message: str, assignments: list[str]) -> str:
    """`message`, and when it refuses a list given with --set as plain text (`candidate_labels=a,b`), the same
    value written as the JSON list it must be: `--set 'candidate_labels=["a","b"]'`."""
    for assignment in assignments:
        key, _, raw = assignment.partition("=")
        key = key.strip()
        if f"{key!r} must be a list" not in message:
            continue
        try:
            json.loads(raw)
            continue  # it was JSON already (of another type): the message says which
        except ValueError:
            pass
        items = [part.strip() for part in raw.split(",") if part.strip()] or ["a", "b"]
        value = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
        return f"{message}; on the command line: --set '{key}={value}'"
    return message


@contextlib.contextmanager
def data_errors() -> Iterator[None]:
    """Training and evaluation: unusable data exits 1, a configuration the data exposes exits 2."""
    from adapters.core.errors import ConfigurationError
    from adapters.training.dataset import DatasetError

    try:
        yield
    except DatasetError as error:
        raise CommandError(str(error), EXIT_PARTIAL) from None
    except ConfigurationError as error:
        raise CommandError(str(error)) from None
