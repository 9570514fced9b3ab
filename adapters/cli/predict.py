"""`python -m adapters predict MODEL FILE...`: answer local prompt-item files as the Dataloop app would.

Exit codes: 0 every file was answered (single questions may still be listed under "skipped");
1 some files could not be read or parsed (each says why under "error"; the others are answered);
2 nothing was predicted: usage error, unknown model, bad configuration, or the model could not be loaded.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict", help="run a model of the app on local prompt-item JSON files",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="a model name from `python -m adapters list`")
    parser.add_argument("files", metavar="FILE", nargs="+", help="prompt-item JSON files (legacy or current format)")
    parser.add_argument("--model-path", help="local folder of save_pretrained weights (default: the hub id of "
                                             "the manifest)")
    parser.add_argument("--set", dest="assignments", metavar="KEY=VALUE", action="append", default=[],
                        help="override a configuration key; VALUE is parsed as JSON when it can be (repeatable)")
    parser.add_argument("--batch-size", type=int, help="items per predict call and questions per forward pass")
    parser.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Heavy imports (torch, dtlpy) only when this command runs, so other commands start fast.
    from tqdm import tqdm

    from adapters.errors import ConfigurationError
    from adapters.local_runner import LocalRunner, parse_assignments, quiet_platform_logs
    from adapters.manifest import model_entry

    if args.out is not None and not args.out.parent.is_dir():
        return _fail(f"--out {str(args.out)!r}: folder {str(args.out.parent)!r} does not exist")
    try:
        model_entry(args.model)  # an unknown name fails before torch and dtlpy are imported
        overrides = parse_assignments(args.assignments)
        if args.model_path is not None:
            overrides["model_path"] = args.model_path
        if args.batch_size is not None:
            overrides["batch_size"] = args.batch_size
        if not args.verbose:
            quiet_platform_logs()
        runner = LocalRunner(args.model, overrides)
    except (KeyError, ConfigurationError) as error:
        return _fail(error.args[0] if isinstance(error, KeyError) else str(error))
    except Exception as error:  # noqa: BLE001 - e.g. weights not found offline: say it in one line
        logging.getLogger(__name__).debug("model load failed", exc_info=True)
        return _fail(f"could not load model {args.model!r}: {error}")

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
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE
