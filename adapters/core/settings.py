"""Declared, validated configuration: each module lists the keys it reads, the manifest gives defaults.

Configuration is data, not code: every value is type- and range-checked before a model is loaded, so a
hostile or mistyped configuration is refused up front with a message that says what to fix.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import ConfigurationError
from .manifest import defaults_for_module
from .prompt_items import short
from .suggestions import did_you_mean

logger = logging.getLogger(__name__)

# How dtlpy's adapter and model entity read a configuration key: `configuration.get('key'` or `configuration['key'`.
_DTLPY_READ = re.compile(r"""configuration(?:\.get\(|\[)\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")


@functools.cache
def dtlpy_keys() -> frozenset[str]:
    """Keys dtlpy owns in a model's configuration, taken from the installed dtlpy itself: its adapter defaults
    (`AdapterDefaults`, which it writes into every configuration it loads) and every key its model adapter and
    model entity read (`predict_embed_subset_limit`, `predict_embed_timeout`, `id_to_label_map`...), which
    `ModelConfigurations.get` writes too. They are not ours to validate, and a load must not take them for typos."""
    from dtlpy.entities import model
    from dtlpy.ml import base_model_adapter

    keys = {field.name for field in dataclasses.fields(base_model_adapter.AdapterDefaults)}
    keys.update(base_model_adapter.ModelConfigurations(None))  # the defaults it fills in (include_background)
    for source_module in (base_model_adapter, model):
        try:
            keys.update(_DTLPY_READ.findall(inspect.getsource(source_module)))
        except (OSError, TypeError):  # a dtlpy installed without its sources: the adapter defaults still count
            logger.debug("dtlpy's source of %s is not available", source_module.__name__)
    return frozenset(keys)


# Keys that choose what runs, so a module that does not read them must refuse them rather than ignore them;
# each maps to the value that means "as if unset".
NOT_TO_IGNORE = {"runtime": "torch"}

# Hard caps on what one request may ask for, whatever the configuration says.
MAX_BATCH_SIZE = 1024
MAX_BATCH_TOKENS = 1 << 20
MAX_BATCH_WAIT_MS = 1000
MAX_NEW_TOKENS = 2048
MAX_GENERATIONS = 16
MAX_BEAMS = 16
MAX_EMBEDDINGS_SIZE = 65536


@dataclass(frozen=True)
class Setting:
    """One configuration key: its type, its allowed range, and why it exists."""

    name: str
    kinds: tuple[type, ...]
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None

    def validate(self, value: Any) -> Any:
        """Return `value` (ints widened to float where a float is asked) or raise ConfigurationError."""
        if value is None:
            if self.nullable:
                return None
            raise ConfigurationError(f"configuration {self.name!r} must be set ({self.doc})")
        if isinstance(value, bool) and bool not in self.kinds:
            raise ConfigurationError(f"configuration {self.name!r} must be {self._kind_names()}, not a boolean")
        if float in self.kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value) if abs(value) < 2**1023 else math.inf if value > 0 else -math.inf  # no overflow
        if not isinstance(value, self.kinds):
            raise ConfigurationError(f"configuration {self.name!r} must be {self._kind_names()}, got "
                                     f"{_JSON_TYPES.get(type(value).__name__, type(value).__name__)} {shown(value)}")
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every range check
            raise ConfigurationError(f"configuration {self.name!r} must be a finite number, got {short(value)}")
        if self.choices is not None and value not in self.choices:
            raise ConfigurationError(f"configuration {self.name!r} must be one of {shown(list(self.choices))}, "
                                     f"got {shown(value)}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigurationError(f"configuration {self.name!r} must be >= {self.minimum}, got {shown(value)}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigurationError(f"configuration {self.name!r} must be <= {self.maximum}, got {shown(value)}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigurationError(f"configuration {self.name!r}: {problem}")
        return value

    def _kind_names(self) -> str:
        return " or ".join({"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false",
                            "list": 'a list (in JSON: ["a", "b"])'}.get(k.__name__, k.__name__) for k in self.kinds)


# A value's type as JSON (and so a configuration, a request, --set) calls it.
_JSON_TYPES = {"str": "a string", "int": "a number", "float": "a number", "bool": "a boolean", "list": "a list",
               "dict": "an object", "NoneType": "null"}


def shown(value: Any, limit: int = 60) -> str:
    """A value in an error message as a user writes it back: lists and objects as JSON (["a", "b"], not
    Python's ['a', 'b']), anything else as `short` shows it; either cut to about `limit` characters."""
    if isinstance(value, (list, dict)):
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            return short(value)
        return text if len(text) <= limit else text[:limit - 5] + " ...]" if isinstance(value, list) \
            else text[:limit - 5] + " ...}"
    return short(value)


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _device_name(value: str) -> str | None:
    # [0-9], not \d, which takes any Unicode digit ("cuda:\u0663"); fullmatch, as `$` would take a final newline
    return None if re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]{1,4})?", value) else \
        "use 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'"


def unicode_problem(text: str) -> str | None:
    """Why `text` is no valid Unicode (a lone surrogate such as \\ud800: valid in JSON, but no tokenizer takes
    it), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates such as \\ud800)"
    return None


def control_character_problem(text: str) -> str | None:
    """Why `text` may not stand in a label or template (it holds a control character: NUL, ESC, a newline...)."""
    if any(unicodedata.category(character) == "Cc" for character in text):
        return "must not contain control characters (such as NUL, ESC, tab or newline)"
    return None


BASE_SETTINGS: tuple[Setting, ...] = (
    Setting("module_name", (str,), "the per-model module in models/ that runs this model"),
    Setting("model_path", (str,), "a Hugging Face hub id or a local folder of save_pretrained files", check=_non_empty),
    Setting("device", (str,), "'auto' picks CUDA when present", check=_device_name),
    Setting("batch_size", (int,), "questions per forward pass (and items per predict call in dtlpy)",
            minimum=1, maximum=MAX_BATCH_SIZE),
    Setting("max_batch_tokens", (int,), "padded tokens per forward pass, bounds memory", minimum=16,
            maximum=MAX_BATCH_TOKENS),
    Setting("max_batch_wait_ms", (int,), "how long a call's rows may wait for those of calls made at the same time "
            "before they run, in milliseconds (only while such calls are on their way; 0: never wait)", minimum=0,
            maximum=MAX_BATCH_WAIT_MS),
    Setting("reanswer", (bool,), "answer every prompt on every call (not only the last, new and edited ones), "
            "replacing this model's earlier answers"),
    Setting("embeddings_size", (int,), "length of the model's embedding vectors (its hidden size) and of its feature "
            "set; set from the weights when the model loads", minimum=1, maximum=MAX_EMBEDDINGS_SIZE),
)


def resolve_configuration(module_name: str, settings: Iterable[Setting], configuration: dict | None) -> dict[str, Any]:
    """Merge `configuration` over the manifest defaults of `module_name` and validate every key.

    Unknown keys are logged (they are usually typos) and dropped, except those that choose what runs
    (`NOT_TO_IGNORE`); `trust_remote_code` is refused outright.
    """
    configuration = dict(configuration or {})
    refuse_remote_code(configuration)
    settings = {s.name: s for s in (*BASE_SETTINGS, *settings)}
    merged = defaults_for_module(module_name)
    merged["module_name"] = module_name
    unknown = sorted(str(k) for k in configuration
                     if k not in settings and k not in dtlpy_keys() and k != "trust_remote_code")
    for key in NOT_TO_IGNORE:
        if key in unknown and configuration[key] not in (None, NOT_TO_IGNORE[key]):
            raise ConfigurationError(f"configuration {key!r} {short(configuration[key])} is not supported by "
                                     f"{module_name}; remove the key or set it to {NOT_TO_IGNORE[key]!r}")
    if unknown:
        listed = short(unknown) + (f" ({len(unknown)} keys)" if len(unknown) > 6 else "")
        logger.warning("ignoring configuration keys that %s does not read: %s (valid keys: %s)",
                       module_name, listed, sorted(settings))
    merged.update({k: v for k, v in configuration.items() if k in settings and k != "module_name"})
    resolved = {}
    for name, setting in settings.items():
        resolved[name] = setting.validate(merged.get(name))
    return resolved


def refuse_remote_code(configuration: dict) -> None:
    if configuration.get("trust_remote_code") not in (None, False):
        raise ConfigurationError("configuration 'trust_remote_code' is refused: this package never runs code "
                                 "shipped with model weights")


def unknown_keys_error(module_name: str, unknown: list[str], known: Iterable[str]) -> ConfigurationError:
    """The error for configuration keys `module_name` does not read: each with the key it is probably a typo of."""
    known = sorted(known)
    listed = ", ".join(short(key) + did_you_mean(key, known) for key in unknown[:6])
    listed += f", ... ({len(unknown)} keys)" if len(unknown) > 6 else ""
    return ConfigurationError(f"{module_name} does not read the configuration key{'s' if len(unknown) > 1 else ''} "
                              f"{listed}; valid keys: {', '.join(known)}")


def setting_names(settings: Iterable[Setting]) -> set[str]:
    """Every key a module reads: the base keys plus its own."""
    return {s.name for s in (*BASE_SETTINGS, *settings)}
