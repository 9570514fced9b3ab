"""Train and evaluate a manifest model on a local data folder, offline, through the same `ModelAdapter`.

Shared by `python -m adapters train` and `python -m adapters evaluate`: the model entity comes from
`adapters/local_runner.py` (manifest configuration, no platform); metrics that would go to `model.metrics`
are kept on the adapter and printed by the command instead.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..errors import ConfigurationError
from .dataset import DatasetError

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model name from `python -m adapters list`")
    parser.add_argument("data_dir", metavar="DATA_DIR",
                        help="folder with <subset>/items and <subset>/json, as dtlpy's prepare_data writes it")
    parser.add_argument("--model-path", help="local folder of save_pretrained weights (default: the manifest's)")
    parser.add_argument("--set", dest="assignments", metavar="KEY=VALUE", action="append", default=[],
                        help="override a configuration key; VALUE is parsed as JSON when it can be (repeatable)")


def open_adapter(args: argparse.Namespace) -> Any:
    """The loaded `ModelAdapter` for `args.model`; raises ConfigurationError/KeyError with a one-line reason."""
    from ..local_runner import LocalRunner, parse_assignments, quiet_platform_logs

    if not args.verbose:
        quiet_platform_logs()
    overrides = parse_assignments(args.assignments)
    if args.model_path is not None:
        overrides["model_path"] = args.model_path
    runner = LocalRunner(args.model, overrides)
    runner.adapter.uploaded_samples = []
    runner.model.metrics.create = lambda samples, dataset_id=None: runner.adapter.uploaded_samples.extend(samples)
    return runner.adapter


def run_safely(args: argparse.Namespace, action: Any) -> int:
    """Run `action(adapter)`; one line on stderr and an exit code for whatever the user has to fix."""
    try:
        adapter = open_adapter(args)
    except (KeyError, ConfigurationError) as error:
        return fail(error.args[0] if isinstance(error, KeyError) else str(error), EXIT_USAGE)
    except Exception as error:  # noqa: BLE001 - e.g. weights not found offline: say it in one line
        logger.debug("model load failed", exc_info=True)
        return fail(f"could not load model {args.model!r}: {error}", EXIT_USAGE)
    try:
        return action(adapter)
    except DatasetError as error:
        return fail(str(error), EXIT_DATA)
    except ConfigurationError as error:
        return fail(str(error), EXIT_USAGE)


def fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code
