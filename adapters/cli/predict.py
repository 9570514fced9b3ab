"""`python -m adapters predict MODEL FILE...`: answer local prompt-item files as the Dataloop app would.

Each file's answers are written as soon as they are finished (a JSON array, entry by entry), so a failure late in
a long run keeps everything done before it.

Exit codes: 0 every file was answered (single questions may still be listed under "skipped");
1 some files could not be read or parsed (each says why under "error"; the others are answered), or the answers
could not all be written (one line says which were kept, and where);
2 nothing was predicted: usage error, unknown model, bad configuration, or the model could not be loaded.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

from ._common import EXIT_OK, EXIT_PARTIAL, CommandError, add_model_arguments, add_override_arguments, open_runner
from ._output import JsonArrayWriter, WriteFailed


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict", help="run a model of the app on local prompt-item JSON files",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("files", metavar="FILE", nargs="+", help="prompt-item JSON files (legacy or current format)")
    add_override_arguments(parser)
    parser.add_argument("--batch-size", type=int, help="items per predict call and questions per forward pass")
    parser.add_argument("--out", type=Path, help="write the JSON to this file instead of stdout (checked before "
                                                 "anything runs; written as files finish, renamed into place "
                                                 "when complete)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # heavy imports (torch, dtlpy) only when this command runs

    partial = reserve_output(args.out) if args.out is not None else None
    try:
        runner = open_runner(args, batch_size=args.batch_size)
        with open_output(partial) if partial is not None else _stdout() as stream:
            writer = JsonArrayWriter(stream)
            try:
                with tqdm(total=0, desc=args.model, unit="question", file=sys.stderr, disable=None,
                          bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}]") as progress:
                    def show(done: float, total: int) -> None:
                        progress.total = total
                        progress.update(done - progress.n)
                    results = runner.predict_files(args.files, on_progress=show,
                                                   on_result=lambda result: writer.write(result.to_json()))
                writer.close()
            except WriteFailed as failure:
                return _report_write_failure(failure, writer, args, partial)
        if partial is not None:
            os.replace(partial, args.out)
            print(f"answers for {len(results)} file(s) written to {args.out}", file=sys.stderr)
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)
    failed = [result for result in results if result.error]
    for result in failed:  # a file name that is not UTF-8 is shown with its escapes
        print(f"error: {result.file}: {result.error}".encode("utf-8", "backslashreplace").decode(), file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK


def open_output(path: Path) -> BinaryIO:
    """The reserved partial file, unbuffered: what a write returns is on disk, and a failure can be cut back."""
    return open(path, "wb", buffering=0)


class _stdout:
    """stdout's bytes, left open when the command ends; after a failed write, stdout is pointed at /dev/null so
    that the interpreter's last flush of the refused bytes does not fail a second time at exit."""

    def __enter__(self) -> BinaryIO:
        return sys.stdout.buffer

    def __exit__(self, kind: object, *exc: object) -> None:
        try:
            sys.stdout.buffer.flush()
        except OSError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def _report_write_failure(failure: WriteFailed, writer: JsonArrayWriter, args: argparse.Namespace,
                          partial: Path | None) -> int:
    """One line: why writing stopped, and which answers were kept where. A file is cut back to its complete
    answers and closed into valid JSON; it replaces --out only then."""
    closed = writer.salvage()
    kept = f"the answers for the first {failure.written} of {len(args.files)} file(s)"
    if partial is None:
        where = f"stdout holds {kept}" + ("" if closed else " (the JSON array is not closed)")
    elif closed:
        os.replace(partial, args.out)
        where = f"{str(args.out)!r} holds {kept}"
    else:
        kept_at = partial.with_name(partial.name.removesuffix(".partial") + ".kept")
        try:
            os.replace(partial, kept_at)
            where = f"{str(kept_at)!r} holds {kept} (its JSON array is not closed)"
        except OSError:
            where = "nothing could be kept"
    target = "stdout" if partial is None else f"--out {str(args.out)!r}"
    print(f"error: writing the answers to {target} failed ({failure}) after {failure.written} of "
          f"{len(args.files)} file(s); the run stopped there; {where}", file=sys.stderr)
    return EXIT_PARTIAL


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
