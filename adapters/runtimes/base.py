"""What a runtime is: something that loads a module's model from its weights and runs it.

A runtime serves one or more tasks: `CLASSIFY` (the loaded model answers `model(**inputs).logits` like a
`transformers` classifier) and `GENERATE` (the runtime's `generate` writes answers with their confidence).
Files a runtime derives from the weights (an ONNX export, a CTranslate2 conversion) are written once to a cache
folder beside the Hugging Face cache and reused; see `derived.py`.
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch

from ..core.settings import Setting

CLASSIFY = "classify"
GENERATE = "generate"


class Runtime(abc.ABC):
    """One way to run models; one subclass per file of this package, registered in `adapters.runtimes`.

    A runtime whose `tasks` include GENERATE also defines `generate(model, encoded, config, seed, on_token=None)`:
    answers (`adapters.core.generation.Generated`) for a padded batch, `config.num_return_sequences` per row, under
    the `transformers.GenerationConfig` `config`; without beams, `on_token(row, token)` is called with each token
    as it is written, up to the row's end token (streamed answers). Others have none: a module refuses a runtime that cannot serve its
    task when its configuration is read, so nothing ever asks them to generate. The rule is checked when the
    subclass is defined.
    """

    name: ClassVar[str]
    doc: ClassVar[str]  # one line for the `runtime` setting's description
    tasks: ClassVar[frozenset[str]]
    settings: ClassVar[tuple[Setting, ...]] = ()  # the configuration keys only this runtime reads

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if GENERATE in getattr(cls, "tasks", ()) and not callable(getattr(cls, "generate", None)):
            raise TypeError(f"{cls.__name__} serves {GENERATE!r} but defines no generate()")

    @abc.abstractmethod
    def load(self, model_class: Any, configuration: dict, device: torch.device) -> tuple[Any, Any]:
        """`(model, tokenizer)` for `configuration['model_path']`, ready for inference on `device`."""


class InferenceOnlyModel:
    """What a derived model answers besides running: `to`/`eval` are no-ops (it was placed when loaded), and any
    other attribute a torch model has (training, changing weights) is refused with what to do instead."""

    runtime_name: ClassVar[str]
    purpose: ClassVar[str]  # e.g. "only generates"

    def to(self, device: Any) -> "InferenceOnlyModel":
        return self

    def eval(self) -> "InferenceOnlyModel":
        return self

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{name!r}: a runtime {self.runtime_name!r} model {self.purpose}; use runtime 'torch' "
                             "to fine-tune or change the model")
