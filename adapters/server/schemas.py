"""Request and response bodies; their descriptions and examples are what /docs shows.

Per-request model settings (temperature, token_count, n_gen, candidate_labels, ...) are described from the
model module's own `Setting` declarations and checked by them (see `runner.ModelRunner.resolve`), so the
caps and the wording live in one place.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from ..core.generation import SAMPLING_SETTINGS
from ..core.module_loader import load_model_module
from ..core.settings import Setting
from .limits import MAX_TEXTS
from .texts import checked_text, checked_texts, comma_separated, decode_texts


def setting_of(module_name: str, name: str) -> Setting:
    settings = load_model_module(module_name).HuggingAdapter.settings
    return next(s for s in settings if s.name == name)


SAMPLING = {s.name: s for s in SAMPLING_SETTINGS}


def override(setting: Setting, example: Any) -> Any:
    """An optional request field that overrides configuration `setting` for this request only."""
    bounds = [f">= {setting.minimum:g}" if setting.minimum is not None else "",
              f"<= {setting.maximum:g}" if setting.maximum is not None else ""]
    limits = " and ".join(b for b in bounds if b)
    return Field(None, description=f"{setting.doc}{f' ({limits})' if limits else ''}; "
                                   "omit it to use the server's configuration", examples=[example])


def _text(value: str, info: ValidationInfo) -> str:
    return checked_text(value, info.field_name)


def _texts(value: list[str], info: ValidationInfo) -> list[str]:
    return checked_texts(value, info.field_name)


def _decoded(value: Any, info: ValidationInfo) -> Any:
    return decode_texts(value, info.field_name) if isinstance(value, str) else value


def _labels(value: Any) -> Any:
    return comma_separated(value) if isinstance(value, str) else value


Text = Annotated[str, AfterValidator(_text)]
Texts = Annotated[list[str], AfterValidator(_texts)]
# A list, or a string: a JSON list, a data URI of one, or one text (as the Cog predictors read it), decoded before
# the list is checked.
# One text or a list of them; only the branch that matches the JSON type reports errors.
TextOrTexts = Annotated[Annotated[Text, Tag("text")] | Annotated[Texts, Tag("list")],
                        Discriminator(lambda value: "text" if isinstance(value, str) else "list")]
EncodedTexts = Annotated[Texts, BeforeValidator(_decoded), WithJsonSchema(
    {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]})]
# Labels as a list, or as one comma-separated string (as Cog's `labels` input).
Labels = Annotated[list[str], BeforeValidator(_labels), WithJsonSchema(
    {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]})]


class RequestBody(BaseModel):
    """Strict JSON: no string-to-number coercion, and unknown fields (usually typos) are refused."""

    model_config = ConfigDict(strict=True, extra="forbid")
    inputs: ClassVar[frozenset[str]] = frozenset()

    def overrides(self) -> dict[str, Any]:
        """The configuration overrides the client actually sent (an explicit null counts as sent)."""
        return self.model_dump(exclude_unset=True, exclude=set(self.inputs))


T5, MNLI, DIALOG = "models.t5_email", "models.bart_large_mnli", "models.dialogpt_large"


class SamplingRequest(RequestBody):
    """The sampling settings the generative models share, each optional per request."""

    temperature: float | None = override(SAMPLING["temperature"], 0.7)
    do_sample: bool | None = override(SAMPLING["do_sample"], True)
    top_k: int | None = override(SAMPLING["top_k"], 50)
    top_p: float | None = override(SAMPLING["top_p"], 0.95)
    seed: int | None = override(SAMPLING["seed"], 7)


class GenerateRequest(SamplingRequest):
    """Seed 004's email request: key points in, `n_gen` emails out."""

    inputs: ClassVar[frozenset[str]] = frozenset({"prompt"})
    prompt: Text = Field(description="the key points of the email", examples=[
        "we will have a system update on friday. please backup your work"])
    token_count: int | None = override(setting_of(T5, "token_count"), 250)
    n_gen: int | None = override(setting_of(T5, "n_gen"), 2)
    num_beams: int | None = override(setting_of(T5, "num_beams"), 1)



class Generation(BaseModel):
    text: str = Field(description="one generated email")
    confidence: float = Field(description="geometric mean of the model's probabilities of the generated tokens")
    generated_tokens: int = Field(description="tokens generated, end-of-sequence excluded")


class GenerateResponse(BaseModel):
    model: str
    generations: list[Generation] = Field(description="n_gen emails, in generation order")




class SentimentRequest(RequestBody):
    """Seed 002's batched sentiment request."""

    texts: EncodedTexts = Field(
        description=f"1 to {MAX_TEXTS} texts: a JSON list, a string holding a JSON list, a data URI of one "
                    "(data:application/json;base64,...), or one text",
        examples=[["I love apple", "I hate apple"], '["I love apple", "I hate apple"]', "I love apple",
                  "data:application/json;base64,WyJJIGxvdmUgYXBwbGUiLCAiSSBoYXRlIGFwcGxlIl0="])




class SentimentResponse(BaseModel):
    model: str
    predicted_labels: list[int] = Field(description="class index of each text in the model's id2label (seed 002)",
                                        examples=[[1, 0]])
    labels: list[str] = Field(description="class name of each text", examples=[["POSITIVE", "NEGATIVE"]])
    confidences: list[float] = Field(description="probability of each predicted class", examples=[[0.9998, 0.9993]])


class ZeroShotRequest(RequestBody):
    """Seed 000's zero-shot request: score each sequence against candidate labels."""

    inputs: ClassVar[frozenset[str]] = frozenset({"sequences"})
    sequences: TextOrTexts = Field(
        description=f"one text, or a list of 1 to {MAX_TEXTS}; a single text gets a single result back",
        examples=["Replicate, I think I might...like you a lot!"])
    candidate_labels: Labels | None = override(setting_of(MNLI, "candidate_labels"), ["positive", "neutral", "negative"])
    hypothesis_template: str | None = override(setting_of(MNLI, "hypothesis_template"), "This example is {}.")
    multi_label: bool | None = override(setting_of(MNLI, "multi_label"), False)


    def texts(self) -> list[str]:
        return [self.sequences] if isinstance(self.sequences, str) else self.sequences


class ZeroShotResult(BaseModel):
    sequence: str = Field(description="the input text")
    labels: list[str] = Field(description="candidate labels, best first")
    scores: list[float] = Field(description="score of each label, in the order of `labels`")
    hypothesis_template: str
    multi_label: bool


class ChatRequest(SamplingRequest):
    """One conversation: the user's turns in order; each earlier turn is answered first and kept as history."""

    inputs: ClassVar[frozenset[str]] = frozenset({"turns", "stream"})
    turns: EncodedTexts = Field(description=f"the user's turns, oldest first (1 to {MAX_TEXTS}): a list, or a "
                                            "string as `texts` of /models/distilbert-sst2/classify takes it (a single "
                                            "string is one turn)",
                             examples=[["Hi there! How are you doing today?", "Do you want to grab a coffee?"]])
    stream: bool = Field(False, description="answer as server-sent events while the reply is written: `delta` "
                                            "events, then the whole answer in a `reply` event")
    max_new_tokens: int | None = override(setting_of(DIALOG, "max_new_tokens"), 64)
    system_prompt: str | None = override(setting_of(DIALOG, "system_prompt"), "You are a concise assistant.")



class ChatResponse(BaseModel):
    model: str
    reply: str = Field(description="the model's answer to the last turn")
    confidence: float = Field(description="confidence of `reply`")
    replies: list[str] = Field(description="the model's answer to every turn, in order; the last one is `reply`")


class EmbedRequest(RequestBody):
    """Texts to embed with any model: one vector per text."""

    texts: Texts = Field(description=f"1 to {MAX_TEXTS} texts", examples=[["I love apple", "I hate apple"]])


class EmbedResponse(BaseModel):
    model: str
    embeddings_size: int = Field(description="the length of every vector: the model's hidden size")
    embeddings: list[list[float]] = Field(description="one vector per text, in request order: the mean of the "
                                                      "model's hidden states over the text's tokens")


LEGACY_EXAMPLE = {"name": "legacy.json", "prompts": {"1": {"question-1": {
    "mimetype": "application/text", "value": "How are you?"}}}}
CURRENT_EXAMPLE = {"name": "current.json", "prompts": {"1": [
    {"mimetype": "application/text", "value": "How are you?"},
    {"mimetype": "metadata", "value": {"role": "user"}}]}}


class PromptItem(BaseModel):
    """A Dataloop prompt item's JSON, legacy or current format; other top-level keys are kept and ignored."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [LEGACY_EXAMPLE, CURRENT_EXAMPLE]})
    name: str | None = Field(None, description="shown in the skipped report; defaults to batch[N]")
    prompts: dict[str, Any] = Field(description="prompt key -> its elements (a list, current format) or its "
                                                "questions (an object, legacy format)")


PROMPT_ITEM_SCHEMA = PromptItem.model_json_schema()
JSON_TYPES = {str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}


class PredictBody(RootModel[list[Any]]):
    """One prompt item or a list of them; a single item is read as a list of one.

    Items are not validated here: an unreadable one is reported under `failed_items` and the others answered.
    """

    root: Annotated[list[Any], WithJsonSchema({"anyOf": [
        PROMPT_ITEM_SCHEMA, {"type": "array", "items": PROMPT_ITEM_SCHEMA}]})] = Field(
        examples=[LEGACY_EXAMPLE, [LEGACY_EXAMPLE, CURRENT_EXAMPLE]])

    @model_validator(mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [value]
        if not isinstance(value, list):
            raise ValueError("send one prompt item (a JSON object) or a list of them, not "
                             f"{JSON_TYPES.get(type(value), 'that')}")
        return value


class SkippedEntry(BaseModel):
    item: str
    prompt_key: str | None
    element_key: str | None
    reason: str = Field(description="why it was not answered")


class ItemAnnotations(BaseModel):
    name: str
    annotations: list[dict[str, Any]] = Field(description="dl.FreeText annotations as `annotation.to_json()` writes "
                                                          "them; `metadata.system.promptId` names the prompt")


class PredictResponse(BaseModel):
    model: str
    items: list[ItemAnnotations] = Field(description="one entry per prompt item, in request order")
    failed_items: list[SkippedEntry] = Field(description="items that could not be read at all")
    skipped: list[SkippedEntry] = Field(description="prompts or elements that were not answered, and why")


class ModelInfo(BaseModel):
    name: str = Field(description="manifest name, used in the routes")
    module: str = Field(description="the models/ module that runs it")
    description: str
    loaded: bool = Field(description="whether this server loaded it; routes of other models answer 404")
    defaults: dict[str, Any] = Field(description="configuration defaults from dataloop.json")
    configuration: dict[str, Any] | None = Field(description="the configuration this server runs it with")


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    models: list[str] = Field(description="loaded models")


class ErrorBody(BaseModel):
    detail: str = Field(description="what went wrong and what to fix")
    errors: list[dict[str, Any]] | None = Field(None, description="each invalid field (422 from request validation)")
