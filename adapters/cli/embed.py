"""`python -m adapters embed MODEL FILE...`: one embedding per text question of local files, as JSON lines.

A FILE is a text file (.txt, .md: one question, its whole text, as a Dataloop text item) or a prompt-item JSON file
(legacy or current format: each of its text questions). Each question gets one line on stdout,
{"file", "prompt", "element", "vector"} (prompt and element null for a text file), in file and question order,
written as each batch is done. A file that cannot be read, or holds no question, gets one line {"file", "error"}.
Vectors are the mean of the model's hidden states over the question's tokens (the encoder's for BART and T5), as
`embed_items` uploads them to a Dataloop feature set.

Exit codes: 0 every file was embedded (single questions may still be skipped, with a warning);
1 some files could not be read or hold no question (each has its error line; the others are embedded), or the
  model failed (the lines written before stand);
2 nothing was embedded: usage error, unknown model, bad configuration, or the model could not be loaded.
"""
from __future__ import annotations

import argparse
import json
import mimetypes
import sys
from pathlib import Path
from typing import Any, Iterator

from ._common import EXIT_OK, EXIT_PARTIAL, CommandError, add_model_arguments, add_override_arguments, open_runner

# Questions embedded per call of the model (each call batches them with the same planner as predict).
QUESTIONS_PER_CALL = 256


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "embed", help="embed the text questions of local text files and prompt-item JSON files (JSON lines)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("files", metavar="FILE", nargs="+", help="text files (.txt, .md) or prompt-item JSON files")
    add_override_arguments(parser)
    parser.add_argument("--batch-size", type=int, help="questions per forward pass")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from adapters.core.errors import ModelFailure

    hugging = open_runner(args, batch_size=args.batch_size).adapter.hugging
    try:
        return _embed_files(hugging, args.files)
    except ModelFailure as error:  # the lines already written stand; the rest was not embedded
        raise CommandError(f"{error}; the files after the last line written were not embedded", EXIT_PARTIAL) \
            from None


def _embed_files(hugging: Any, files: list[str]) -> int:
    failed = False
    pending: list[tuple[str, Any]] = []
    for file, entry in read_files(files):
        if isinstance(entry, str):  # why the file has nothing to embed; the lines before it come first
            failed = True
            pending = _embed(hugging, pending)
            _write({"file": file, "error": entry})
            print(f"error: {file}: {entry}", file=sys.stderr)
            continue
        pending.extend((file, question) for question in entry)
        if len(pending) >= QUESTIONS_PER_CALL:
            pending = _embed(hugging, pending)
    _embed(hugging, pending)
    return EXIT_PARTIAL if failed else EXIT_OK


def read_files(files: list[str]) -> Iterator[tuple[str, Any]]:
    """(file, its questions), or (file, why it has none), for each file in order."""
    from adapters.core.errors import MalformedItemError
    from adapters.core.prompt_items import TEXT_ITEM_MIMETYPES, parse_prompt_item, text_item
    from adapters.dataloop.local_runner import unreadable

    for index, file in enumerate(files):
        path = Path(file)
        problem = unreadable(path)
        if problem:
            yield file, problem
            continue
        try:
            if mimetypes.guess_type(path.name)[0] in TEXT_ITEM_MIMETYPES:
                parsed = text_item(path.read_bytes().decode("utf-8-sig"), index, file)
            else:
                parsed = parse_prompt_item(json.loads(path.read_text(encoding="utf-8")), index, file)
        except UnicodeDecodeError as error:
            yield file, f"cannot read {file!r}: it is not UTF-8 text (byte {error.start})"
            continue
        except json.JSONDecodeError as error:
            yield file, f"cannot read {file!r}: it is not JSON ({error.msg} at position {error.pos})"
            continue
        except RecursionError:
            yield file, f"cannot read {file!r}: it nests too deeply to be a prompt item"
            continue
        except MalformedItemError as error:
            yield file, str(error)
            continue
        for skipped in parsed.skipped:
            print(f"warning: not embedded: {skipped.describe()}", file=sys.stderr)
        yield (file, parsed.questions) if parsed.questions else (file, "nothing to embed: it holds no text question")


def _embed(hugging: Any, pending: list[tuple[str, Any]]) -> list:
    """Embed and write the pending questions' lines; returns the new (empty) pending list."""
    if not pending:
        return []
    vectors = hugging.embed_texts([q.text for _, q in pending], [q.where for _, q in pending])
    for (file, question), vector in zip(pending, vectors):
        _write({"file": file, "prompt": question.prompt_key, "element": question.element_key, "vector": vector})
    return []


def _write(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    sys.stdout.flush()
