"""The app factory: routes, the body-size cap, and the mapping of errors to status codes."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import ConfigurationError, ModelFailure
from ..hugging_adapter import HuggingAdapter
from . import compat
from .limits import MAX_BODY_BYTES, MAX_TEXTS, BodySizeLimit
from .routes import router
from .runner import ModelRunner, PredictionFailed, RequestRejected

logger = logging.getLogger(__name__)

DESCRIPTION = f"""Every loaded model of this app over REST, through the same `predict` path as the Dataloop adapter.

Limits: request bodies up to the server's byte limit (413 past it), at most {MAX_TEXTS} texts per request, and
the hard caps on tokens, generations and beams of the models' settings (422 past them). A missing, mistyped or
out-of-range field is a 422 whose `detail` says what to fix; a model that is not loaded is a 404; only a
server fault is a 5xx."""


def create_app(adapters: dict[str, HuggingAdapter], *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """A FastAPI app serving `adapters` (manifest name -> loaded adapter); usable in-process or under uvicorn."""
    app = FastAPI(title="Hugging Face NLP models", description=DESCRIPTION, version="0.1.0")
    app.state.runners = {name: ModelRunner(name, adapter) for name, adapter in adapters.items()}
    app.include_router(router)
    app.include_router(compat.router)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(ConfigurationError, _unprocessable)
    app.add_exception_handler(RequestRejected, _unprocessable)
    app.add_exception_handler(PredictionFailed, _model_failed)
    app.add_exception_handler(ModelFailure, _model_failed)
    app.add_exception_handler(Exception, _server_fault)
    return app


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 whose `detail` names each bad field and the fix, e.g. "texts: List should have at least 1 item"."""
    errors = jsonable_encoder(error.errors(), exclude={"url", "input", "ctx"})
    return JSONResponse({"detail": "; ".join(_describe(e) for e in error.errors()), "errors": errors}, status_code=422)


def _describe(entry: dict) -> str:
    """`field.path: message`, without pydantic's "Value error, " prefix or a repeated field name."""
    if entry.get("type") == "json_invalid":
        return f"the body is not valid JSON ({entry.get('ctx', {}).get('error', 'decode error')}); send a JSON object"
    where = ".".join(str(part) for part in entry.get("loc", ()) if part != "body") or "body"
    message = str(entry.get("msg", "invalid")).removeprefix("Value error, ")
    return message if message.startswith(where.split(".")[0]) else f"{where}: {message}"


async def _unprocessable(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=422)


async def _model_failed(request: Request, error: Exception) -> JSONResponse:
    logger.error("%s %s: %s", request.method, request.url.path, error)
    return JSONResponse({"detail": str(error)}, status_code=500)


async def _server_fault(request: Request, error: Exception) -> JSONResponse:
    logger.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse({"detail": "internal server error; see the server log"}, status_code=500)
