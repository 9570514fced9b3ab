"""CTranslate2 for the generative modules: T5 / BART as a `Translator`, GPT-2 (DialoGPT) as a `Generator`.

The weights are converted once with CTranslate2's `TransformersConverter`, from the model this package's own
loader read (safetensors only, no remote code, weights that cover the model), into a cache folder
(`$HF_ADAPTERS_CTRANSLATE2_CACHE`, else `$HF_HOME/ctranslate2-conversions`) keyed by the source's content, the
model class (adapters/runtimes/derived.py) and the stored weight type (`float32`, or `int8` for the int8 compute
types), and reused. A `model_path` that is itself such a folder is used as it is. Either way a conversion of
weights the module's model class cannot run is refused, as torch weights are. The folder holds the converted model
(`ctranslate2/`), the `transformers` config, generation config and tokenizer (`transformers/`), and
`ctranslate2_conversion.json`.

Decoding follows the same `GenerationConfig` the torch runtime runs (budget, greedy / sampling with
temperature, top-k and top-p, beams, answers per question, seed), and the confidence has the same meaning:
CTranslate2's score of a hypothesis is the mean of the raw log-probabilities of its tokens, the end-of-sequence
token included (beam search: the length-normalised beam score), so the confidence is its exponential.
"""
from __future__ import annotations

import json
import logging
import math
import secrets
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoConfig, GenerationConfig

from ..core.errors import ConfigurationError
from ..core.generation import Generated
from ..core.loading import load_tokenizer, load_weights, resolve_source
from ..core.settings import Setting
from .base import GENERATE, InferenceOnlyModel, Runtime
from .derived import DerivedKind, written_folder

logger = logging.getLogger(__name__)

CONVERSION_INFO = "ctranslate2_conversion.json"
ENGINE_FOLDER = "ctranslate2"
TRANSFORMERS_FOLDER = "transformers"
COMPUTE_TYPES = ("default", "int8", "int8_float32", "float32")
COMPUTE_TYPE_SETTING = Setting(
    "compute_type", (str,), "runtime 'ctranslate2' only: weight and arithmetic type; 'default' is int8 on CPU "
    "(float32 weights on CUDA), 'float32' answers as the torch runtime does", choices=COMPUTE_TYPES)


def engine_compute_type(compute_type: str, device: torch.device) -> str:
    """The CTranslate2 compute type to run: 'default' means int8 on CPU and the stored weights' type on CUDA."""
    if compute_type == "default":
        return "int8" if device.type == "cpu" else "default"
    return compute_type


def stored_weights(compute_type: str) -> str:
    """The weight type a conversion stores for `compute_type`: int8 compute types read int8 weights."""
    return "int8" if compute_type.startswith("int8") else "float32"


class CTranslate2Model(InferenceOnlyModel):
    """A converted model, with the `transformers` `config` and `generation_config` the adapters read."""

    runtime_name = "ctranslate2"
    purpose = "only generates"

    def __init__(self, folder: Path, device: torch.device, compute_type: str):
        import ctranslate2

        hf_files = folder / TRANSFORMERS_FOLDER
        self.folder = folder
        self.config = AutoConfig.from_pretrained(hf_files, trust_remote_code=False)
        try:
            self.generation_config = GenerationConfig.from_pretrained(hf_files)
        except OSError:  # a model saved without one: its config's generation fields, as transformers does
            self.generation_config = GenerationConfig.from_model_config(self.config)
        engine = ctranslate2.Translator if self.config.is_encoder_decoder else ctranslate2.Generator
        self.engine = engine(str(folder / ENGINE_FOLDER), device=device.type, device_index=device.index or 0,
                             compute_type=compute_type, intra_threads=torch.get_num_threads())
        # Token ids pass to CTranslate2 as the vocabulary's strings; T5 and BART share one vocabulary, GPT-2 has one.
        vocabulary = [folder / ENGINE_FOLDER / name for name in ("shared_vocabulary.json", "vocabulary.json")]
        vocabulary = [path for path in vocabulary if path.is_file()]
        if not vocabulary:
            raise ConfigurationError(f"{folder} has no shared vocabulary; separate source and target "
                                     "vocabularies are not supported")
        self.tokens: list[str] = json.loads(vocabulary[0].read_text(encoding="utf-8"))
        self.token_ids = {token: index for index, token in reversed(list(enumerate(self.tokens)))}



class CTranslate2Runtime(Runtime):
    name = "ctranslate2"
    doc = "'ctranslate2': CTranslate2, converted once and cached (generators; see docs/performance.md)"
    tasks = frozenset({GENERATE})
    settings = (COMPUTE_TYPE_SETTING,)

    def load(self, model_class: Any, configuration: dict, device: torch.device) -> tuple[CTranslate2Model, Any]:
        if device.type not in ("cpu", "cuda"):
            raise ConfigurationError(f"runtime 'ctranslate2' runs on 'cpu' or 'cuda', not {device.type!r}")
        compute_type = engine_compute_type(configuration["compute_type"], device)
        folder = converted_folder(model_class, configuration["model_path"], stored_weights(compute_type))
        model = CTranslate2Model(folder, device, compute_type)
        logger.info("loaded CTranslate2 model %s on %s (%s)", folder, device, compute_type)
        return model, load_tokenizer(str(folder / TRANSFORMERS_FOLDER))

    def generate(self, model: CTranslate2Model, encoded: dict[str, torch.Tensor], config: GenerationConfig,
                 seed: int | None, on_token: Callable[[int, int], None] | None = None) -> list[Generated]:
        import ctranslate2

        prompts = [[model.tokens[token] for token, keep in zip(row, mask) if keep]
                   for row, mask in zip(encoded["input_ids"].tolist(), encoded["attention_mask"].tolist())]
        eos = config.eos_token_id
        options = dict(beam_size=config.num_beams, num_hypotheses=config.num_return_sequences, return_scores=True,
                       end_token=sorted(set(eos if isinstance(eos, list) else [eos]) - {None}) or None,
                       repetition_penalty=config.repetition_penalty or 1.0,
                       no_repeat_ngram_size=config.no_repeat_ngram_size or 0,
                       length_penalty=1.0 if config.length_penalty is None else config.length_penalty)
        if config.do_sample:
            options.update(sampling_topk=min(config.top_k or 0, len(model.tokens)), sampling_topp=config.top_p or 1.0,
                           sampling_temperature=config.temperature or 1.0)
            ctranslate2.set_random_seed(seed if seed is not None else secrets.randbits(32))
        if model.config.is_encoder_decoder:
            results = model.engine.translate_batch(prompts, max_decoding_length=config.max_new_tokens,
                                                   min_decoding_length=0, max_input_length=0, **options)
            hypotheses = [[[model.token_ids[token] for token in tokens] for tokens in result.hypotheses]
                          for result in results]
        else:
            if on_token is not None and config.num_beams == 1:
                options["callback"] = _step_callback(on_token, set(options["end_token"] or ()))
            results = model.engine.generate_batch(prompts, max_length=config.max_new_tokens,
                                                  include_prompt_in_result=False, **options)
            hypotheses = [result.sequences_ids for result in results]
        return [Generated(token_ids=list(ids), confidence=min(max(math.exp(score), 0.0), 1.0))
                for result, row in zip(results, hypotheses) for ids, score in zip(row, result.scores)]


def _step_callback(on_token: Callable[[int, int], None], end_ids: set[int]) -> Callable[[Any], bool]:
    """A `generate_batch` callback passing each written token but the end token to `on_token(row, token)`."""
    def step(result: Any) -> bool:
        if result.token_id not in end_ids:
            on_token(result.batch_id, result.token_id)
        return False  # never stops decoding early
    return step


class _FullVocabulary:
    """A tokenizer whose `get_vocab` names every row of the model's embedding table.

    A model may have more embedding rows than its tokenizer has tokens (a vocabulary padded to a multiple of 64,
    or resized for training); CTranslate2 needs one vocabulary entry per row, so the extra rows get names that
    no text can produce. Everything else is the tokenizer's own.
    """

    def __init__(self, tokenizer: Any, rows: int):
        self._tokenizer = tokenizer
        self._rows = rows

    def get_vocab(self) -> dict[str, int]:
        vocabulary = dict(self._tokenizer.get_vocab())
        size = max(vocabulary.values(), default=-1) + 1
        vocabulary.update({f"<unused_embedding_row_{i}>": i for i in range(size, self._rows)})
        return vocabulary

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


CONVERSIONS = DerivedKind("HF_ADAPTERS_CTRANSLATE2_CACHE", "ctranslate2-conversions", CONVERSION_INFO,
                          f"{ENGINE_FOLDER}/model.bin", TRANSFORMERS_FOLDER)


def converted_folder(model_class: Any, model_path: str, weights: str) -> Path:
    """The conversion to run: `model_path` itself when it is one, else its (cached) conversion."""
    return CONVERSIONS.folder(model_class, model_path,
                              lambda output: _convert_once(model_class, model_path, output, weights), weights)


def _convert_once(model_class: Any, model_path: str, folder: Path, weights: str) -> None:
    logger.warning("converting %s to CTranslate2 (%s weights) in %s (once; later loads reuse it)",
                   model_path, weights, folder)
    convert(model_class, model_path, folder, weights, cache=True)


def convert(model_class: Any, model_path: str, output_dir: Path, weights: str = "float32",
            cache: bool = False) -> Path:
    """Write the CTranslate2 conversion of `model_path` with `weights` ('float32' or 'int8') to `output_dir` (a
    folder of the conversion cache when `cache`: see `written_folder`)."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    class LoadedModelConverter(TransformersConverter):
        """TransformersConverter on the model and tokenizer this package loaded, instead of loading its own."""

        def load_model(self, *args: Any, **kwargs: Any) -> Any:
            return model

        def load_tokenizer(self, *args: Any, **kwargs: Any) -> Any:
            return _FullVocabulary(tokenizer, model.get_input_embeddings().num_embeddings)

    info: dict[str, Any] = {"source": str(model_path), "weights": weights, "ctranslate2": ctranslate2.__version__}
    with written_folder(output_dir, CONVERSION_INFO, info, cache=cache) as staging:
        source = resolve_source(model_path)
        tokenizer = load_tokenizer(source)
        model = load_weights(model_class, source)
        hf_files = staging / TRANSFORMERS_FOLDER
        model.config.save_pretrained(hf_files)
        if model.can_generate():
            model.generation_config.save_pretrained(hf_files)
        tokenizer.save_pretrained(hf_files)
        with torch.no_grad():
            LoadedModelConverter(str(hf_files)).convert(str(staging / ENGINE_FOLDER), force=True,
                                                        quantization=None if weights == "float32" else weights)
        info["architecture"] = type(model).__name__
    return output_dir
