"""The HTTP routes: each one validates its body, calls the model's runner, and reshapes the replies."""
from __future__ import annotations

from typing import Any, Callable

import anyio
from fastapi import APIRouter, Body, Depends, HTTPException, Request
from sse_starlette import EventSourceResponse

from ..core.errors import MalformedItemError
from ..core.manifest import model_entries
from ..core.prompt_items import Skipped, parse_prompt_item
from ..core.suggestions import did_you_mean
from .chat_stream import streamed_chat
from .limits import MAX_IDENTIFIER_CHARS, MAX_TEXTS, shortened
from .runner import ClientGone, ModelRunner
from .schemas import (
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorBody,
    GenerateRequest,
    GenerateResponse,
    Generation,
    Health,
    ItemAnnotations,
    ModelInfo,
    PredictBody,
    PredictResponse,
    SentimentRequest,
    SentimentResponse,
    SkippedEntry,
    ZeroShotRequest,
    ZeroShotResult,
)

ERRORS = {404: {"model": ErrorBody, "description": "the model is not loaded by this server"},
          408: {"model": ErrorBody, "description": "the body did not arrive in time"},
          413: {"model": ErrorBody, "description": "the body is over the server's size limit, or the request would "
                                                   "cost the model more than one request may"},
          422: {"model": ErrorBody, "description": "a field is missing, of the wrong type or out of range"},
          503: {"model": ErrorBody, "description": "the model's queue is full (see Retry-After)"}}

STREAM_EVENTS = ("`event: delta` with `{\"text\": ...}` for each piece of the reply as it is written, then `event: "
                 "reply` with the whole ChatResponse; `event: error` with `{\"detail\", \"status\"}` instead if it "
                 "fails after the stream started")

router = APIRouter()


def runner_of(request: Request, name: str) -> ModelRunner:
    runners: dict[str, ModelRunner] = request.app.state.runners
    if name not in runners:
        known = {e["name"] for e in model_entries()}
        what = "is not loaded by this server" if name in known else \
            f"is not a model of this app{did_you_mean(name, sorted(known))}"
        raise HTTPException(404, f"model {shortened(name)!r} {what}; loaded: {sorted(runners)}. "
                                 f"Start the server with `python -m adapters serve {' '.join(sorted(known))}` "
                                 "to serve every model")
    return runners[name]


def loaded(name: str) -> Callable[[Request], ModelRunner]:
    """A dependency that yields the runner of model `name`, or answers 404."""
    def dependency(request: Request) -> ModelRunner:
        return runner_of(request, name)
    return dependency


def client_gone(request: Request) -> ClientGone:
    """Returns once the client has disconnected (its request body is already read)."""
    async def wait() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            await anyio.sleep(0.1)  # a server that answers "no news" at once must not spin the loop
    return wait


@router.get("/health", response_model=Health, tags=["server"])
async def health(request: Request) -> Health:
    """Answers as soon as the server is up; model calls run in worker threads and never block it."""
    return Health(status="ok", models=sorted(request.app.state.runners))


@router.get("/models", response_model=list[ModelInfo], tags=["server"])
async def models(request: Request) -> list[ModelInfo]:
    """Every model of the app (dataloop.json), its configuration defaults and whether this server loaded it."""
    runners: dict[str, ModelRunner] = request.app.state.runners
    return [ModelInfo(name=e["name"], module=e["configuration"]["module_name"], description=e.get("description", ""),
                      loaded=e["name"] in runners, defaults=e["configuration"],
                      configuration=runners[e["name"]].configuration if e["name"] in runners else None)
            for e in model_entries()]


@router.post("/models/{name}/predict", response_model=PredictResponse, responses=ERRORS, tags=["any model"])
async def predict(name: str, request: Request,
                  body: PredictBody = Body(description="one prompt item or a list of them")) -> PredictResponse:
    """Run Dataloop prompt items (either format) through the model exactly as a Dataloop prediction does.

    An item that cannot be read is reported under `failed_items` and the others are answered; only a request
    with no readable item at all is a 422.
    """
    runner = runner_of(request, name)
    items = body.root
    if not items:
        raise HTTPException(422, "send at least one prompt item")
    if len(items) > MAX_TEXTS:
        raise HTTPException(422, f"{len(items)} prompt items is more than the limit of {MAX_TEXTS} per request; "
                                 "split them over requests")
    names = [_item_name(item, index) for index, item in enumerate(items)]
    readable: dict[int, dict] = {}
    failed: list[SkippedEntry] = []
    for index, item in enumerate(items):
        problem = _unreadable(item, index, names[index])
        if problem:
            failed.append(SkippedEntry(item=names[index], prompt_key=None, element_key=None, reason=problem))
        else:
            readable[index] = {**item, "name": names[index]}
    if not readable:
        raise HTTPException(422, "no prompt item could be read: " + "; ".join(f"item {e.item!r}: {e.reason}" for e in failed))
    if sum(_element_count(item) for item in readable.values()) > MAX_TEXTS:
        raise HTTPException(422, f"the items hold more than {MAX_TEXTS} prompt elements; split them over requests")
    prediction = await runner.run(list(readable.values()), client_gone=client_gone(request))
    collections = dict(zip(readable, prediction.collections))
    return PredictResponse(
        model=runner.name,
        items=[ItemAnnotations(name=names[index], annotations=[a.to_json() for a in collections[index].annotations]
                               if index in collections else []) for index in range(len(items))],
        failed_items=failed + [_entry(s) for s in prediction.report.failed_items],
        skipped=[_entry(s) for s in prediction.report.skipped])


@router.post("/models/{name}/embed", response_model=EmbedResponse, responses=ERRORS, tags=["any model"])
async def embed(name: str, body: EmbedRequest, request: Request) -> EmbedResponse:
    """One vector per text (the mean of the model's hidden states over its tokens; the encoder's for BART and T5),
    batched as predictions are, under the same limits: texts per request, the request's estimated cost, the
    model's queue."""
    runner = runner_of(request, name)
    vectors = await runner.embed(body.texts, client_gone=client_gone(request))
    return EmbedResponse(model=runner.name, embeddings_size=runner.adapter.embedding_size, embeddings=vectors)


def _item_name(item: Any, index: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return shortened(str(name)) if name not in (None, "") else f"batch[{index}]"


def _unreadable(item: Any, index: int, name: str) -> str | None:
    """Why the server will not run `item` (it is malformed, or its answers would echo a huge prompt key)."""
    try:
        parse_prompt_item(item, index, name)
    except MalformedItemError as error:
        return str(error)
    longest = max((len(key) for key in item["prompts"]), default=0)
    if longest > MAX_IDENTIFIER_CHARS:
        return (f"a prompt key of {longest} characters is longer than the server's limit of {MAX_IDENTIFIER_CHARS} "
                "(every answer repeats its prompt key); use shorter keys")
    return None


def _element_count(item: dict) -> int:
    return sum(len(p) if isinstance(p, (list, dict)) else 1 for p in item["prompts"].values())


def _entry(skipped: Skipped) -> SkippedEntry:
    """A skip as the response shows it: keys from the request are cut short."""
    return SkippedEntry(item=shortened(skipped.item),
                        prompt_key=None if skipped.prompt_key is None else shortened(skipped.prompt_key),
                        element_key=None if skipped.element_key is None else shortened(skipped.element_key),
                        reason=skipped.reason)


@router.post("/models/t5-email/generate", response_model=GenerateResponse, responses=ERRORS, tags=["t5-email"])
async def generate(body: GenerateRequest, request: Request,
                   runner: ModelRunner = Depends(loaded("t5-email"))) -> GenerateResponse:
    """Write `n_gen` emails from the key points in `prompt` (seed 004's request)."""
    configuration = runner.resolve(body.overrides())
    [[reply]] = await runner.answer([body.prompt], configuration=configuration, client_gone=client_gone(request))
    return GenerateResponse(model=runner.name, generations=[Generation(**g) for g in reply.details["generations"]])


@router.post("/models/distilbert-sst2/classify", response_model=SentimentResponse, responses=ERRORS,
             tags=["distilbert-sst2"])
async def sentiment(body: SentimentRequest, request: Request,
                    runner: ModelRunner = Depends(loaded("distilbert-sst2"))) -> SentimentResponse:
    """Sentiment of a batch of texts in one call (seed 002's request and answer)."""
    best = [replies[0] for replies in await runner.answer(body.texts, client_gone=client_gone(request))]
    return SentimentResponse(model=runner.name, predicted_labels=[r.details["class_index"] for r in best],
                             labels=[r.text for r in best], confidences=[r.confidence for r in best])


@router.post("/models/bart-large-mnli/classify", response_model=ZeroShotResult | list[ZeroShotResult],
             responses=ERRORS, tags=["bart-large-mnli"])
async def zero_shot(body: ZeroShotRequest, request: Request,
                    runner: ModelRunner = Depends(loaded("bart-large-mnli"))) -> ZeroShotResult | list[ZeroShotResult]:
    """Zero-shot classification (seed 000's answer); one text in, one result out; a list in, a list out."""
    overrides = body.overrides()
    resolved = runner.resolve(overrides)
    replies = await runner.answer(body.texts(), metadata={key: resolved[key] for key in overrides},
                                  client_gone=client_gone(request))
    results = [ZeroShotResult(**{k: r[0].details[k] for k in ZeroShotResult.model_fields}) for r in replies]
    return results[0] if isinstance(body.sequences, str) else results


@router.post("/models/dialogpt-large/chat", response_model=ChatResponse, tags=["dialogpt-large"], responses={
    **ERRORS, 200: {"content": {"text/event-stream": {"schema": {"type": "string", "description": STREAM_EVENTS}}},
                    "description": "the answer; with `stream` true, server-sent events"}})
async def chat(body: ChatRequest, request: Request,
               runner: ModelRunner = Depends(loaded("dialogpt-large"))) -> ChatResponse | EventSourceResponse:
    """Answer the last of the user's turns; each earlier turn is answered first and kept as the history.

    With `stream` true the reply comes as server-sent events while it is written (see the 200 response)."""
    configuration = runner.resolve(body.overrides())
    if body.stream:
        return streamed_chat(runner, body.turns, configuration)
    replies = [r[0] for r in await runner.answer(body.turns, configuration=configuration,
                                                 client_gone=client_gone(request))]
    return ChatResponse(model=runner.name, reply=replies[-1].text, confidence=replies[-1].confidence,
                        replies=[r.text for r in replies])
