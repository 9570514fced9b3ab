"""`python -m adapters export-onnx MODEL OUTPUT_DIR`: export a classifier for `runtime: onnx`.

Then run it with `--set runtime=onnx --model-path OUTPUT_DIR` (or the same two configuration keys in Dataloop).
Exit codes: 0 exported; 2 usage error, unknown model, a model that does not support ONNX, or the export failed.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXIT_OK, EXIT_USAGE = 0, 2


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export-onnx", help="export a classifier model to ONNX for runtime 'onnx'",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="a model name from `python -m adapters list`")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", type=Path, help="folder to write (new, empty, or an "
                                                                            "earlier export)")
    parser.add_argument("--model-path", help="local folder of save_pretrained weights (default: the hub id of "
                                             "the manifest)")
    parser.add_argument("--quantize", choices=["int8"], help="dynamic int8 weights: smaller and usually faster "
                                                             "on CPU, scores change slightly (docs/performance.md)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Heavy imports only when this command runs, so other commands start fast.
    from adapters.core.errors import ConfigurationError
    from adapters.core.manifest import model_entry
    from adapters.core.module_loader import load_model_module
    from adapters.dataloop.local_runner import quiet_platform_logs
    from adapters.runtimes import runtimes_of
    from adapters.runtimes.onnx_runtime import export_onnx

    if not args.verbose:
        quiet_platform_logs()
    try:
        configuration = model_entry(args.model).get("configuration", {})
        module = load_model_module(configuration.get("module_name"))
    except (KeyError, ConfigurationError) as error:
        return _fail(error.args[0] if isinstance(error, KeyError) else str(error))
    adapter_class = module.HuggingAdapter
    if "onnx" not in runtimes_of(adapter_class.settings):
        return _fail(f"model {args.model!r} ({module.__name__}) does not support runtime 'onnx'")
    model_path = args.model_path or configuration.get("model_path")
    try:
        folder = export_onnx(model_path, args.output_dir, quantize=args.quantize, model_class=adapter_class.model_class)
    except Exception as error:  # noqa: BLE001 - e.g. weights not found offline: say it in one line
        logging.getLogger(__name__).debug("export failed", exc_info=True)
        return _fail(f"could not export {args.model!r} from {model_path!r}: {error}")
    print(f"exported {args.model} to {folder}; run it with runtime 'onnx' and model_path {str(folder)!r}")
    return EXIT_OK


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE
