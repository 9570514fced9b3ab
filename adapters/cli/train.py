"""`python -m adapters train MODEL DATA_DIR OUTPUT_DIR`: fine-tune a model of the app on a local data folder.

DATA_DIR holds the subsets `train` (required) and `validation`, each with `items/` (prompt items) and
`json/` (item JSON with the reference answers as text annotations), as dtlpy's prepare_data writes them.
OUTPUT_DIR receives safetensors weights, tokenizer, config, training_metrics.json (every epoch's numbers and which
epoch was kept, and why) and training_curve.png (loss and validation scores per epoch); pass it as --model-path
to `predict` or `evaluate`. While it trains, stderr shows the steps with the loss and the time left, and a line per
epoch; stdout gets the whole report as JSON at the end. Epochs are counted from 1, on screen and in the JSON.

Everything is checked before anything loads: the model name and keys, DATA_DIR and its train subset, and
OUTPUT_DIR, which must be a folder that can be written (or created). While the run goes, OUTPUT_DIR holds
checkpoints/ (one per epoch) and is locked (.OUTPUT_DIR.lock beside it): a second run into it is refused, naming
the pid of the first. Running the same command again after an interruption continues from the last complete
epoch (a damaged checkpoint, or one of another architecture, is refused in one line). A folder with a finished
model or other files is refused unless --overwrite, which starts a new run; the finished model replaces
OUTPUT_DIR's content in one rename when it is complete. A link is followed: the folder it points to is checked and
written. A system folder, or one holding the home, current or data folder, is refused.
Several GPUs: torchrun --nproc_per_node N -m adapters train ... (same arguments).

Exit codes: 0 trained and saved; 1 the data cannot be used (the message says why); 2 usage error, unknown
model, bad configuration, an output folder that cannot be used (or is in use), or the model could not be loaded.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._common import (
    EXIT_OK,
    EXIT_PARTIAL,
    CommandError,
    add_model_arguments,
    add_override_arguments,
    checked_configuration,
    data_errors,
    open_runner,
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="fine-tune a model of the app on a local Dataloop-layout folder",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_data_argument(parser)
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", type=Path, help="where the trained model is saved")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run (even over this run's checkpoints) and replace what OUTPUT_DIR holds "
                             "(a finished model, other files, checkpoints) once the new model is complete")
    add_override_arguments(parser)
    parser.set_defaults(run=run)


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR",
                        help="folder with <subset>/items and <subset>/json, as dtlpy's prepare_data writes it")


def check_data_dir(data_dir: str, subset: str) -> None:
    """DATA_DIR exists and holds `subset`, checked before anything loads; exit 1 (the data) when not."""
    from ..training.layout import LayoutError, require_subset

    try:
        require_subset(data_dir, subset)
    except LayoutError as error:
        raise CommandError(str(error), EXIT_PARTIAL) from None


def run(args: argparse.Namespace) -> int:
    from ..training.output import OutputError, OutputFolder

    output = OutputFolder(args.output_dir, args.overwrite, keep=(Path(args.data_dir),))
    try:
        output.check()  # before anything loads
    except OutputError as error:
        raise CommandError(str(error)) from None
    configuration = checked_configuration(args)
    check_data_dir(args.data_dir, "train")
    try:
        with output.lock():
            return _train(args, configuration)
    except OutputError as error:
        raise CommandError(str(error)) from None


def _train(args: argparse.Namespace, configuration: dict[str, Any]) -> int:
    from ..training.output import OutputError
    from ..training.plots import TRAINING_CURVE
    from ..training.trainer import is_main_process, use_local_gpu

    use_local_gpu()
    adapter = open_runner(args, configuration).adapter
    adapter.overwrite_output = adapter.fresh_run = args.overwrite  # --overwrite: a new run, replacing what is there
    shown = TrainingDisplay(adapter.hugging.configuration["epochs"]) if is_main_process() else None
    with data_errors():
        try:
            history = adapter.train(str(args.data_dir), str(args.output_dir),
                                    on_epoch_end_callback=shown.epoch_done if shown else None,
                                    on_step=shown.step if shown else None)
        except OutputError as error:
            raise CommandError(str(error)) from None
        finally:
            if shown:
                shown.close()
    adapter.save(str(args.output_dir))
    if is_main_process():
        kept = adapter.kept_epoch
        if kept:
            print(f"kept epoch {kept['epoch']}: {kept['reason']}", file=sys.stderr)
        curve = Path(args.output_dir) / TRAINING_CURVE
        if curve.is_file():
            print(f"training curve: {curve}", file=sys.stderr)
        document = {"model": args.model, "output_dir": str(args.output_dir), "seed": adapter.training_seed,
                    "kept": kept, "epochs": history}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    return EXIT_OK


class TrainingDisplay:
    """What a person watches on stderr: a bar over the run's optimizer steps with the epoch's loss so far and the
    time left, and one line per finished epoch with its numbers (epochs counted from 1, as in the JSON)."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.bar: Any = None

    def step(self, step: int, steps: int, loss: float | None) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, initial=step - 1, desc="training", unit="step", file=sys.stderr,
                            disable=None, dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| step {n}/{total} [{elapsed}<{remaining}"
                                       "{postfix}]")
        epoch = min((step - 1) * self.epochs // steps + 1, self.epochs) if steps > 0 else 1
        self.bar.set_postfix_str(f"epoch {epoch}/{self.epochs}" + (f", loss {loss:.4f}" if loss is not None else ""),
                                 refresh=False)
        self.bar.update(step - self.bar.n)

    def epoch_done(self, index: int, epochs: int, metrics: dict[str, Any]) -> None:
        numbers = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items()
                            if key not in ("epoch", "epochs") and isinstance(value, float))
        line = f"epoch {metrics['epoch']}/{epochs} done: {numbers}"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
