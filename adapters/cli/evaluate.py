"""`python -m adapters evaluate MODEL DATA_DIR`: score a model on one subset of a local data folder.

The model answers every prompt item of the subset as `predict` would; its first answer to each question is
compared with the reference answers: accuracy and macro-F1 for the classifiers, ROUGE-1/2/L (rouge-score,
stemmed) for the generators. Prints the metrics as JSON; a classifier's also hold its confusion matrix
(`confusion_matrix`: `labels`, and `counts[reference][predicted]`), drawn as a PNG picture too (--plot).
Exit codes as for `train`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import (
    EXIT_OK,
    CommandError,
    add_model_arguments,
    add_override_arguments,
    checked_configuration,
    data_errors,
    open_runner,
)
from .train import add_data_argument, check_data_dir

DEFAULT_PLOT = "confusion_matrix.png"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="score a model of the app on a local Dataloop-layout folder",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_data_argument(parser)
    parser.add_argument("--subset", default="validation", help="the subset folder to score (default: validation)")
    parser.add_argument("--plot", type=Path, default=Path(DEFAULT_PLOT), metavar="PNG",
                        help=f"where a classifier's confusion matrix is drawn (default: {DEFAULT_PLOT} in the current "
                             "folder; checked before the model loads)")
    parser.add_argument("--no-plot", dest="plot", action="store_const", const=None,
                        help="draw no confusion matrix")
    add_override_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    configuration = checked_configuration(args)
    check_data_dir(args.data_dir, args.subset)
    if args.plot is not None:
        check_plot_path(args.plot)
    adapter = open_runner(args, configuration).adapter
    with data_errors():
        metrics = adapter.evaluate_path(str(args.data_dir), args.subset, with_confusion=True)
    confusion = metrics.get("confusion_matrix")
    if confusion and args.plot is not None:
        from ..training.plots import confusion_matrix

        try:
            confusion_matrix(confusion["labels"], confusion["counts"], args.plot,
                             f"{args.model} on {args.subset} ({metrics['questions']} questions)")
            print(f"confusion matrix: {args.plot}", file=sys.stderr)
        except Exception as error:  # noqa: BLE001 - the metrics are printed all the same
            print(f"warning: could not draw the confusion matrix at {str(args.plot)!r}: {error}", file=sys.stderr)
    sys.stdout.write(json.dumps({"model": args.model, "subset": args.subset, **metrics}, indent=2) + "\n")
    return EXIT_OK


def check_plot_path(path: Path) -> None:
    if path.is_dir():
        raise CommandError(f"--plot {str(path)!r} is a folder; give the PNG file to write, e.g. "
                           f"{str(path / DEFAULT_PLOT)!r}")
    if not path.parent.is_dir():
        raise CommandError(f"--plot {str(path)!r}: folder {str(path.parent)!r} does not exist")
