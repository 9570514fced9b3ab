"""Cog predictors: the app's four models for Replicate and Cog's own HTTP server, with the seeds' interfaces.

Each predictor is a thin layer over its model's `HuggingAdapter.predict`, through the REST server's
`ModelRunner` (the same prompt items, configuration checks and per-request overrides): the inputs become a
current-format prompt item, and the outputs are read back from its annotations. No model logic lives here.

Cog 0.23 reads a predictor's inputs and output statically, at build time, from the class that cog.yaml's
`predict` names, so each model has its own class: `DistilbertSst2` (seed 002's interface), `BartLargeMnli`
(seed 000), `T5Email` (seed 004) and `DialogptLarge`. `Predictor` is the class of the model the environment
variable `HF_ADAPTERS_MODEL` names (default `distilbert-sst2`), for Cog's server run directly:
`COG_PREDICT_TYPE_STUB=cog_predictors.py:Predictor python -m cog.server.http`.

The environment chooses the weights and the configuration, never code:
- `HF_ADAPTERS_MODEL`: the model to serve; a class given another model refuses to start.
- `HF_ADAPTERS_MODEL_PATH`: a local `save_pretrained` folder (safetensors) or a hub id; default the manifest's.
- `HF_ADAPTERS_CONFIGURATION`: a JSON object of configuration keys (e.g. `{"max_new_tokens": 64}`), checked
  like `--set`: an unknown key or a bad value stops the setup with a message that says what to fix.

Bad input raises `InvalidInput`, which Cog reports as the prediction's `failed` status with the message.
The module is named `cog_predictors`, not `cog`, so that it never shadows the `cog` package.
"""
import json
import os
from typing import Any, ClassVar, Optional

from cog import BaseModel, BaseRunner, Input

from adapters.core.errors import ConfigurationError
from adapters.core.module_loader import load_model_module
from adapters.dataloop.local_runner import manifest_configuration, quiet_platform_logs, unreadable_json
from adapters.server.limits import ServerLimits
from adapters.server.runner import ModelRunner, Reply, prompt_item
from adapters.server.texts import checked_text, checked_texts, comma_separated, decode_texts

MODEL_VARIABLE = "HF_ADAPTERS_MODEL"
PATH_VARIABLE = "HF_ADAPTERS_MODEL_PATH"
CONFIGURATION_VARIABLE = "HF_ADAPTERS_CONFIGURATION"
DEFAULT_MODEL = "distilbert-sst2"
# No input string may be longer than the REST server's whole request body.
MAX_INPUT_CHARS = ServerLimits().max_body_bytes


class InvalidInput(ValueError):
    """An input Cog accepted cannot be answered as given; the message says what to fix."""


class ModelFailed(RuntimeError):
    """The model failed on valid input (a server-side fault, not the client's)."""


def environment_configuration() -> dict[str, Any]:
    """The configuration overrides the environment gives: HF_ADAPTERS_CONFIGURATION, then HF_ADAPTERS_MODEL_PATH."""
    raw = os.environ.get(CONFIGURATION_VARIABLE, "").strip()
    try:
        overrides = json.loads(raw) if raw else {}
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"{CONFIGURATION_VARIABLE} is not valid JSON ({error.msg} at position {error.pos}); "
                                 'give a JSON object such as {"max_new_tokens": 64}') from None
    except (ValueError, RecursionError) as error:
        raise ConfigurationError(f"{CONFIGURATION_VARIABLE}: {unreadable_json(error)}") from None
    if not isinstance(overrides, dict):
        raise ConfigurationError(f"{CONFIGURATION_VARIABLE} must be a JSON object of configuration keys, "
                                 f"got a JSON {type(overrides).__name__}")
    path = os.environ.get(PATH_VARIABLE, "").strip()
    return {**overrides, "model_path": path} if path else overrides


def load_runner(model_name: str) -> ModelRunner:
    """The manifest model `model_name`, loaded as the Dataloop adapter loads it, behind the server's runner."""
    from adapters.core.loading import WeightsUnavailable

    _, configuration = manifest_configuration(model_name, environment_configuration())
    module = load_model_module(configuration["module_name"])
    try:
        return ModelRunner(model_name, module.HuggingAdapter(configuration, model_name=model_name))
    except WeightsUnavailable as error:
        raise ConfigurationError(error.advice(f"set {PATH_VARIABLE} to a local folder of save_pretrained files "
                                              "(or put them in the image)")) from None


def required_text(value: Any, name: str) -> str:
    """A non-blank string of at most MAX_INPUT_CHARS (Cog's server run without a schema passes any JSON value)."""
    if value is None:
        raise InvalidInput(f"{name} is required")
    if isinstance(value, str) and len(value) > MAX_INPUT_CHARS:
        raise InvalidInput(f"{name} is {len(value)} characters long, over the limit of {MAX_INPUT_CHARS}")
    try:
        return checked_text(value, name)
    except ValueError as error:
        raise InvalidInput(str(error)) from None


def text_list(value: Any, name: str, allow_empty: bool = False) -> list[str]:
    """A JSON list of texts (or a data URI of one, seed 002), or a single text: a value not starting with '['."""
    value = required_text(value, name)
    try:
        texts = decode_texts(value, name)
        return texts if allow_empty and not texts else checked_texts(texts, name)
    except ValueError as error:
        raise InvalidInput(str(error)) from None


def sent(**inputs: Any) -> dict[str, Any]:
    """The optional inputs the client actually sent (Cog gives None for the others): per-request overrides."""
    return {name: value for name, value in inputs.items() if value is not None}


class AppModel(BaseRunner):
    """Loads its model once at setup; `ask` runs one prompt item through it and reads the answers back."""

    model_name: ClassVar[str]

    def setup(self) -> None:
        chosen = chosen_predictor(default=type(self))
        if chosen is not type(self):
            raise ConfigurationError(f"{MODEL_VARIABLE} names {chosen.model_name!r}, but {type(self).__name__} serves "
                                     f"{self.model_name!r}: set cog.yaml's predict to "
                                     f'"cog_predictors.py:{chosen.__name__}"')
        quiet_platform_logs()
        self.runner = load_runner(self.model_name)

    def ask(self, item: dict[str, Any], keys: list[str], overrides: dict[str, Any]) -> list[list[Reply]]:
        """The replies to prompts `keys` of `item`, with `overrides` for this request; anything unanswered raises."""
        configuration = self.runner.resolve(overrides) if overrides else None
        prediction = self.runner.predict([item], configuration)
        unanswered = [*prediction.report.failed_items, *prediction.report.skipped]
        if unanswered:
            raise InvalidInput("; ".join(s.describe() for s in unanswered))  # a model failure raised ModelFailure
        replies: dict[str, list[Reply]] = {}
        for annotation in prediction.collections[0].annotations:
            replies.setdefault(annotation.metadata["system"]["promptId"], []).append(Reply.of(annotation))
        if not all(key in replies for key in keys):
            raise ModelFailed(f"{self.model_name} returned no answer to some of the texts")
        return [replies[key] for key in keys]


class SentimentOutput(BaseModel):
    predicted_labels: list[int]
    confidences: list[float]


class DistilbertSst2(AppModel):
    """Seed 002: sentiment of a batch of texts in one call."""

    model_name = "distilbert-sst2"

    # Cog's build reads each description as one plain string literal: no concatenation, no escapes.
    def run(
        self,
        texts: str = Input(
            description='A JSON list of texts such as ["I love apple", "I hate apple"], a data URI of one, or a text'),
    ) -> SentimentOutput:
        batch = text_list(texts, "texts")
        best = [replies[0] for replies in self.ask(prompt_item(batch), _keys(batch), {})]
        return SentimentOutput(predicted_labels=[r.details["class_index"] for r in best],
                               confidences=[r.confidence for r in best])


class ZeroShotOutput(BaseModel):
    labels: list[str]
    scores: list[float]
    sequence: str
    hypothesis_template: str


class BartLargeMnli(AppModel):
    """Seed 000: zero-shot classification of one sequence against candidate labels."""

    model_name = "bart-large-mnli"

    def run(
        self,
        input: str = Input(description="The sequence to classify"),
        labels: Optional[str] = Input(
            default=None, description="Comma-separated candidate labels; default: the configured candidate_labels"),
        hypothesis_template: Optional[str] = Input(
            default=None, description="Makes each label a hypothesis, with one {} for it; default: the configured one"),
        multi_label: Optional[bool] = Input(
            default=None, description="Score labels one by one, not as one distribution; default: the configured one"),
    ) -> ZeroShotOutput:
        sequence = required_text(input, "input")
        candidates = None if labels is None else comma_separated(required_text(labels, "labels"))
        overrides = sent(candidate_labels=candidates, hypothesis_template=hypothesis_template, multi_label=multi_label)
        [[reply]] = self.ask(prompt_item([sequence]), ["0"], overrides)
        return ZeroShotOutput(**{name: reply.details[name] for name in ZeroShotOutput.__dataclass_fields__})


class T5Email(AppModel):
    """Seed 004: `n_gen` emails written from the key points in `prompt`."""

    model_name = "t5-email"

    def run(
        self,
        prompt: str = Input(description="The key points of the email"),
        token_count: Optional[int] = Input(
            default=None, description="Longest email, in tokens; default: the configured token_count"),
        temperature: Optional[float] = Input(
            default=None, description="Sampling temperature, 0 for greedy; default: the configured one"),
        n_gen: Optional[int] = Input(
            default=None, description="How many emails to write; default: the configured n_gen"),
    ) -> list[str]:
        key_points = required_text(prompt, "prompt")
        overrides = sent(token_count=token_count, temperature=temperature, n_gen=n_gen)
        [replies] = self.ask(prompt_item([key_points]), ["0"], overrides)
        return [generation["text"] for generation in replies[0].details["generations"]]


class DialogptLarge(AppModel):
    """Chat: the reply to the newest of the user's turns, with the earlier turns and replies as its history."""

    model_name = "dialogpt-large"

    def run(
        self,
        turns: str = Input(
            description='The user turns, oldest first: a JSON list such as ["Hi!", "Coffee?"], or one text'),
        replies: Optional[str] = Input(
            default=None, description="Earlier replies as a JSON list, reply i to turn i; other turns are answered"),
        max_new_tokens: Optional[int] = Input(
            default=None, description="Longest reply, in tokens; default: the configured max_new_tokens"),
        temperature: Optional[float] = Input(
            default=None, description="Sampling temperature, 0 for greedy; default: the configured one"),
        seed: Optional[int] = Input(default=None, description="Seed for a reproducible reply"),
    ) -> str:
        conversation = text_list(turns, "turns")
        earlier = [] if replies is None else text_list(replies, "replies", allow_empty=True)
        if len(earlier) >= len(conversation):
            raise InvalidInput(f"replies: {len(earlier)} replies to {len(conversation)} turns; give at most one reply "
                               "per turn before the last, whose reply is the output")
        item = prompt_item(conversation)
        item["annotations"] = [stored_answer(str(index), reply, self.model_name) for index, reply in enumerate(earlier)]
        overrides = sent(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        [newest] = self.ask(item, [str(len(conversation) - 1)], overrides)
        return newest[0].text


def stored_answer(prompt_key: str, text: str, model_name: str) -> dict[str, Any]:
    """An earlier answer by `model_name` to prompt `prompt_key`, as platform annotation JSON on a prompt item."""
    return {"type": "text", "coordinates": text, "metadata": {"system": {"promptId": prompt_key},
                                                              "user": {"model": {"name": model_name}}}}


def _keys(texts: list[str]) -> list[str]:
    """The prompt keys `prompt_item` gives `texts`."""
    return [str(index) for index in range(len(texts))]


PREDICTORS: dict[str, type[AppModel]] = {cls.model_name: cls for cls in (DistilbertSst2, BartLargeMnli, T5Email,
                                                                          DialogptLarge)}


def chosen_predictor(default: type[AppModel]) -> type[AppModel]:
    """The class of the model HF_ADAPTERS_MODEL names, or `default` when it is not set."""
    chosen = os.environ.get(MODEL_VARIABLE, "").strip()
    if not chosen:
        return default
    if chosen not in PREDICTORS:
        raise ConfigurationError(f"{MODEL_VARIABLE}={chosen!r} is not a model of this app; "
                                 f"choose one of {sorted(PREDICTORS)}")
    return PREDICTORS[chosen]


def __getattr__(name: str) -> Any:
    """`Predictor`: the class of the model HF_ADAPTERS_MODEL names (default distilbert-sst2), when Cog asks for it."""
    if name != "Predictor":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return chosen_predictor(default=PREDICTORS[DEFAULT_MODEL])
