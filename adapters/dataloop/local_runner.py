"""Run a manifest model on local prompt-item files through dtlpy's own `ModelAdapter.predict_items`, offline.

The point is parity with the platform: the same `dl.Model` configuration, the same item download, batching,
annotation metadata and upload code. Only the network edges are replaced: configuration writes stay on the local
entity, items are local files read through a `file://` link, and each item's annotation repository is local: it
lists the answers the file already holds (its "annotations" list, as the platform's item JSON has them) and keeps
what the model uploads. The CLI (`python -m adapters predict`) builds on `LocalRunner`.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import stat
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from adapters.core.errors import ConfigurationError, MalformedItemError
from adapters.core.local_weights import check_local_weights
from adapters.core.manifest import defaults_for_module, model_entry
from adapters.core.module_loader import canonical_module_name, load_model_module
from adapters.core.prompt_items import Skipped, parse_prompt_item, short
from adapters.core.settings import (
    BASE_SETTINGS,
    refuse_remote_code,
    resolve_configuration,
    setting_names,
    unknown_keys_error,
)
from adapters.training.settings import TRAINING_SETTINGS

logger = logging.getLogger(__name__)


def parse_assignments(assignments: Iterable[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings to a dict; a VALUE that parses as JSON is used as such (`8`, `true`, `["a","b"]`)."""
    parsed: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"expected KEY=VALUE, got {short(assignment)}")
        try:
            parsed[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key.strip()] = raw
        except (ValueError, RecursionError) as error:  # JSON that Python cannot hold: say which
            raise ConfigurationError(f"configuration {short(key.strip())}: {unreadable_json(error)}") from None
    return parsed


def unreadable_json(error: ValueError | RecursionError) -> str:
    """Why valid JSON could not be read (json.loads raises these, not JSONDecodeError, for them)."""
    if isinstance(error, RecursionError):
        return "its value nests too deeply; give a flat value"
    return "its value is a number of more than 4300 digits, which Python refuses to read; give a smaller number"


def validate_configuration(configuration: dict[str, Any]) -> dict[str, Any]:
    """Check a whole configuration without loading weights: module, keys, values and cross-key rules.

    Unlike the adapter at load time, which logs and drops unknown keys (the platform adds its own), a person
    typing a configuration gets an error for a key the module does not read: it is almost always a typo.
    Returns the resolved configuration (manifest defaults of the module filled in).
    """
    module_name = canonical_module_name(configuration.get("module_name"))
    adapter_class = load_model_module(module_name).HuggingAdapter
    known = setting_names(adapter_class.settings)
    unknown = sorted(set(configuration) - known - {"trust_remote_code"})  # refused by resolve_configuration
    if unknown:
        raise unknown_keys_error(module_name, unknown, known)
    resolved = resolve_configuration(module_name, adapter_class.settings, configuration)
    adapter_class.check_configuration(resolved)  # the module's pre-load hook: configuration only, no weights
    return resolved


# Keys whose declaration every module shares (tests/test_manifest.py holds them equal), so their values can be checked
# before a module, and with it torch and transformers, is imported.
SHARED_SETTINGS = {setting.name: setting for setting in (*BASE_SETTINGS, *TRAINING_SETTINGS)}


def precheck_configuration(model_name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What can be checked in a fraction of a second, before the model's module (torch, transformers, dtlpy) is
    imported: the model name, the module, every key (the manifest lists each key its module reads), the values of
    the keys every module shares, and a local `model_path`. Returns the manifest configuration with `overrides`.

    `validate_configuration` checks the rest (each module's own values and cross-key rules) once the module is
    imported, still before any weights are read.
    """
    entry = model_entry(model_name)
    configuration = {**entry.get("configuration", {}), **(overrides or {})}
    module_name = canonical_module_name(configuration.get("module_name"))
    refuse_remote_code(configuration)
    known = set(defaults_for_module(module_name))
    unknown = sorted(set(configuration) - known - {"trust_remote_code"})
    if unknown:
        raise unknown_keys_error(module_name, unknown, known)
    for key, value in configuration.items():
        if key in SHARED_SETTINGS:
            SHARED_SETTINGS[key].validate(value)
    check_local_weights(configuration["model_path"])
    return configuration


def manifest_configuration(model_name: str, overrides: dict[str, Any] | None = None) -> tuple[dict, dict]:
    """(manifest entry, its configuration with `overrides` applied), validated; unknown names raise KeyError."""
    entry = model_entry(model_name)
    configuration = {**entry.get("configuration", {}), **(overrides or {})}
    validate_configuration(configuration)
    return entry, configuration


def local_model_entity(entry: dict[str, Any], configuration: dict[str, Any]) -> Any:
    """A `dl.Model` built from a manifest entry with no platform behind it: configuration writes stay local."""
    import dtlpy as dl

    model = dl.Model.from_json(_json={
        "id": f"local-{entry['name']}", "name": entry["name"], "moduleName": entry.get("moduleName"),
        "inputType": entry.get("inputType", "text"), "outputType": entry.get("outputType", "text"),
        "status": entry.get("status"), "configuration": dict(configuration),
    }, client_api=dl.client_api, project=None, package=dl.Package())
    model.update = lambda *args, **kwargs: model
    return model


def local_item(path: Path, name: str, item_id: str) -> Any:
    """A `dl.Item` whose content is the local file at `path`, read by `item.download` through a file:// link, and
    whose annotations live in a `LocalAnnotations` repository."""
    import dtlpy as dl

    item = dl.Item.from_json(_json={
        "id": item_id, "name": name, "filename": "/" + name.lstrip("/"), "type": "file",
        "metadata": {"system": {"mimetype": "application/json", "shebang": {
            "dltype": "prompt", "linkInfo": {"type": "url", "ref": file_link(path)}}}},
    }, client_api=dl.client_api, dataset=None, project=None)
    item._repositories = item._repositories._replace(annotations=_local_annotations_class()(item, path))
    return item


def file_link(path: Path) -> str:
    """`path` as the file:// link dtlpy's downloader reads back: percent-quoted, but for the bytes of a name that is
    not UTF-8 (surrogate escapes, as Python reads such names), which its UTF-8 unquote would turn into U+FFFD."""
    return "file://" + "".join(part if _ESCAPED_BYTES.fullmatch(part) else urllib.parse.quote(part)
                               for part in _ESCAPED_BYTES.split(str(path.resolve())) if part)


_ESCAPED_BYTES = re.compile("([\udc80-\udcff]+)")


# Fields the platform sets on every annotation it stores; a hand-written answer in a local file may leave them out.
PLATFORM_FIELDS = {"creator": None, "createdAt": None, "updatedBy": None, "updatedAt": None}


@functools.lru_cache(maxsize=1)
def _local_annotations_class() -> type:
    """`LocalAnnotations`, defined on first use so that importing this module does not import dtlpy."""
    import dtlpy as dl

    class LocalAnnotations(dl.repositories.Annotations):
        """An item's annotations without a platform: the file's own "annotations", and what gets uploaded."""

        def __init__(self, item: Any, path: Path):
            super().__init__(client_api=dl.client_api, item=item)
            self.path = path
            self.uploaded: list[Any] = []
            self.deleted: list[str] = []

        def list(self, filters: Any = None, page_offset: Any = None, page_size: Any = None) -> Any:
            stored = file_annotations(self.path)
            return dl.AnnotationCollection(item=self.item, annotations=[
                dl.Annotation.from_json(_json={**PLATFORM_FIELDS, **a}, item=self.item) for a in stored
                if isinstance(a, dict) and isinstance(a.get("type"), str)])

        def upload(self, annotations: Any, merge: bool = False) -> Any:
            annotations = list(getattr(annotations, "annotations", annotations))
            self.uploaded.extend(annotations)
            return dl.AnnotationCollection(item=self.item, annotations=annotations)

        def delete(self, annotation: Any = None, annotation_id: str | None = None, filters: Any = None) -> bool:
            self.deleted.append(annotation_id or getattr(annotation, "id", None) or "filter")
            return True

    return LocalAnnotations


def file_annotations(path: Path) -> list:
    """The "annotations" list a local prompt-item file carries (answers from an earlier run), or []."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # the item itself is read (and its error reported) by the adapter
    annotations = data.get("annotations") if isinstance(data, dict) else None
    return annotations if isinstance(annotations, list) else []


@dataclass
class FileResult:
    """The answers for one input file, what was skipped in it, or why it could not be read at all."""

    file: str
    annotations: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "annotations": self.annotations, "skipped": self.skipped, "kept": self.kept,
                "error": self.error}


def _skip_json(skipped: Skipped) -> dict[str, Any]:
    return {"prompt": skipped.prompt_key, "element": skipped.element_key, "reason": skipped.reason}


def unique_names(files: Sequence[str]) -> list[str]:
    """Item names are how the adapter's report refers to items, so a file given twice gets a suffix."""
    seen: dict[str, int] = {}
    names = []
    for file in files:
        seen[file] = seen.get(file, 0) + 1
        names.append(file if seen[file] == 1 else f"{file} [{seen[file]}]")
    return names


class LocalRunner:
    """One manifest model, loaded once, answering local prompt-item files through `predict_items`."""

    def __init__(self, model_name: str, overrides: dict[str, Any] | None = None):
        from adapters.dataloop.model_adapter import ModelAdapter

        self.entry, self.configuration = manifest_configuration(model_name, overrides)
        self.model = local_model_entity(self.entry, self.configuration)
        # Training reports its per-epoch plot samples to `model.metrics`: offline they are kept here.
        self.metric_samples: list[Any] = []
        self.model.metrics.create = lambda samples, dataset_id=None: self.metric_samples.extend(samples)
        self.adapter = ModelAdapter()
        self.adapter.streams_answers = False  # local files get their answers when they are finished
        # An empty artifacts folder: stale files under DATALOOP_PATH/models must not replace model_path.
        with tempfile.TemporaryDirectory(prefix="hf-adapter-artifacts-") as artifacts, _quiet_stdout():
            self.adapter.load_from_model(model_entity=self.model, local_path=artifacts)
        self._lock = threading.Lock()

    def predict_files(self, files: Sequence[str | os.PathLike], batch_size: int | None = None,
                      on_progress: Callable[[float, int], None] | None = None,
                      on_result: Callable[[FileResult], None] | None = None,
                      names: Sequence[str] | None = None,
                      checks: Sequence[FileCheck] | None = None) -> list[FileResult]:
        """One result per file, in order; unreadable or malformed files get an `error`, the others are answered.

        Every file is read and parsed first (`check_file`, or the `checks` a caller already made), so that
        `on_progress(done, total)` has its total from the start: the questions of every readable file, answered
        (or given up) as each micro-batch the model runs finishes (see `QuestionProgress`). `on_result(result)`
        receives each file's result, in file order, as soon as it and those before it are finished: files are run
        a batch at a time (dtlpy's `predict_items` on each batch), so a long run hands over its work as it goes; an
        exception it raises stops the run there. `names` are what results call the files (default: the paths).
        """
        display = list(names) if names is not None else [str(f) for f in files]
        checks = list(checks) if checks is not None else [check_file(Path(f)) for f in files]
        results = [FileResult(name) for name in display]
        finished = InOrder(results, on_result)
        readable: list[tuple[int, Any]] = []
        for index, (name, file, check) in enumerate(zip(unique_names(display), files, checks)):
            if check.problem:
                results[index].error = check.problem
                logger.info("not answered: %s", check.problem)
            else:
                readable.append((index, local_item(Path(file), name, f"local-item-{index}")))
        finished.add(index for index, result in enumerate(results) if result.error)
        if readable:
            size = batch_size or self.configuration.get("batch_size") or 4  # what predict_items would use
            total = sum(check.questions for check in checks if not check.problem)
            progress = QuestionProgress(on_progress, total) if on_progress else None
            with self._lock:  # the adapter's report and upload hooks are per call, not per thread
                for start in range(0, len(readable), size):
                    chunk = readable[start:start + size]
                    self._predict(chunk, results, size, progress)
                    finished.add(index for index, _ in chunk)
        return results

    def _predict(self, readable: list[tuple[int, Any]], results: list[FileResult], batch_size: int | None,
                 progress: QuestionProgress | None) -> None:
        by_name = {item.name: results[index] for index, item in readable}
        hugging_predict = self.adapter.predict

        def predict(batch: list, **kwargs: Any) -> list:
            if progress:
                progress.start(sum(_question_count(loaded) for loaded in batch))
            try:
                collections = hugging_predict(batch, **kwargs)
            except Exception as error:  # noqa: BLE001 - dtlpy goes on with the next batch; we report these files
                for loaded in batch:
                    by_name[loaded.name].error = f"prediction failed: {error}"
                raise
            finally:
                if progress:
                    progress.finish()
            report = self.adapter.hugging.last_report
            for skipped in report.failed_items:
                by_name[skipped.item].error = skipped.reason
            for skipped in report.skipped:
                by_name[skipped.item].skipped.append(_skip_json(skipped))
            for kept in report.kept:
                by_name[kept.item].kept.append(_skip_json(kept))
            return collections

        self.adapter.predict = predict
        try:
            with _quiet_stdout(), progress.watching(self.adapter.hugging) if progress else contextlib.nullcontext():
                self.adapter.predict_items([item for _, item in readable], batch_size=batch_size)
        except Exception as error:  # noqa: BLE001 - raised after every batch ran; failed files already say why
            logger.debug("predict_items reported failed batches: %s", error)
        finally:
            del self.adapter.predict
        for index, item in readable:
            results[index].annotations.extend(a.to_json() for a in item.annotations.uploaded)


class InOrder:
    """Hands results to a callback in their order, each once it and every result before it are finished."""

    def __init__(self, results: list[FileResult], callback: Callable[[FileResult], None] | None):
        self.results, self.callback = results, callback
        self.done: set[int] = set()
        self.handed = 0

    def add(self, finished: Iterable[int]) -> None:
        self.done.update(finished)
        while self.handed in self.done:
            self.handed += 1
            if self.callback is not None:
                self.callback(self.results[self.handed - 1])


class QuestionProgress:
    """Questions done out of every question of the run, moving with every micro-batch rather than once per call.

    The total is counted before anything runs (every file is parsed first), so a bar over many files fills once.
    A predict call's questions are known when it starts (its items are parsed); while it runs, each micro-batch
    the model finishes advances the share of rows it ran among the rows prepared so far, and the call ends at
    its full count (skipped questions included), so the bar never stalls at 0 through a long call.
    """

    def __init__(self, report: Callable[[float, int], None], total: int):
        self.report = report
        self.total = total
        self.finished = 0  # questions of the predict calls that are over
        self.shown = 0.0
        self.asked = self.prepared = self.rows = self.rows_run = 0

    def start(self, questions: int) -> None:
        self.asked, self.prepared, self.rows, self.rows_run = questions, 0, 0, 0
        self._show(self.finished)

    def finish(self) -> None:
        self.finished += self.asked
        self.asked = 0
        self._show(self.finished)

    @contextlib.contextmanager
    def watching(self, hugging: Any) -> Iterator[None]:
        """Count the rows `hugging` prepares and runs while predict_items goes on."""
        preprocess, forward = hugging.preprocess, hugging.forward

        def counted_preprocess(question: Any, history: Any) -> Any:
            rows = preprocess(question, history)
            self.prepared += 1
            self.rows += len(rows)
            return rows

        def counted_forward(inputs: Any) -> Any:
            outputs = forward(inputs)
            self.rows_run += len(outputs)
            self._show(self.finished + min(self.asked, self.prepared * self.rows_run / max(self.rows, 1)))
            return outputs

        hugging.preprocess, hugging.forward = counted_preprocess, counted_forward
        try:
            yield
        finally:
            hugging.preprocess, hugging.forward = preprocess, forward

    def _show(self, done: float) -> None:
        self.shown = min(max(self.shown, done), self.total)  # a file edited since it was counted cannot overshoot
        self.report(self.shown, self.total)


def _question_count(loaded: Any) -> int:
    """How many questions an item read by `prepare_item_func` holds (0 when it cannot be parsed)."""
    try:
        return len(parse_prompt_item(loaded.data, 0, loaded.name).questions) if loaded.error is None else 0
    except MalformedItemError:
        return 0


def quiet_platform_logs() -> None:
    """Keep dtlpy's own logging to errors: offline, its cookie, download and adapter notices are noise.

    dtlpy logs at DEBUG while it is imported and would reach the root handler, so propagation is cut first;
    dtlpy still writes its full log file under DATALOOP_PATH.
    """
    platform = logging.getLogger("dtlpy")
    platform.propagate = False
    import dtlpy  # noqa: F401 - sets the dtlpy logger's level when first imported

    platform.setLevel(logging.ERROR)
    logging.getLogger("ModelAdapter").setLevel(logging.ERROR)


@dataclass(frozen=True)
class FileCheck:
    """What reading a prompt-item file up front found: why it cannot be answered, or how many questions it holds."""

    problem: str | None = None
    questions: int = 0


def unreadable(path: Path) -> str | None:
    """Why `path` cannot be read, or None. Only regular files are read: a FIFO would block the read forever, a
    device (/dev/zero) never end."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            return f"cannot read {str(path)!r}: it is a folder"
        if not stat.S_ISREG(mode):
            return f"cannot read {str(path)!r}: not a regular file (a pipe, socket or device is refused)"
        with open(path, "rb") as file:
            file.read(1)
    except OSError as error:
        return _cannot_read(path, error)
    return None


def _cannot_read(path: Path, error: OSError) -> str:
    return f"cannot read {str(path)!r}: {error.strerror or error}"


def check_file(path: Path, name: str | None = None) -> FileCheck:
    """Read and parse `path` as the adapter will, before any model is loaded: a missing, unreadable or malformed
    file is one clear line at once (not a download trace, not after the weights), and the questions are counted."""
    problem = unreadable(path)
    if problem:
        return FileCheck(problem)
    try:
        content = path.read_bytes()
    except OSError as error:
        return FileCheck(_cannot_read(path, error))
    try:
        data = json.loads(content)
    except Exception as error:  # noqa: BLE001 - as the adapter words it (ValueError, RecursionError)
        return FileCheck(f"could not read the item: {error}")
    try:
        return FileCheck(questions=len(parse_prompt_item(data, 0, name or str(path)).questions))
    except MalformedItemError as error:
        return FileCheck(str(error))
    except RecursionError:
        return FileCheck("could not read the item: it nests too deeply")


@contextlib.contextmanager
def _quiet_stdout():
    """dtlpy draws its progress bars on stdout; keep stdout for the caller's output."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield
