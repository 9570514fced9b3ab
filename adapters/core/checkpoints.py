"""What a checkpoint is, read from its config.json alone, and which module of models/ serves it.

A module serves the architectures its `model_class` (a `transformers` auto class) loads, narrowed where two
modules share one: a sequence classifier with an 'entailment' label is an NLI model, which the zero-shot module
runs; any other is the classifier's. `register_model.py` picks the module this way when none is named.
"""
from __future__ import annotations

from typing import Any

from .errors import ConfigurationError
from .loading import resolve_source
from .module_loader import available_modules, load_model_module


def read_config(source: str) -> Any:
    """The `transformers` config of a local folder or a hub id (its config.json only; no remote code), found as the
    weights are (adapters/core/loading.py: one short look-up of a hub id, then the local cache)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolve_source(source), trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"could not read the config of {source!r}: {str(error).splitlines()[0]}") from None


def architecture_of(config: Any) -> str:
    """The model class a checkpoint was saved from (`architectures[0]` of its config), or '' when it names none."""
    architectures = getattr(config, "architectures", None) or [""]
    return str(architectures[0])


def auto_class_architectures(auto_class: Any) -> set[str]:
    """The model classes a `transformers` auto class (AutoModelForCausalLM, ...) loads, by name."""
    from transformers.models.auto import modeling_auto

    names = {"AutoModelForCausalLM": modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
             "AutoModelForSeq2SeqLM": modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
             "AutoModelForSequenceClassification": modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES}
    mapping = names.get(getattr(auto_class, "__name__", ""), {})
    return {name for value in mapping.values() for name in ([value] if isinstance(value, str) else value)}


def entailment_id(config: Any) -> int | None:
    """The index of an NLI model's 'entailment' label (any case, any suffix), or None for another classifier."""
    label2id = {str(name).lower(): int(index) for name, index in (getattr(config, "label2id", None) or {}).items()}
    return next((index for name, index in label2id.items() if name.startswith("entail")), None)


def modules_serving(config: Any) -> list[str]:
    """The modules of models/ that run a checkpoint with this config."""
    return [name for name in available_modules() if load_model_module(name).HuggingAdapter.serves(config)]


def choose_module(config: Any, source: str, asked: str | None = None) -> str:
    """`asked` when it serves the checkpoint, else the one module that does; a refusal lists what each serves."""
    serving = modules_serving(config)
    if asked is not None and asked in serving:
        return asked
    if asked is None and len(serving) == 1:
        return serving[0]
    what = f"{source!r} is a {architecture_of(config) or getattr(config, 'model_type', '?')} checkpoint"
    families = "; ".join(f"{name} serves {load_model_module(name).HuggingAdapter.family}"
                         for name in available_modules())
    if asked is not None:
        raise ConfigurationError(f"{what}, which {asked} does not serve ({families})")
    if serving:
        raise ConfigurationError(f"{what}, which {', '.join(serving)} all serve; name one with --module")
    raise ConfigurationError(f"{what}, which no module of this package serves: {families}")
