"""`python -m adapters predict MODEL FILE...`: answer local prompt-item files as the Dataloop app would.

Exit codes: 0 every file was answered (single questions may still be listed under "skipped");
1 some files could not be read or parsed (each says why under "error"; the others are answered);
2 nothing was predicted: usage error, unknown model, bad configuration, or the model could not be loaded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
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
    parser.add_argument("--out", type=Path, help="write the JSON to this file instead of stdout (checked before "
                                                 "anything runs; written whole at the end)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # heavy imports (torch, dtlpy) only when this command runs

    partial = reserve_output(args.out) if args.out is not None else None
    try:
        runner = open_runner(args, batch_size=args.batch_size)
        with tqdm(total=0, desc=args.model, unit="question", file=sys.stderr, disable=None,
                  bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}]") as progress:
            def show(done: float, total: int) -> None:
                progress.total = total
                progress.update(done - progress.n)
            results = runner.predict_files(args.files, on_progress=show)
        document = json.dumps([result.to_json() for result in results], indent=2, ensure_ascii=False) + "\n"
        if partial is not None:
            partial.write_text(document, encoding="utf-8")
            os.replace(partial, args.out)
            print(f"answers for {len(results)} file(s) written to {args.out}", file=sys.stderr)
        else:
            sys.stdout.write(document)
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)
    failed = [result for result in results if result.error]
    for result in failed:
        print(f"error: {result.file}: {result.error}", file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK


def reserve_output(out: Path) -> Path:
    """Check `--out` before anything runs, so hours of predictions never die on an unwritable path: returns an
    empty temporary file beside it (proof that the folder is writable), renamed over `out` once complete."""
    where = f"--out {str(out)!r}"
    if out.is_dir():
        raise CommandError(f"{where} is a folder; give the file to write, e.g. {str(out / 'answers.json')!r}")
    if out.exists() and not out.is_file():
        raise CommandError(f"{where} is not a regular file; leave --out out to write to stdout")
    if not out.parent.is_dir():
        raise CommandError(f"{where}: folder {str(out.parent)!r} does not exist")
    try:
        handle, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    except OSError as error:
        raise CommandError(f"{where}: cannot write in {str(out.parent)!r}: {error.strerror or error}") from None
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # as a plain open() would create it, not mkstemp's 0600
    return Path(name)
