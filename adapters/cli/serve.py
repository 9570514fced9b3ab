"""`python -m adapters serve MODEL...`: load the named models once and serve them over REST (FastAPI + uvicorn)."""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import math
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError
from ..core.manifest import model_entries, model_entry
from ..core.module_loader import load_model_module
from ..server.limits import ServerLimits
from ._common import CommandError

if TYPE_CHECKING:
    from ..core.hugging_adapter import HuggingAdapter

logger = logging.getLogger(__name__)

DEFAULT_LIMITS = ServerLimits()


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return int(text)


# (option, type, meaning): each is a field of ServerLimits, documented in docs/server.md
LIMIT_OPTIONS = (
    ("--max-body-bytes", _positive, "largest request body accepted, in bytes (413 past it)"),
    ("--max-request-tokens", _positive, "estimated padded tokens one request may cost a model (413 past it)"),
    ("--max-queue-tokens", _positive, "estimated padded tokens of the requests one model has running or waiting "
     "(503 with Retry-After past it)"),
    ("--max-connections", _positive, "open connections (more are answered 503 and closed)"),
    ("--max-pending-bytes", _positive, "request bytes held at once over all requests (503 past it)"),
    ("--header-timeout", _seconds, "seconds a client has to send its request headers (closed past it)"),
    ("--body-timeout", _seconds, "seconds a client has to send its request body (408 past it)"),
    ("--keep-alive-timeout", _positive, "seconds an idle connection stays open between requests"),
    ("--shutdown-timeout", _seconds, "seconds SIGTERM waits for running requests before abandoning them"),
)


def register(subparsers: Any) -> None:
    names = [e["name"] for e in model_entries()]
    parser = subparsers.add_parser(
        "serve", help="serve models over REST", description="Load the named models once and serve them over REST; "
        "OpenAPI docs at http://HOST:PORT/docs. Limits and what happens past each: docs/server.md.")
    parser.add_argument("models", nargs="+", metavar="MODEL", choices=names, help=f"models to load: {', '.join(names)}")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=_port, default=8008, help="port to listen on (default: 8008)")
    parser.add_argument("--model-path", action="append", default=[], metavar="NAME=PATH", type=_assignment,
                        help="weights of model NAME: a hub id or a folder of save_pretrained files (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME.KEY=VALUE",
                        dest="settings", help="configuration KEY of model NAME; VALUE is JSON or a plain string "
                                              "(e.g. --set t5-email.token_count=64; repeatable)")
    limits = parser.add_argument_group("limits (see docs/server.md)")
    for option, kind, meaning in LIMIT_OPTIONS:
        default = getattr(DEFAULT_LIMITS, option.removeprefix("--").replace("-", "_"))
        limits.add_argument(option, type=kind, default=default, metavar="SECONDS" if kind is _seconds else "N",
                            help=f"{meaning} (default: {default})")
    parser.set_defaults(run=run)


def _assignment(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def configurations(models: list[str], model_paths: list[tuple[str, str]],
                   settings: list[str]) -> dict[str, dict[str, Any]]:
    """Each model's module plus its --model-path / --set overrides, checked before any weights load.

    Only overrides are kept: the manifest defaults fill in the rest when the adapter resolves its configuration.
    """
    from ..dataloop.local_runner import parse_assignments, validate_configuration

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
    """Load every model once, as the Dataloop adapter does: the configured module, then its weights.

    Whatever stops a model from loading (weights not found offline, corrupt weights, a device torch cannot
    use) is a one-line CommandError naming the model; the traceback is logged at DEBUG (-v).
    """
    from ..core.loading import WeightsUnavailable

    adapters = {}
    for name, configuration in configs.items():
        try:
            module = load_model_module(configuration["module_name"])
            adapters[name] = module.HuggingAdapter(configuration, model_name=name)
        except WeightsUnavailable as error:
            raise CommandError(f"{name}: " + error.advice(f"pass a local folder of save_pretrained files with "
                                                          f"--model-path {name}=PATH")) from None
        except ConfigurationError as error:
            raise CommandError(f"{name}: {error}") from None
        except Exception as error:  # noqa: BLE001 - any load failure: say it in one line
            logger.debug("loading %s failed", name, exc_info=True)
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CommandError(f"could not load model {name!r}: {reason}") from None
        logger.info("loaded %s", name)
    return adapters


def bind(host: str, port: int) -> socket.socket:
    """The server's socket, bound before any model loads: a bad address or a port in use fails in a second."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, protocol)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        raise CommandError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def run(args: argparse.Namespace) -> int:
    from ..dataloop.local_runner import quiet_platform_logs
    from ..server import create_app

    if not args.verbose:
        quiet_platform_logs()
    try:
        configs = configurations(args.models, args.model_path, args.settings)
    except ConfigurationError as error:
        raise CommandError(str(error)) from None
    sock = bind(args.host, args.port)
    try:
        adapters = load(configs)
    except BaseException:
        sock.close()
        raise
    if not _is_loopback(args.host):
        logger.warning("binding %s: the server is reachable from other machines and has no authentication",
                       args.host)
    limits = ServerLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServerLimits)})
    return serve(create_app(adapters, limits), sock, limits, args.verbose)


def serve(app: Any, sock: socket.socket, limits: ServerLimits, verbose: bool = False) -> int:
    """Serve `app` on the bound `sock` until SIGTERM or SIGINT, then stop within `limits.shutdown_timeout`.

    uvicorn waits that long for running requests, then cancels them; a model call still running in its worker
    thread is abandoned (SIGTERM ends the process once uvicorn is done; after SIGINT the process exits without
    joining that thread), so a stop never waits for a long generation.
    """
    import uvicorn

    from ..server.connections import GuardedH11Protocol, connection_cap
    from ..server.limits import ACCEPT_BURST, MAX_HEADER_BYTES
    from ..server.logs import repeats_limited

    max_connections = connection_cap(limits.max_connections)
    config = uvicorn.Config(
        app, log_level="debug" if verbose else "info", lifespan="off",
        http=GuardedH11Protocol.with_limits(limits.header_timeout, max_connections),
        timeout_keep_alive=limits.keep_alive_timeout, timeout_graceful_shutdown=limits.shutdown_timeout,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES, backlog=ACCEPT_BURST)
    host, port = sock.getsockname()[:2]
    # uvicorn handles SIGTERM and SIGINT itself, then re-raises the signal once it has shut down; with this
    # handler SIGTERM then ends `run` like SIGINT does, after the cancelled requests have answered 503.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with repeats_limited():  # uvicorn.Config has just set up its log handlers
            logging.getLogger("uvicorn.error").info("serving %s on http://%s:%d (docs at /docs)",
                                                    ", ".join(sorted(app.state.runners)), host, port)
            uvicorn.Server(config).run(sockets=[sock])
    except (KeyboardInterrupt, Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    busy = sorted(name for name, runner in app.state.runners.items() if runner.busy)
    if busy:
        logger.warning("stopped while %s was still running a request; it was abandoned", ", ".join(busy))
        logging.shutdown()
        os._exit(0)
    return 0


class Stopped(Exception):
    """SIGTERM, after uvicorn's shutdown."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
