"""The generic HuggingAdapter: prompt items (and plain-text items) in, `dl.FreeText` annotations out.

The base owns everything that is not model-specific: configuration, weight loading, device, parsing both
prompt-item formats and text items, deciding which prompts a call answers (again), reporting what is skipped,
truncation, length-sorted micro-batching with dynamic padding, turn-by-turn batching of conversations, and
building annotations. `predict` may be called from several threads at once: what a call changes (its report, a
per-call configuration) belongs to the calling thread, and the rows of concurrent calls share forward passes
through the model's one `DynamicBatcher` (adapters/core/dynamic_batching.py). A model module only says how one question
becomes model rows (`preprocess`), how a padded batch runs (`forward`) and how row outputs become answers
(`postprocess`), in the shape of a `transformers` pipeline.
"""
from __future__ import annotations

import abc
import functools
import json
import logging
import math
import reprlib
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Hashable, Iterator, Sequence

import dtlpy as dl
import torch

from ..dataloop.answers import StoredAnswer, answers_by, prompt_item_answers, stored_answers
from ..runtimes import check_runtime_keys, load_model
from .batching import plan_micro_batches
from .checkpoints import architecture_of, auto_class_architectures
from .classes import CLASS, TEXT
from .embedding import embedding_encoder, embedding_size, mean_pooled
from .dynamic_batching import DynamicBatcher, Recipe
from .errors import ConfigurationError, InputError, MalformedItemError, ModelFailure
from .loading import context_window, load_weights, resolve_device, resolve_source
from .manifest import defaults_for_module, model_entries
from .prompt_items import (
    TEXT_ITEM_MIMETYPES,
    ParsedItem,
    Question,
    Skipped,
    is_prompt_metadata,
    is_text_item_metadata,
    location,
    parse_prompt_item,
    system_metadata,
    text_item,
)
from .settings import Setting, resolve_configuration
from .streaming import AnswerListener, StreamTarget
from .truncation import Segments

logger = logging.getLogger(__name__)

Row = dict[str, list[int]]
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 40
# How many of an unanswered item's reasons its one-line summary lists.
LISTED_REASONS = 3
# Configuration keys that choose what a call asks or how long its rows wait, not how they run: calls that differ
# only in these share forward passes.
NOT_HOW_ROWS_RUN = frozenset({"reanswer", "max_batch_wait_ms"})


@dataclass
class Answer:
    """One answer to one question; `details` land in the annotation's `metadata.user.model_output`."""

    text: str
    confidence: float
    details: dict = field(default_factory=dict)


@dataclass
class Turn:
    """A question already answered in this conversation, for models that read history."""

    question: Question
    answers: list[Answer]


@dataclass
class LoadedItem:
    """An item as read by `prepare_item_func`: a prompt item's JSON (`data`) with the answers already on it, or a
    text item's `text`; `error` says why it could not be read."""

    name: str
    data: Any = None
    error: str | None = None
    answers: list[StoredAnswer] = field(default_factory=list)
    text: str | None = None
    item_id: str | None = None
    source: Any = None  # the dl.Item or dl.PromptItem it was read from, for answers streamed into it


@dataclass
class PredictionReport:
    """What one `predict` call did not answer: unreadable items, skipped questions, and questions whose prompt this
    model had already answered (`kept`: their answers stand, see the `reanswer` key). `unanswered` maps the batch
    position of every item that got no answer at all to why, in one line: a call asked to answer it did nothing."""

    failed_items: list[Skipped] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    kept: list[Skipped] = field(default_factory=list)
    unanswered: dict[int, str] = field(default_factory=dict)
    _by_item: dict[int, list[Skipped]] = field(default_factory=dict, repr=False)

    def add(self, skipped: Skipped, failed_item: bool = False, item_index: int | None = None) -> None:
        (self.failed_items if failed_item else self.skipped).append(skipped)
        if item_index is not None:
            self._by_item.setdefault(item_index, []).append(skipped)
        logger.warning("not answered: %s", skipped.describe())

    def nothing_answered(self, item_index: int, failed_item: bool) -> None:
        """Record that the item at `item_index` got no answer, with the reasons reported for it."""
        reasons = self._by_item.get(item_index, [])
        if failed_item and reasons:
            self.unanswered[item_index] = reasons[0].reason
            return
        listed = "; ".join(r.describe() for r in reasons[:LISTED_REASONS]) or "it holds no question"
        more = f"; and {len(reasons) - LISTED_REASONS} more" if len(reasons) > LISTED_REASONS else ""
        self.unanswered[item_index] = f"nothing this model can answer: {listed}{more}"

    def keep(self, kept: Skipped) -> None:
        self.kept.append(kept)
        logger.info("kept: %s", kept.describe())


class ItemAnswers(dl.AnnotationCollection):
    """An item's new annotations, and where it was answered: `answered_prompts` holds the keys of the prompts this
    call answered (None: the item itself, a text item). An answer may be no annotation at all (a multi-label class
    answer with no label at the threshold), and it still replaces this model's earlier answer there."""

    def __init__(self, answered_prompts: set[str | None] | None = None):
        super().__init__()
        self.answered_prompts: set[str | None] = set(answered_prompts or ())


class HuggingAdapter(abc.ABC):
    """Base of every model module; subclasses set `model_class` and implement preprocess/forward/postprocess."""

    model_class: ClassVar[Any]
    family: ClassVar[str] = ""  # the checkpoints it serves, in a few words (register_model.py's refusal lists them)
    settings: ClassVar[tuple[Setting, ...]] = ()
    padding_side: ClassVar[str] = "right"
    # The least a forward pass costs, in padded tokens, when micro-batches are cut to avoid padding (see
    # plan_micro_batches); None fills batches in order (generation: one more batch is one more decoding loop).
    min_batch_tokens: ClassVar[int | None] = 512

    def __init__(self, configuration: dict | None = None, model_name: str | None = None):
        module_name = type(self).__module__
        self._this_thread = threading.local()  # what a call changes belongs to its thread: report, configuration
        self.configuration = resolve_configuration(module_name, self.settings, configuration)
        self.check_configuration(self.configuration)
        check_runtime_keys(self.configuration, defaults_for_module(module_name))
        self.model_name = model_name or _manifest_name(module_name)
        self.device = resolve_device(self.configuration["device"])
        self.runtime, self.model, self.tokenizer = load_model(self.model_class, self.configuration, self.device)
        self.tokenizer.padding_side = self.padding_side
        self.max_input_tokens = context_window(self.model, self.tokenizer)
        self.batcher = DynamicBatcher()
        self.check_with_model(self.configuration)
        self.setup()

    @property
    def configuration(self) -> dict:
        """The configuration this thread's call runs with: its per-call override (`configured`), else the model's."""
        override = getattr(self._this_thread, "configuration", None)
        return self._configuration if override is None else override

    @configuration.setter
    def configuration(self, value: dict) -> None:
        self._configuration = value

    @property
    def stream_to(self) -> StreamTarget | None:
        """Who hears this thread's answers as they are written (adapters/core/streaming.py); set by the platform
        or the server around a call, for that call's thread only."""
        return getattr(self._this_thread, "stream_to", None)

    @stream_to.setter
    def stream_to(self, target: StreamTarget | None) -> None:
        self._this_thread.stream_to = target

    @property
    def last_report(self) -> PredictionReport:
        """The report of the last `predict` this thread made (each thread sees its own calls' reports)."""
        report = getattr(self._this_thread, "report", None)
        return PredictionReport() if report is None else report

    # ----- hooks for model modules -----
    @classmethod
    def check_configuration(cls, configuration: dict) -> None:
        """Cross-key checks that must refuse a configuration before any weights are loaded."""

    def setup(self) -> None:
        """Model-specific preparation after the weights are loaded (e.g. read labels from the model config); what
        depends on the configuration is read per call instead, since calls may run with their own."""

    def check_with_model(self, configuration: dict) -> None:
        """Checks of a configuration against the loaded model (e.g. an answer budget against its context window),
        at load and for every per-call configuration (`configured`)."""

    @classmethod
    def serves(cls, config: Any) -> bool:
        """Whether this module runs a checkpoint with this `transformers` config: its architecture is one that
        `model_class` loads (modules that share a class narrow it, e.g. NLI classifiers or not)."""
        return architecture_of(config) in auto_class_architectures(cls.model_class)

    def conversations(self, parsed: ParsedItem) -> list[list[Question]]:
        """Questions that depend on each other's answers, in turn order; by default every question stands alone."""
        return [[question] for question in parsed.questions]

    @abc.abstractmethod
    def preprocess(self, question: Question, history: list[Turn]) -> list[Row]:
        """The model rows (token ids) that answer `question`."""

    @abc.abstractmethod
    def forward(self, inputs: dict[str, torch.Tensor]) -> list[Any]:
        """Run one padded micro-batch; return one output per row."""

    @abc.abstractmethod
    def postprocess(self, question: Question, outputs: list[Any]) -> list[Answer]:
        """Turn the outputs of `question`'s rows into its answers."""

    def batch_cost(self, rows: int, longest: int) -> int:
        """Memory cost of a micro-batch in padded tokens; generative modules add their answer budget."""
        return rows * longest

    @classmethod
    def configured_labels(cls, configuration: dict) -> list[str] | None:
        """A classifier's labels from its configuration (and its checkpoint's config.json, no weights): what a
        model registered with output_type 'class' carries as its entity's `labels`; None for a text writer."""
        return None

    def label_set(self, question: Question | None = None) -> list[str] | None:
        """A classifier's labels (for `question`, or the configuration's when None); None for a model that writes
        text. What the model entity's `labels` are with output_type 'class'."""
        return None

    def classes(self, question: Question, answer: Answer) -> list[tuple[str, float]]:
        """The (label, confidence) classifications that stand for `answer` on a text item with output_type
        'class': by default the answer's label alone."""
        return [(answer.text, answer.confidence)]

    @property
    def output_type(self) -> str:
        return self.configuration.get("output_type", TEXT)

    @contextmanager
    def configured(self, configuration: dict) -> Iterator[None]:
        """Within the block, this thread's calls run with `configuration` (validated by `resolve_configuration`;
        e.g. one request's overrides); other threads' calls and the model's own configuration are untouched."""
        self.check_with_model(configuration)
        with self._using(configuration):
            yield

    @contextmanager
    def _using(self, configuration: dict) -> Iterator[None]:
        saved = getattr(self._this_thread, "configuration", None)
        self._this_thread.configuration = configuration
        try:
            yield
        finally:
            self._this_thread.configuration = saved

    def batch_key(self, configuration: dict) -> Hashable:
        """What concurrent calls must share to share forward passes: everything in their configuration that can
        change how rows run (all of it but NOT_HOW_ROWS_RUN), so labels or generation settings never mix."""
        return json.dumps({k: v for k, v in configuration.items() if k not in NOT_HOW_ROWS_RUN}, sort_keys=True,
                          default=repr)

    # ----- shared helpers -----
    @functools.cached_property
    def segments(self) -> Segments:
        """Bounded tokenization of questions, and rows built with the tokenizer's special tokens."""
        return Segments(self.tokenizer)

    def encode(self, text: str, pairs: Sequence[str] | None = None, *, where: str = "",
               max_length: int | None = None) -> list[Row]:
        """Rows for `text`, or for `text` paired with each of `pairs`; only `text` is cut to the model's limit.

        `text` is tokenized once, and only as far as the model can read (adapters/core/truncation.py): a 1 MB
        question costs what its first window of tokens costs, whatever the number of pairs.
        """
        max_length = max_length or self.max_input_tokens
        rows, truncated = self.segments.rows(text, pairs, max_length)
        if truncated:
            logger.warning("%s: input truncated to the model's limit of %d tokens", where, max_length)
        return rows

    # ----- the Dataloop side -----
    def prepare_item_func(self, item: Any) -> LoadedItem:
        """Read an item (and a prompt item's answers already on it); never raises, since dtlpy maps it over the
        whole batch.

        A prompt item (`dl.Item`) is read as `dl.PromptItem.fetch` reads one (its JSON, then
        `item.annotations.list()`), but through this package's parser, which also reads the legacy format and any
        `text/*` element mimetype. A text/plain or text/markdown item is read as text (UTF-8), the manifest's
        `inputType: text`. Any other item is refused before anything of it is read.
        """
        name = str(getattr(item, "name", None) or getattr(item, "id", None) or "")
        try:
            if isinstance(item, dl.PromptItem):
                return LoadedItem(name, item.to_json(), answers=prompt_item_answers(item), source=item)
            if isinstance(item, dl.Item):
                refusal = refusal_of(item)
                if refusal:
                    return LoadedItem(name, error=refusal, item_id=item.id)
                content = item.download(save_locally=False).read()
                if is_text_item(item):
                    return self._text_item(name, content, item.id)
                return LoadedItem(name, json.loads(content), answers=stored_answers(item.annotations.list()),
                                  item_id=item.id, source=item)
            if isinstance(item, dict):
                annotations = item.get("annotations")
                if annotations is not None and not isinstance(annotations, list):
                    return LoadedItem(str(item.get("name") or ""), error="'annotations' must be a list of annotations")
                return LoadedItem(str(item.get("name") or ""), item, answers=stored_answers(annotations))
            return LoadedItem(name, error=f"cannot read a {type(item).__name__} as a prompt item")
        except Exception as error:  # noqa: BLE001 - reported per item, the batch goes on
            return LoadedItem(name, error=f"could not read the item: {error}", item_id=getattr(item, "id", None))

    @staticmethod
    def _text_item(name: str, content: bytes, item_id: str | None) -> LoadedItem:
        try:
            return LoadedItem(name, text=content.decode("utf-8-sig"), item_id=item_id)
        except UnicodeDecodeError as error:
            return LoadedItem(name, error=f"item {_SHORT.repr(name)} is not UTF-8 text (byte {error.start})",
                              item_id=item_id)

    def predict(self, batch: Sequence[Any], reanswer: bool | None = None,
                **kwargs: Any) -> list[dl.AnnotationCollection]:
        """`predict_with_report`'s annotations; its report is kept in `last_report`."""
        return self.predict_with_report(batch, reanswer)[0]

    def predict_with_report(self, batch: Sequence[Any], reanswer: bool | None = None
                            ) -> tuple[list[dl.AnnotationCollection], PredictionReport]:
        """Answer the items' questions; one collection per item, in batch order, and what was not answered.

        Which prompts a call answers: see `_earlier_answers`; `reanswer=True` answers every prompt again for this
        call (dtlpy's `evaluate_model`), as the `reanswer` key does for every call. Raises `ModelFailure` when the
        model fails (nothing is returned, so dtlpy uploads and deletes nothing for the batch); bad input is
        skipped and reported instead. The report is this call's own (also this thread's `last_report`).
        Safe to call from several threads at once: their rows share forward passes (`self.batcher`).
        """
        report = PredictionReport()
        self._this_thread.report = report
        loaded = [entry if isinstance(entry, LoadedItem) else self.prepare_item_func(entry) for entry in batch]
        with self.batcher.calling():  # a gather may wait a moment for this call's rows
            parsed_items = [self._parse(index, entry, report) for index, entry in enumerate(loaded)]
            earlier = self._earlier_answers(parsed_items, loaded, report,
                                            bool(reanswer) or bool(self.configuration.get("reanswer")))
            conversations = [c for parsed in parsed_items if parsed for c in self._conversations(parsed, report)]
            answers = self._answer(conversations, report, earlier)
        collections = [self._collection(parsed, answers) for parsed in parsed_items]
        for index, (parsed, collection) in enumerate(zip(parsed_items, collections)):
            if not collection.answered_prompts:
                report.nothing_answered(index, failed_item=parsed is None)
        return collections, report

    def _earlier_answers(self, parsed_items: list[ParsedItem | None], loaded: list[LoadedItem],
                         report: PredictionReport, reanswer: bool) -> dict[int, list[Answer]]:
        """This model's stored answers that stand: their questions are not run again, and the chat turns after
        them see these answers, as they stand (a person may have edited them), as the history.

        An answer stands unless `reanswer` (every prompt is answered again), or its prompt is the item's last one
        (every call answers it, or answers it again: the studio's regenerate, as Dataloop's chat apps do it), or
        its question was edited since it was answered (the fingerprint recorded with the answer differs). A
        prompt's answers stand or are replaced together. A text item is always answered.
        """
        if reanswer:
            return {}
        earlier: dict[int, list[Answer]] = {}
        for parsed, entry in zip(parsed_items, loaded):
            if parsed is None or parsed.format == "text":
                continue
            stored = answers_by(self.model_name, entry.answers)
            for prompt_key, questions in _by_prompt(parsed.questions).items():
                answers = stored.get(prompt_key)
                if not answers or prompt_key == parsed.last_prompt:
                    continue
                matched = [_matching(answers, question, position) for position, question in enumerate(questions)]
                if any(a.fingerprint not in (None, q.fingerprint) for a, q in zip(matched, questions)):
                    logger.info("%s: edited since %s answered it; answered again", location(parsed.name, prompt_key),
                                self.model_name)
                    continue
                for question, answer in zip(questions, matched):
                    earlier[id(question)] = [Answer(answer.text, 1.0)]
                    report.keep(Skipped(question.item_name, prompt_key, question.element_key,
                                        f"already answered by {self.model_name}; set reanswer to answer it again"))
        return earlier

    def _parse(self, index: int, loaded: LoadedItem, report: PredictionReport) -> ParsedItem | None:
        loaded.name = loaded.name or f"batch[{index}]"
        try:
            if loaded.error:
                raise MalformedItemError(loaded.error)
            if loaded.text is not None:
                parsed = text_item(loaded.text, index, loaded.name)
            else:
                parsed = parse_prompt_item(loaded.data, index, loaded.name)
        except MalformedItemError as error:
            report.add(Skipped(loaded.name, None, None, str(error)), failed_item=True, item_index=index)
            return None
        for skipped in parsed.skipped:
            report.add(skipped, item_index=index)
        return parsed

    def _conversations(self, parsed: ParsedItem, report: PredictionReport) -> list[list[Question]]:
        """`conversations(parsed)`, or every question of the item reported when a module cannot group them."""
        try:
            return self.conversations(parsed)
        except Exception as error:  # noqa: BLE001 - one odd item must not sink the batch
            for question in parsed.questions:
                self._fail(question, report, f"could not order the item's questions: {_error_text(error, question)}")
            return []

    def _answer(self, conversations: list[list[Question]], report: PredictionReport,
                earlier: dict[int, list[Answer]] | None = None) -> dict[int, list[Answer]]:
        """Answer conversations turn by turn; each turn batches every conversation that has one.

        A question in `earlier` is not run: its stored answer joins the conversation's history.
        """
        earlier = earlier or {}
        answers: dict[int, list[Answer]] = {}
        histories: list[list[Turn]] = [[] for _ in conversations]
        broken: set[int] = set()
        for turn in range(max((len(c) for c in conversations), default=0)):
            pending: list[tuple[int, Question, int, int]] = []
            rows: list[Row] = []
            owners: list[Question] = []  # the question of each row
            for index, conversation in enumerate(conversations):
                if turn >= len(conversation):
                    continue
                question = conversation[turn]
                if id(question) in earlier:
                    histories[index].append(Turn(question, earlier[id(question)]))
                    continue
                if index in broken:
                    self._fail(question, report, "an earlier turn of this conversation was not answered")
                    continue
                try:
                    question_rows = self.preprocess(question, histories[index])
                except Exception as error:  # noqa: BLE001 - one bad question must not sink the batch
                    self._fail(question, report, f"could not prepare the question: {_error_text(error, question)}")
                    broken.add(index)
                    continue
                pending.append((index, question, len(rows), len(rows) + len(question_rows)))
                rows.extend(question_rows)
                owners.extend([question] * len(question_rows))
            outputs = self._forward_rows(rows, owners)
            for index, question, start, end in pending:
                try:
                    question_answers = self.postprocess(question, outputs[start:end])
                except Exception as error:  # noqa: BLE001 - the module failed on model output: not the input's fault
                    raise ModelFailure(f"{self.model_name} could not read the model's output for {question.where}: "
                                       f"{_error_text(error, question)}") from error
                answers[id(question)] = question_answers
                histories[index].append(Turn(question, question_answers))
        return answers

    def _forward_rows(self, rows: list[Row], owners: list[Question] | None = None, forward: Any = None,
                      batch_cost: Any = None, min_batch_tokens: int | None | str = "module",
                      padding_side: str | None = None, kind: str = "predict") -> list[Any]:
        """Outputs of `rows`, in row order, from length-sorted micro-batches shared with concurrent calls.

        `forward`, `batch_cost` and `min_batch_tokens` default to the module's (embeddings pass their own, `kind`
        "embed"), and `padding_side` to the tokenizer's. With `stream_to` set, `forward` also gets each row's
        listener (`owners` names the question of each row), and the call runs alone: its tokens go out as they
        are made. A failing micro-batch (an exception in the forward pass, out of memory) raises `ModelFailure`
        for the whole call: returning without its answers would let the platform replace earlier answers with
        nothing.
        """
        forward = forward or self.forward
        batch_cost = batch_cost or self.batch_cost
        min_batch_tokens = self.min_batch_tokens if min_batch_tokens == "module" else min_batch_tokens
        listeners = self._listeners(owners) if owners else None
        # rows are handed back to `run` as the very objects given here: a row's listener is found by identity
        listener_of = {id(row): listener for row, listener in zip(rows, listeners)} if listeners else None

        def run(batch: list[Row]) -> list[Any]:
            heard = None if listener_of is None else [listener_of[id(row)] for row in batch]
            return self._run_micro_batch(batch, forward, padding_side, heard)
        costs = [batch_cost(1, len(row["input_ids"])) for row in rows]
        recipe = self.recipe(run, kind, batch_cost, min_batch_tokens, alone=listener_of is not None)
        return self.batcher.run(rows, costs, recipe)

    def recipe(self, run: Callable[[list[Row]], list[Any]], kind: str = "predict", batch_cost: Any = None,
               min_batch_tokens: int | None | str = "module", alone: bool = False) -> Recipe:
        """How this thread's call runs rows through `run` (one micro-batch in, one output per row out), for the
        batcher: `kind` names the path (predict, or another that runs rows its own way) in the batch key; a call
        `alone` shares no forward pass (a key of its own)."""
        configuration = self.configuration
        batch_cost = batch_cost or self.batch_cost
        min_batch_tokens = self.min_batch_tokens if min_batch_tokens == "module" else min_batch_tokens

        def plan(lengths: list[int]) -> list[list[int]]:
            with self._using(configuration):
                return plan_micro_batches(lengths, configuration["batch_size"], configuration["max_batch_tokens"],
                                          batch_cost, min_batch_tokens)

        def run_configured(rows: list[Row]) -> list[Any]:
            with self._using(configuration):  # the batcher may run them in another call's thread
                return run(rows)

        key = object() if alone else (kind, self.batch_key(configuration))
        return Recipe(key=key, max_rows=configuration["batch_size"], max_tokens=configuration["max_batch_tokens"],
                      wait_seconds=configuration["max_batch_wait_ms"] / 1000, plan=plan, run=run_configured)

    def _run_micro_batch(self, rows: list[Row], forward: Any = None, padding_side: str | None = None,
                         listeners: list[AnswerListener | None] | None = None) -> list[Any]:
        """One padded forward pass; any failure in it is the model's (`ModelFailure`)."""
        forward = forward or self.forward
        try:
            inputs = self.tokenizer.pad(rows, padding=True, return_tensors="pt",
                                        padding_side=padding_side or self.tokenizer.padding_side)
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            with torch.inference_mode():
                return forward(inputs) if listeners is None else forward(inputs, listeners)
        except Exception as error:  # noqa: BLE001 - any failure here is the model's, reported as such
            raise ModelFailure(f"{self.model_name} failed on a micro-batch of {len(rows)} rows: "
                               f"{type(error).__name__}: {_short(error)}") from error

    def _listeners(self, questions: list[Question]) -> list[AnswerListener | None] | None:
        """The listener of each row's question when answers are streamed (`stream_to`), else None."""
        if self.stream_to is None:
            return None
        listeners = [self.stream_to(question) for question in questions]
        return listeners if any(listener is not None for listener in listeners) else None

    @staticmethod
    def _fail(question: Question, report: PredictionReport, reason: str) -> None:
        report.add(Skipped(question.item_name, question.prompt_key, question.element_key, reason),
                   item_index=question.item_index)

    def _collection(self, parsed: ParsedItem | None, answers: dict[int, list[Answer]]) -> ItemAnswers:
        """The item's answers as annotations: on their prompt (`promptId`), or on the item itself for a text item;
        `model_output` holds the module's details and what was answered (`answered`: element and fingerprint).

        With output_type 'class' a text item's answers are `dl.Classification`s (see `classes`) and every answer
        records the model's label set (`label_set`); a prompt item's stay `dl.FreeText` (adapters/core/classes.py).
        """
        collection = ItemAnswers()
        as_classes = self.output_type == CLASS and parsed is not None and parsed.format == "text"
        for question in parsed.questions if parsed else []:
            if id(question) not in answers:
                continue
            collection.answered_prompts.add(question.prompt_key)
            answered = {"element": question.element_key, "sha256": question.fingerprint}
            for answer in answers.get(id(question), []):
                output = _json_numbers({**answer.details, "answered": answered})
                if self.output_type == CLASS:
                    output["label_set"] = self.label_set(question)
                if not as_classes:
                    collection.add(annotation_definition=dl.FreeText(text=answer.text), prompt_id=question.prompt_key,
                                   model_info=self._model_info(answer.confidence),
                                   metadata={"user": {"model_output": output}})
                    continue
                classified = self.classes(question, answer)
                if not classified:
                    logger.info("%s: no label reaches the threshold; the answer is no classification", question.where)
                for label, confidence in classified:
                    collection.add(annotation_definition=dl.Classification(label=label),
                                   model_info=self._model_info(confidence),
                                   metadata={"user": {"model_output": dict(output)}})
        return collection

    def _model_info(self, confidence: float) -> dict:
        confidence = confidence if math.isfinite(confidence) else 0.0
        return {"name": self.model_name, "confidence": min(max(confidence, 0.0), 1.0)}

    # ----- embeddings (adapters/core/embedding.py) -----
    @property
    def embedding_size(self) -> int:
        """The length of every vector `embed_texts` returns (the feature set's size on the platform)."""
        return embedding_size(self.model.config)

    def embed_texts(self, texts: Sequence[str], where: Sequence[str] | None = None) -> list[list[float]]:
        """One vector per text, in order: the mean of the model's hidden states over the text's tokens (cut to the
        model's input limit, with a warning naming `where`), batched by the same micro-batch planner as `predict`.

        Raises `ModelFailure` when the model fails, as `predict` does.
        """
        where = list(where) if where is not None else [f"text {i}" for i in range(len(texts))]
        rows = [self.encode(text, where=place)[0] for text, place in zip(texts, where)]
        vectors = self._forward_rows(rows, forward=self._pooled, batch_cost=lambda count, longest: count * longest,
                                     min_batch_tokens=HuggingAdapter.min_batch_tokens, padding_side="right")
        return [vector.tolist() for vector in vectors]

    def _pooled(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Mean-pooled last hidden states of a padded batch (padded on the right: causal models see no padding
        before a real token, so every position is the one the text has alone)."""
        encoder = embedding_encoder(self._torch_model())
        hidden = encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        return list(mean_pooled(hidden, inputs["attention_mask"]).cpu())

    def _torch_model(self) -> Any:
        """The torch model whose hidden states are pooled: the loaded one, or (runtimes that only classify or
        generate: onnx, ctranslate2) the same weights loaded through torch once, on the first embedding."""
        if self.runtime.name == "torch":
            return self.model
        if self._embedding_weights is None:
            self._embedding_weights = load_weights(self.model_class, resolve_source(self.configuration["model_path"]))
            self._embedding_weights.to(self.device).eval()
        return self._embedding_weights

    _embedding_weights: Any = None

    def embed_items(self, batch: Sequence[Any]) -> tuple[list[list[float] | None], PredictionReport]:
        """One vector (or None) per item of `batch`, in order, as dtlpy's `embed` contract asks: a text item's
        text, a prompt item's last question (its newest prompt's, as Dataloop's embedding apps read a prompt item).
        An item with no question to embed gets None, and the report's `unanswered` says why."""
        report = PredictionReport()
        loaded = [entry if isinstance(entry, LoadedItem) else self.prepare_item_func(entry) for entry in batch]
        chosen: list[tuple[int, Question]] = []
        for index, entry in enumerate(loaded):
            parsed = self._parse(index, entry, report)
            if parsed is None or not parsed.questions:
                report.nothing_answered(index, failed_item=parsed is None)
                continue
            last = [q for q in parsed.questions if q.prompt_key == parsed.last_prompt] or parsed.questions
            chosen.append((index, last[-1]))
        vectors: list[list[float] | None] = [None] * len(loaded)
        embedded = self.embed_texts([q.text for _, q in chosen], [q.where for _, q in chosen])
        for (index, _), vector in zip(chosen, embedded):
            vectors[index] = vector
        return vectors, report

    # ----- fine-tuning (driven by adapters/training/; a module adds `training_rows` and maybe the rest) -----
    metric_family: ClassVar[str] = "classification"

    def prepare_training(self, references: list[str]) -> None:
        """Fit the model to the train subset's answers before rows are built (e.g. a head for new labels)."""

    def training_rows(self, question: Question, history: list[Turn], reference: str) -> list[Row]:
        """Rows with `labels` that teach the model to answer `question` (after `history`) with `reference`.

        A module that does not override this cannot be fine-tuned: `check_trainable` refuses it up front.
        """
        self.check_trainable()
        return []

    @classmethod
    def check_trainable(cls) -> None:
        """Refuse fine-tuning, before any data is read, for a module that defines no `training_rows`."""
        if cls.training_rows is HuggingAdapter.training_rows:
            raise ConfigurationError(f"{cls.__module__} cannot be fine-tuned: it defines no training_rows")

    @contextmanager
    def training_input_limit(self) -> Iterator[None]:
        """Cap inputs at `max_source_length` (when the module has it) while training rows are built."""
        saved = self.max_input_tokens
        self.max_input_tokens = min(saved, self.configuration.get("max_source_length") or saved)
        try:
            yield
        finally:
            self.max_input_tokens = saved

    def answer_questions(self, items: Sequence[ParsedItem]) -> tuple[dict[Question, list[Answer]], PredictionReport]:
        """Answer parsed items exactly as `predict` does, keyed by question, for evaluation against references."""
        report = PredictionReport()
        answers = self._answer([c for parsed in items for c in self._conversations(parsed, report)], report)
        return {q: answers[id(q)] for parsed in items for q in parsed.questions if id(q) in answers}, report


# Exceptions whose messages this package writes itself, never quoting user text: they are safe in a skip reason.
_OWN_ERRORS = (ConfigurationError, InputError, MalformedItemError)


def _error_text(error: Exception, question: Question) -> str:
    """An exception as a skip reason, which is logged and returned: user text must never be in it.

    Our own errors say what to fix. Anything else (a library's error) may quote the question, whole, cut,
    lower-cased or as tokens, which no search-and-replace can catch safely: the reason names only the error's
    type, and its message goes to the DEBUG log, which may hold user text (`-v`).
    """
    if isinstance(error, _OWN_ERRORS):
        return str(error) or type(error).__name__
    logger.debug("%s: %s", question.where, error, exc_info=error)
    return f"failed with {type(error).__name__} (its message may quote the question, so only the DEBUG log has it)"


def _json_numbers(value: Any) -> Any:
    """`value` with every NaN or infinity (a broken model output) as None: JSON has no such numbers, and the
    annotation is written as JSON (the platform's upload, the CLI's file)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_numbers(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_numbers(item) for item in value]
    return value


def _short(error: Exception, limit: int = 300) -> str:
    """An exception's message cut to `limit` characters: a model error is logged, and some quote whole tensors."""
    message = str(error)
    return message if len(message) <= limit else message[:limit] + "..."


def is_prompt_item(item: dl.Item) -> bool:
    return is_prompt_metadata(item.metadata)


def is_text_item(item: dl.Item) -> bool:
    """A plain-text file (what dtlpy reads for `inputType: text`), not a prompt item."""
    return is_text_item_metadata(item.metadata)


def refusal_of(item: dl.Item) -> str | None:
    """Why `item` is refused before it is read (it is neither a prompt item nor a text item), or None."""
    if is_prompt_item(item) or is_text_item(item):
        return None
    mimetype = system_metadata(item.metadata).get("mimetype")
    described = f"mimetype {_SHORT.repr(mimetype)}" if isinstance(mimetype, str) else "no mimetype"
    return (f"item {_SHORT.repr(str(item.name or item.id))} is neither a prompt item nor a text item ({described}; "
            f"this model reads prompt items and {' or '.join(TEXT_ITEM_MIMETYPES)} items): refused, nothing of it was "
            "read")


def _by_prompt(questions: Sequence[Question]) -> dict[str | None, list[Question]]:
    grouped: dict[str | None, list[Question]] = {}
    for question in questions:
        grouped.setdefault(question.prompt_key, []).append(question)
    return grouped


def _matching(answers: list[StoredAnswer], question: Question, position: int) -> StoredAnswer:
    """The stored answer to `question`: the one recorded for its element, else the one at its position in the
    prompt (the last answer for questions beyond the answers, as older versions stored them)."""
    for answer in answers:
        if answer.element is not None and answer.element == question.element_key:
            return answer
    return answers[min(position, len(answers) - 1)]


def _manifest_name(module_name: str) -> str:
    for entry in model_entries():
        if entry.get("configuration", {}).get("module_name") == module_name:
            return entry["name"]
    return module_name.rsplit(".", 1)[-1]
