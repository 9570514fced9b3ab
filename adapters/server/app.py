"""The app factory: routes, the request limits, and the mapping of errors to status codes."""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from ..core.hugging_adapter import HuggingAdapter
from ..core.manifest import model_entries
from ..core.suggestions import did_you_mean
from . import compat
from .body_guard import Message, Receive, RequestBodyGuard, Scope, Send
from .limits import MAX_TEXTS, ServerLimits, shortened
from .responses import JSONAnswer, first_line
from .routes import router
from .runner import ERROR_STATUS, ModelRunner

logger = logging.getLogger(__name__)

DESCRIPTION = f"""Every loaded model of this app over REST, through the same `predict` path as the Dataloop adapter.

Limits: request bodies up to the server's byte limit (413 past it), at most {MAX_TEXTS} texts or prompt items per
request, an estimated cost per request (413 past it), the hard caps on tokens, generations and beams of the
models' settings (422 past them), and a bounded queue per model (503 with Retry-After when it is full). A missing,
mistyped or out-of-range field is a 422 whose `detail` says what to fix; a model that is not loaded is a 404;
only a fault of the server or a model is a 500."""
MAX_LISTED_ERRORS = 20


def create_app(adapters: dict[str, HuggingAdapter], limits: ServerLimits = ServerLimits()) -> FastAPI:
    """A FastAPI app serving `adapters` (manifest name -> loaded adapter); usable in-process or under uvicorn."""
    # The /docs and /redoc pages load their scripts and styles from the package (fastapi-offline), not a CDN: a
    # server on a closed network still shows its API.
    app = FastAPIOffline(title="Hugging Face NLP models", description=DESCRIPTION, version="0.1.0",
                         default_response_class=JSONAnswer)
    app.state.limits = limits
    app.state.runners = {name: ModelRunner(name, adapter, limits) for name, adapter in adapters.items()}
    app.include_router(router)
    app.include_router(compat.router)
    app.add_middleware(ServerFaults)
    app.add_middleware(RequestBodyGuard, limits=limits)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    for error, status in ERROR_STATUS:
        app.add_exception_handler(error, _answer_with(status))
    return app


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONAnswer:
    """422 whose `detail` names each bad field and the fix, e.g. "texts: List should have at least 1 item".

    At most MAX_LISTED_ERRORS are listed, and field names from the body are shortened: a body of many unknown
    or long keys must not buy an answer many times its size.
    """
    found = error.errors()
    listed = [{**e, "loc": [shortened(str(part)) for part in e.get("loc", ())]} for e in found[:MAX_LISTED_ERRORS]]
    fields = _body_fields(request)
    detail = "; ".join(_describe(e) + (did_you_mean(str(e["loc"][-1]), fields)
                                       if e.get("type") == "extra_forbidden" and e.get("loc") else "")
                       for e in listed)
    if len(found) > MAX_LISTED_ERRORS:
        detail += f"; and {len(found) - MAX_LISTED_ERRORS} more"
    errors = jsonable_encoder(listed, exclude={"url", "input", "ctx"})
    return JSONAnswer({"detail": detail, "errors": errors}, status_code=422)


def _body_fields(request: Request) -> list[str]:
    """The field names of this route's request body, from the OpenAPI schema (built once, then cached), for
    "did you mean" on an unknown (mistyped) field."""
    schema = request.app.openapi()
    operation = schema.get("paths", {}).get(request.url.path, {}).get(request.method.lower(), {})
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    name = str(body.get("$ref", "")).rsplit("/", 1)[-1]
    return list(schema.get("components", {}).get("schemas", {}).get(name, {}).get("properties", {}))


def _describe(entry: dict) -> str:
    """`field.path: message`, without pydantic's "Value error, " prefix or a repeated field name."""
    if entry.get("type") == "json_invalid":
        return f"the body is not valid JSON ({entry.get('ctx', {}).get('error', 'decode error')}); send a JSON object"
    where = ".".join(str(part) for part in entry.get("loc", ()) if part != "body") or "body"
    message = str(entry.get("msg", "invalid")).removeprefix("Value error, ")
    return message if message.startswith(where.split(".")[0]) else f"{where}: {message}"


async def _http_error(request: Request, error: HTTPException) -> JSONAnswer:
    if error.status_code == 404 and error.detail == "Not Found":  # no route matched: say which one was meant
        return JSONAnswer({"detail": _unknown_route(request)}, status_code=404)
    if error.status_code == 400:  # FastAPI's "error parsing the body", raised from what json.loads raised
        return JSONAnswer({"detail": f"the body could not be read as JSON: {_unparsed(error.__cause__)}; "
                                     "send a JSON object"}, status_code=422)
    return JSONAnswer({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


def _unknown_route(request: Request) -> str:
    """"no route POST /x" with the closest route this server has (model names filled in), and where all are."""
    names = [entry["name"] for entry in model_entries()]
    documented = [*request.app.openapi().get("paths", {}), "/docs", "/redoc"]  # the schema is built once, then cached
    routes = sorted({path.replace("{name}", name) for path in documented for name in names})
    path = request.url.path
    return f"no route {request.method} {shortened(path)}{did_you_mean(path, routes)}; every route is listed at /docs"


def _unparsed(cause: BaseException | None) -> str:
    """Why valid-looking JSON could not be read, from the exception the decoder raised."""
    if isinstance(cause, UnicodeDecodeError):
        return "it is not UTF-8"
    if isinstance(cause, RecursionError):
        return "it nests too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "it holds a number of more than 4300 digits, which Python refuses to read"
    return "it is not UTF-8, holds a number too long to read, or nests too deeply"


def _answer_with(status: int):
    """A handler answering `status` with the error's first line as `detail` (and its headers, if any)."""
    async def handler(request: Request, error: Exception) -> JSONAnswer:
        detail = first_line(error)
        if status >= 500 and status != 503:
            logger.error("%s %s: %s", request.method, request.url.path, detail)
        return JSONAnswer({"detail": detail}, status_code=status, headers=getattr(error, "headers", None))
    return handler


class ServerFaults:
    """Any other exception: one logged traceback and a JSON 500, instead of Starlette's handler, which answers
    and then re-raises so that uvicorn logs the same traceback a second time."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:  # noqa: BLE001 - the last line of defence: log once, answer 500
            logger.exception("%s %s failed", scope.get("method", ""), scope.get("path", ""))
            if scope["type"] == "http" and not started:
                response = JSONAnswer({"detail": "internal server error; see the server log"}, status_code=500)
                await response(scope, receive, send)
