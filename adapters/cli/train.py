"""`python -m adapters train MODEL DATA_DIR OUTPUT_DIR`: fine-tune a model of the app on a local data folder.

DATA_DIR holds the subsets `train` (required) and `validation`, each with `items/` (prompt items) and
`json/` (item JSON with the reference answers as text annotations), as dtlpy's prepare_data writes them.
OUTPUT_DIR receives safetensors weights, tokenizer, config and training_metrics.json; pass it as
--model-path to `predict` or `evaluate`. Prints every epoch's metrics as JSON.

OUTPUT_DIR is checked before anything loads: it must be a folder that can be written (or created). While the
run goes, it holds checkpoints/ (one per epoch); running the same command again after an interruption
continues from the last complete epoch (a damaged checkpoint, or one of another architecture, is refused in one
line). A folder with a finished model or other files is refused unless --overwrite, which starts a new run; the
finished model replaces OUTPUT_DIR's content in one rename when it is complete. A link is followed: the folder it
points to is checked and written. A system folder, or one holding the home, current or data folder, is refused.
Several GPUs: torchrun --nproc_per_node N -m adapters train ... (same arguments).

Exit codes: 0 trained and saved; 1 the data cannot be used (the message says why); 2 usage error, unknown
model, bad configuration, an output folder that cannot be used, or the model could not be loaded.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import EXIT_OK, CommandError, add_model_arguments, add_override_arguments, data_errors, open_runner


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


def run(args: argparse.Namespace) -> int:
    from ..training.output import OutputError, OutputFolder
    from ..training.trainer import is_main_process, use_local_gpu

    try:
        OutputFolder(args.output_dir, args.overwrite, keep=(Path(args.data_dir),)).check()  # before anything loads
    except OutputError as error:
        raise CommandError(str(error)) from None
    use_local_gpu()
    adapter = open_runner(args).adapter
    adapter.overwrite_output = adapter.fresh_run = args.overwrite  # --overwrite: a new run, replacing what is there

    def progress(epoch: int, epochs: int) -> None:
        print(f"epoch {epoch + 1}/{epochs} done", file=sys.stderr)

    with data_errors():
        try:
            history = adapter.train(str(args.data_dir), str(args.output_dir), on_epoch_end_callback=progress)
        except OutputError as error:
            raise CommandError(str(error)) from None
    adapter.save(str(args.output_dir))
    if is_main_process():
        document = {"model": args.model, "output_dir": str(args.output_dir), "seed": adapter.training_seed,
                    "epochs": history}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    return EXIT_OK
