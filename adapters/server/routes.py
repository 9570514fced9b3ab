"""The HTTP routes: each one validates its body, calls the model's runner, and reshapes the replies."""
from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Body, Depends, HTTPException, Request

from ..manifest import model_entries
from .limits import MAX_TEXTS
from .runner import ModelRunner
from .schemas import (ChatRequest, ChatResponse, ErrorBody, GenerateRequest, GenerateResponse, Generation, Health,
                      ItemAnnotations, ModelInfo, PredictBody, PredictResponse, SentimentRequest, SentimentResponse,
                      SkippedEntry, ZeroShotRequest, ZeroShotResult)

ERRORS = {404: {"model": ErrorBody, "description": "the model is not loaded by this server"},
          413: {"model": ErrorBody, "description": "the request body is over the server's limit"},
          422: {"model": ErrorBody, "description": "a field is missing, of the wrong type or out of range"}}

router = APIRouter()


def runner_of(request: Request, name: str) -> ModelRunner:
    runners: dict[str, ModelRunner] = request.app.state.runners
    if name not in runners:
        known = {e["name"] for e in model_entries()}
        what = "is not loaded by this server" if name in known else "is not a model of this app"
        raise HTTPException(404, f"model {name!r} {what}; loaded: {sorted(runners)}. "
                                 f"Start the server with `python -m adapters serve {' '.join(sorted(known))}` "
                                 "to serve every model")
    return runners[name]


def loaded(name: str) -> Callable[[Request], ModelRunner]:
    """A dependency that yields the runner of model `name`, or answers 404."""
    def dependency(request: Request) -> ModelRunner:
        return runner_of(request, name)
    return dependency


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
    """Run Dataloop prompt items (either format) through the model exactly as a Dataloop prediction does."""
    runner = runner_of(request, name)
    items = body.root
    if not items:
        raise HTTPException(422, "send at least one prompt item")
    if sum(item.element_count() for item in items) > MAX_TEXTS:
        raise HTTPException(422, f"the items hold more than {MAX_TEXTS} prompt elements; split them over requests")
    prediction = await runner.run([item.model_dump() for item in items])
    return PredictResponse(
        model=runner.name,
        items=[ItemAnnotations(name=item.name or f"batch[{index}]",
                               annotations=[a.to_json() for a in collection.annotations])
               for index, (item, collection) in enumerate(zip(items, prediction.collections))],
        failed_items=[SkippedEntry(**vars(s)) for s in prediction.report.failed_items],
        skipped=[SkippedEntry(**vars(s)) for s in prediction.report.skipped])


@router.post("/models/t5-email/generate", response_model=GenerateResponse, responses=ERRORS, tags=["t5-email"])
async def generate(body: GenerateRequest, runner: ModelRunner = Depends(loaded("t5-email"))) -> GenerateResponse:
    """Write `n_gen` emails from the key points in `prompt` (seed 004's request)."""
    configuration = runner.resolve(body.overrides())
    [[reply]] = await runner.answer([body.prompt], configuration=configuration)
    return GenerateResponse(model=runner.name, generations=[Generation(**g) for g in reply.details["generations"]])


@router.post("/models/distilbert-sst2/classify", response_model=SentimentResponse, responses=ERRORS,
             tags=["distilbert-sst2"])
async def sentiment(body: SentimentRequest,
                    runner: ModelRunner = Depends(loaded("distilbert-sst2"))) -> SentimentResponse:
    """Sentiment of a batch of texts in one call (seed 002's request and answer)."""
    best = [replies[0] for replies in await runner.answer(body.texts)]
    return SentimentResponse(model=runner.name, predicted_labels=[r.details["class_index"] for r in best],
                             labels=[r.text for r in best], confidences=[r.confidence for r in best])


@router.post("/models/bart-large-mnli/classify", response_model=ZeroShotResult | list[ZeroShotResult],
             responses=ERRORS, tags=["bart-large-mnli"])
async def zero_shot(body: ZeroShotRequest, runner: ModelRunner = Depends(loaded("bart-large-mnli"))
                    ) -> ZeroShotResult | list[ZeroShotResult]:
    """Zero-shot classification (seed 000's answer); one text in, one result out; a list in, a list out."""
    overrides = body.overrides()
    resolved = runner.resolve(overrides)
    replies = await runner.answer(body.texts(), metadata={key: resolved[key] for key in overrides})
    results = [ZeroShotResult(**{k: r[0].details[k] for k in ZeroShotResult.model_fields}) for r in replies]
    return results[0] if isinstance(body.sequences, str) else results


@router.post("/models/dialogpt-large/chat", response_model=ChatResponse, responses=ERRORS, tags=["dialogpt-large"])
async def chat(body: ChatRequest, runner: ModelRunner = Depends(loaded("dialogpt-large"))) -> ChatResponse:
    """Answer the last of the user's turns; each earlier turn is answered first and kept as the history."""
    configuration = runner.resolve(body.overrides())
    replies = [r[0] for r in await runner.answer(body.turns, configuration=configuration)]
    return ChatResponse(model=runner.name, reply=replies[-1].text, confidence=replies[-1].confidence,
                        replies=[r.text for r in replies])
