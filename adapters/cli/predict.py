"""`python -m adapters predict MODEL FILE...`: answer local prompt-item files as the Dataloop app would.

Exit codes: 0 every file was answered (single questions may still be listed under "skipped");
1 some files could not be read or parsed (each says why under "error"; the others are answered);
2 nothing was predicted: usage error, unknown model, bad configuration, or the model could not be loaded.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import EXIT_OK, EXIT_PARTIAL, CommandError, add_model_arguments, add_override_arguments, open_runner


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict", help="run a model of the app on local prompt-item JSON files",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("files", metavar="FILE", nargs="+", help="prompt-item JSON files (legacy or current format)")
    add_override_arguments(parser)
    parser.add_argument("--batch-size", type=int, help="items per predict call and questions per forward pass")
    parser.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # heavy imports (torch, dtlpy) only when this command runs

    if args.out is not None and not args.out.parent.is_dir():
        raise CommandError(f"--out {str(args.out)!r}: folder {str(args.out.parent)!r} does not exist")
    runner = open_runner(args, batch_size=args.batch_size)
    with tqdm(total=len(args.files), desc=args.model, unit="file", file=sys.stderr, disable=None) as progress:
        results = runner.predict_files(args.files, on_batch=progress.update)
    document = json.dumps([result.to_json() for result in results], indent=2, ensure_ascii=False)
    if args.out:
        args.out.write_text(document + "\n", encoding="utf-8")
    else:
        sys.stdout.write(document + "\n")
    failed = [result for result in results if result.error]
    for result in failed:
        print(f"error: {result.file}: {result.error}", file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK
