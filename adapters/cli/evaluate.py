"""`python -m adapters evaluate MODEL DATA_DIR`: score a model on one subset of a local data folder.

The model answers every prompt item of the subset as `predict` would; its first answer to each question is
compared with the reference answers: accuracy and macro-F1 for the classifiers, ROUGE-L for the generators.
Prints the metrics as JSON. Exit codes as for `train`.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(commands: argparse._SubParsersAction) -> None:
    from adapters.training.local import add_model_arguments

    parser = commands.add_parser("evaluate", help="score a model of the app on a local Dataloop-layout folder",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--subset", default="validation", help="the subset folder to score (default: validation)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from adapters.training.local import EXIT_OK, run_safely

    def evaluate(adapter: Any) -> int:
        metrics = adapter.evaluate_path(str(args.data_dir), args.subset)
        sys.stdout.write(json.dumps({"model": args.model, "subset": args.subset, **metrics}, indent=2) + "\n")
        return EXIT_OK

    return run_safely(args, evaluate)
