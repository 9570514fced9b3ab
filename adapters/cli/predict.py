"""`python -m adapters predict MODEL FILE...`: answer local prompt-item files as the Dataloop app would.

Input: prompt-item JSON files (legacy or current format); `-` reads questions from stdin, one per line; `--text`
gives one question on the command line (repeatable). Everything is checked before the model loads: the model
name, the configuration keys, the output file, and every file is read and parsed (a file that cannot be answered
is reported at once; the others are still answered).

Output, written file by file as each is finished (a failure late in a long run keeps everything done before it):
by default one row per answer (item, prompt, answer, confidence): a table on a terminal, JSON lines when piped;
`--json` prints the full results instead (every annotation, as the platform stores it, and what was skipped);
`--out FILE` writes the full results to FILE.

Exit codes: 0 every input was answered (single questions may still be listed as skipped);
1 some files could not be read or parsed (each says why; the others are answered), or the answers could not all
be written (one line says which were kept, and where);
2 nothing was predicted: usage error, unknown model, bad configuration, or the model could not be loaded.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ._common import (
    EXIT_OK,
    EXIT_PARTIAL,
    CommandError,
    add_model_arguments,
    add_override_arguments,
    checked_configuration,
    open_runner,
)
from ._output import EntryWriter, JsonArrayWriter, JsonLinesWriter, TableWriter, WriteFailed, question_texts

STDIN = "-"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict", help="run a model of the app on local prompt-item files, stdin lines or --text",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("files", metavar="FILE", nargs="*",
                        help="prompt-item JSON files (legacy or current format); - reads one question per line of "
                             "stdin")
    parser.add_argument("--text", action="append", default=[], metavar="TEXT",
                        help="a question to answer, without writing a prompt item (repeatable)")
    add_override_arguments(parser)
    parser.add_argument("--batch-size", type=int, help="items per predict call and questions per forward pass")
    full = parser.add_mutually_exclusive_group()
    full.add_argument("--json", action="store_true",
                      help="print the full results (every annotation, skipped questions) as one JSON array")
    full.add_argument("--out", type=Path, help="write the full results as JSON to this file instead (checked "
                                               "before anything runs; written as files finish, renamed into place "
                                               "when complete)")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Inputs:
    """What to answer: `paths` to read (files as given; stdin lines and --text written to a temporary folder as
    prompt items) and the `names` results call them by (the file, `stdin:LINE`, `text:N`)."""

    paths: list[Path]
    names: list[str]


def run(args: argparse.Namespace) -> int:
    from adapters.dataloop.local_runner import check_file

    if not args.files and not args.text:
        raise CommandError("nothing to answer: give prompt-item FILEs, - (one question per line of stdin) or --text")
    if args.files.count(STDIN) > 1:
        raise CommandError("- (stdin) can be given once")
    if any(not text.strip() for text in args.text):
        raise CommandError("--text must not be empty")
    partial = reserve_output(args.out) if args.out is not None else None
    folder = Path(tempfile.mkdtemp(prefix="hf-adapters-predict-"))
    try:
        configuration = checked_configuration(args, batch_size=args.batch_size)
        inputs = gather_inputs(args, folder)
        checks = [check_file(path, name) for path, name in zip(inputs.paths, inputs.names)]
        for name, check in zip(inputs.names, checks):  # said now, before the model loads; the others go on
            if check.problem:
                _error_line(name, check.problem)
        answerable = any(not check.problem for check in checks)
        runner = open_runner(args, configuration) if answerable else None
        with open_output(partial) if partial is not None else _stdout() as stream:
            writer = choose_writer(args, stream, dict(zip(inputs.names, map(str, inputs.paths))))
            try:
                results = _predict(runner, inputs, checks, writer, args)
                writer.close()
            except WriteFailed as failure:
                return _report_write_failure(failure, writer, args, partial, len(inputs.names))
        if partial is not None:
            os.replace(partial, args.out)
            print(f"answers for {len(results)} input(s) written to {args.out}", file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if partial is not None:
            partial.unlink(missing_ok=True)
    failed = [result for result in results if result.error]
    for result, check in zip(results, checks):
        if result.error and not check.problem:  # failed while predicting: not said yet
            _error_line(result.file, result.error)
    return EXIT_PARTIAL if failed else EXIT_OK


def gather_inputs(args: argparse.Namespace, folder: Path) -> Inputs:
    """Files as given (`-` in its place: a question per non-empty line of stdin), then each --text."""
    paths, names = [], []

    def question(text: str, name: str) -> None:
        path = folder / f"{len(paths)}.json"
        path.write_text(json.dumps({"prompts": {"1": [{"mimetype": "application/text", "value": text}]}}),
                        encoding="utf-8")  # ASCII: json.dumps escapes every other character
        paths.append(path)
        names.append(name)

    for file in args.files:
        if file != STDIN:
            paths.append(Path(file))
            names.append(file)
            continue
        empty = 0
        for number, line in enumerate(sys.stdin.buffer, start=1):  # bytes that are not UTF-8 kept as escapes
            text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
            if text.strip():
                question(text, f"stdin:{number}")
            else:
                empty += 1
        if empty:
            print(f"note: {empty} empty line(s) of stdin skipped", file=sys.stderr)
    for number, text in enumerate(args.text, start=1):
        question(text, f"text:{number}")
    return Inputs(paths, names)


def choose_writer(args: argparse.Namespace, stream: BinaryIO, paths: dict[str, str]) -> EntryWriter:
    """The full JSON array for --out and --json; else the compact rows: a table on a terminal, JSON lines when
    piped."""
    if args.out is not None or args.json:
        return JsonArrayWriter(stream)

    def questions(name: str) -> dict:
        return question_texts(paths.get(name, name))

    if stream is sys.stdout.buffer and sys.stdout.isatty():
        color = "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        return TableWriter(stream, questions, shutil.get_terminal_size().columns, color)
    return JsonLinesWriter(stream, questions)


def _predict(runner: Any, inputs: Inputs, checks: list, writer: EntryWriter, args: argparse.Namespace) -> list:
    """Every input's result, each handed to `writer` as it is finished; without a runner (no input could be read),
    the results of the checks alone."""
    from adapters.dataloop.local_runner import FileResult

    if runner is None:
        results = [FileResult(name, error=check.problem) for name, check in zip(inputs.names, checks)]
        for result in results:
            writer.write(result.to_json())
        return results
    from tqdm import tqdm

    total = sum(check.questions for check in checks if not check.problem)
    with tqdm(total=total, desc=args.model, unit="question", file=sys.stderr, disable=None,
              bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}]") as progress:
        def show(done: float, _total: int) -> None:
            progress.update(done - progress.n)
        return runner.predict_files(inputs.paths, on_progress=show, names=inputs.names, checks=checks,
                                    on_result=lambda result: writer.write(result.to_json()))


def _error_line(name: str, problem: str) -> None:
    """`error: NAME: PROBLEM` on stderr; a file name that is not UTF-8 is shown with its escapes."""
    print(f"error: {name}: {problem}".encode("utf-8", "backslashreplace").decode(), file=sys.stderr)


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


def _report_write_failure(failure: WriteFailed, writer: EntryWriter, args: argparse.Namespace,
                          partial: Path | None, inputs: int) -> int:
    """One line: why writing stopped, and which answers were kept where. A file is cut back to its complete
    answers and closed into valid JSON; it replaces --out only then."""
    closed = writer.salvage()
    kept = f"the answers for the first {failure.written} of {inputs} input(s)"
    if partial is None:
        where = f"stdout holds {kept}" + ("" if closed else f" ({writer.incomplete})")
    elif closed:
        os.replace(partial, args.out)
        where = f"{str(args.out)!r} holds {kept}"
    else:
        kept_at = partial.with_name(partial.name.removesuffix(".partial") + ".kept")
        try:
            os.replace(partial, kept_at)
            where = f"{str(kept_at)!r} holds {kept} ({writer.incomplete.replace('the JSON', 'its JSON')})"
        except OSError:
            where = "nothing could be kept"
    target = "stdout" if partial is None else f"--out {str(args.out)!r}"
    print(f"error: writing the answers to {target} failed ({failure}) after {failure.written} of "
          f"{inputs} input(s); the run stopped there; {where}", file=sys.stderr)
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
