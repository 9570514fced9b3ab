"""`python -m adapters serve MODEL...`: load the named models once and serve them over REST (FastAPI + uvicorn)."""
from __future__ import annotations

import argparse
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ._common import CommandError
from ..manifest import model_entries, model_entry
from ..module_loader import load_model_module
from ..server.limits import MAX_BODY_BYTES

if TYPE_CHECKING:
    from ..hugging_adapter import HuggingAdapter

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    names = [e["name"] for e in model_entries()]
    parser = subparsers.add_parser(
        "serve", help="serve models over REST", description="Load the named models once and serve them over REST; "
        "OpenAPI docs at http://HOST:PORT/docs.")
    parser.add_argument("models", nargs="+", metavar="MODEL", choices=names, help=f"models to load: {', '.join(names)}")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8008, help="port to listen on (default: 8008)")
    parser.add_argument("--model-path", action="append", default=[], metavar="NAME=PATH", type=_assignment,
                        help="weights of model NAME: a hub id or a folder of save_pretrained files (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME.KEY=VALUE",
                        dest="settings", help="configuration KEY of model NAME; VALUE is JSON or a plain string "
                                              "(e.g. --set t5-email.token_count=64; repeatable)")
    parser.add_argument("--max-body-bytes", type=_positive, default=MAX_BODY_BYTES,
                        help=f"largest request body accepted (default: {MAX_BODY_BYTES})")
    parser.set_defaults(run=run)


def _assignment(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def configurations(models: list[str], model_paths: list[tuple[str, str]],
                   settings: list[str]) -> dict[str, dict[str, Any]]:
    """Each model's module plus its --model-path / --set overrides, checked before any weights load.

    Only overrides are kept: the manifest defaults fill in the rest when the adapter resolves its configuration.
    """
    from ..local_runner import parse_assignments, validate_configuration

    chosen = list(dict.fromkeys(models))
    overrides: dict[str, list[str]] = {name: [] for name in chosen}
    for assignment in settings:
        name, dot, key_value = assignment.partition(".")
        if name not in overrides or not dot:
            raise ConfigurationError(f"--set {assignment}: expected NAME.KEY=VALUE with NAME among {chosen}")
        overrides[name].append(key_value)
    result = {name: {"module_name": model_entry(name)["configuration"]["module_name"],
                     **parse_assignments(overrides[name])} for name in chosen}
    for name, path in model_paths:
        if name not in result:
            raise ConfigurationError(f"--model-path {name}=...: {name!r} is not among the models to serve {chosen}")
        result[name]["model_path"] = path
    for name, configuration in result.items():
        try:
            validate_configuration(configuration)
        except ConfigurationError as error:
            raise ConfigurationError(f"{name}: {error}") from None
    return result


def load(configs: dict[str, dict[str, Any]]) -> dict[str, "HuggingAdapter"]:
    """Load every model once, as the Dataloop adapter does: the configured module, then its weights."""
    adapters = {}
    for name, configuration in configs.items():
        module = load_model_module(configuration["module_name"])
        adapters[name] = module.HuggingAdapter(configuration, model_name=name)
        logger.info("loaded %s", name)
    return adapters


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..local_runner import quiet_platform_logs
    from ..server import create_app

    if not args.verbose:
        quiet_platform_logs()
    try:
        adapters = load(configurations(args.models, args.model_path, args.settings))
    except (ConfigurationError, OSError, ValueError) as error:  # bad settings, weights not found offline
        raise CommandError(str(error)) from None
    if not _is_loopback(args.host):
        logger.warning("binding %s: the server is reachable from other machines and has no authentication",
                       args.host)
    app = create_app(adapters, max_body_bytes=args.max_body_bytes)
    uvicorn.run(app, host=args.host, port=args.port, log_level="debug" if args.verbose else "info")
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
