"""`python -m adapters evaluate MODEL DATA_DIR`: score a model on one subset of a local data folder.

The model answers every prompt item of the subset as `predict` would; its first answer to each question is
compared with the reference answers: accuracy and macro-F1 for the classifiers, ROUGE-1/2/L (rouge-score,
stemmed) for the generators.
Prints the metrics as JSON. Exit codes as for `train`.
"""
from __future__ import annotations

import argparse
import json
import sys

from ._common import EXIT_OK, add_model_arguments, add_override_arguments, data_errors, open_runner
from .train import add_data_argument


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="score a model of the app on a local Dataloop-layout folder",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_data_argument(parser)
    parser.add_argument("--subset", default="validation", help="the subset folder to score (default: validation)")
    add_override_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    adapter = open_runner(args).adapter
    with data_errors():
        metrics = adapter.evaluate_path(str(args.data_dir), args.subset)
    sys.stdout.write(json.dumps({"model": args.model, "subset": args.subset, **metrics}, indent=2) + "\n")
    return EXIT_OK
