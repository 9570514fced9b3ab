"""What a runtime is: something that loads a module's model from its weights and runs it.

A runtime serves one or more tasks: `CLASSIFY` (the loaded model answers `model(**inputs).logits` like a
`transformers` classifier) and `GENERATE` (the runtime's `generate` writes answers with their confidence).
Files a runtime derives from the weights (an ONNX export, a CTranslate2 conversion) are written once to a cache
folder beside the Hugging Face cache and reused; see `derived_folder`.
"""
from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Iterator

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


def derived_folder(model_path: str, variable: str, cache_name: str, variant: str = "") -> Path:
    """Where files derived from `model_path` live: under `$<variable>`, else `$HF_HOME/<cache_name>`, in a folder
    keyed by the source (a local folder's file names, sizes and times included) and `variant`."""
    source = Path(model_path).expanduser()
    if source.is_dir():
        stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(source.iterdir()) if p.is_file()]
        key = json.dumps([str(source.resolve()), stamp])
    else:
        key = model_path
    root = os.environ.get(variable) or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), cache_name)
    name = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return Path(root) / (f"{name}-{variant}" if variant else name)


@contextlib.contextmanager
def written_folder(output_dir: Path, info_file: str, info: dict[str, Any]) -> Iterator[Path]:
    """Build a derived folder in a staging folder beside `output_dir`, then move it into place whole.

    Only an earlier folder of the same kind (it holds `info_file`) is replaced; readers never see a half-written
    one, and a failed build leaves nothing behind.
    """
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / info_file).is_file():
        raise FileExistsError(f"{output_dir} exists and is not an earlier {info_file.split('.')[0]} folder; "
                              "choose a new or empty folder")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=output_dir.parent))
    try:
        yield staging
        (staging / info_file).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
