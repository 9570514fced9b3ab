"""Text generation shared by the generative modules: sampling settings, limits, and answer confidence.

Confidence of a generated answer is the geometric mean of the probabilities the model itself gave to each
token it produced (the end-of-sequence token included), read from the raw logits of the generation's own
forward passes, before temperature, top-k or top-p reshape them: exp(mean(log p(token | prefix))).
With beam search it is exp of the beam's length-normalised log-probability. No extra forward pass is run.
`generate_with_confidence` is how the torch runtime generates; every runtime (adapters/runtimes/) decodes from the
same `GenerationConfig` and returns the same `Generated` answers, with a confidence of the same meaning.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from .settings import MAX_BEAMS, MAX_NEW_TOKENS, Setting

# Below this temperature sampling is greedy in effect, and far below it (1e-300) dividing the logits by it gives
# inf and NaN: such temperatures decode greedily, as vLLM treats its smallest ones.
MIN_TEMPERATURE = 0.01

SAMPLING_SETTINGS: tuple[Setting, ...] = (
    Setting("do_sample", (bool,), "sample (true) or decode greedily (false)"),
    Setting("temperature", (float,), f"softmax temperature when sampling; below {MIN_TEMPERATURE:g} (0 included) "
            "decodes greedily", minimum=0.0, maximum=100.0),
    Setting("top_k", (int,), "sample among the k most likely tokens; 0 disables", minimum=0, maximum=100_000),
    Setting("top_p", (float,), "nucleus sampling mass", minimum=1e-6, maximum=1.0),
    Setting("seed", (int,), "seed for reproducible sampling (and training); null draws a fresh one", minimum=0,
            maximum=2**32 - 1, nullable=True),
)


def token_budget_setting(name: str, doc: str) -> Setting:
    return Setting(name, (int,), doc, minimum=1, maximum=MAX_NEW_TOKENS)


def beams_setting() -> Setting:
    return Setting("num_beams", (int,), "beam search width; 1 means no beam search", minimum=1, maximum=MAX_BEAMS)


@dataclass
class Generated:
    """One generated answer: its token ids (end-of-sequence excluded) and its confidence in [0, 1]."""

    token_ids: list[int]
    confidence: float


def samples(configuration: dict) -> bool:
    """Whether a configuration samples: `do_sample` with a temperature of at least MIN_TEMPERATURE."""
    return bool(configuration["do_sample"]) and configuration["temperature"] >= MIN_TEMPERATURE


def build_generation_config(model: Any, tokenizer: Any, configuration: dict, max_new_tokens: int,
                            num_return_sequences: int = 1) -> GenerationConfig:
    """A GenerationConfig from the module's configuration, starting from the model's own generation defaults."""
    sampling = samples(configuration)
    config = GenerationConfig.from_dict(model.generation_config.to_dict())
    config.update(max_new_tokens=max_new_tokens, max_length=None, min_length=0, min_new_tokens=None,
                  do_sample=sampling, num_beams=configuration.get("num_beams", 1),
                  num_return_sequences=num_return_sequences, pad_token_id=tokenizer.pad_token_id,
                  return_dict_in_generate=True, output_scores=configuration.get("num_beams", 1) > 1)
    if sampling:
        config.update(temperature=configuration["temperature"], top_k=configuration["top_k"] or None,
                      top_p=configuration["top_p"])
    else:
        config.update(temperature=None, top_k=None, top_p=None)
    if config.eos_token_id is None:  # else the model's own end ids: a chat checkpoint's end-of-turn tokens
        config.eos_token_id = tokenizer.eos_token_id
    return config


def end_token_ids(config: GenerationConfig) -> list[int]:
    """The ids that end an answer under `config` (its `eos_token_id`: none, one, or a list)."""
    eos = config.eos_token_id
    return [token for token in (eos if isinstance(eos, list) else [eos]) if token is not None]


class TokenStreamer(BaseStreamer):
    """Hands each token `generate` writes to `on_token(row, token)`, row by row, up to the row's end token.

    `generate` puts the prompt first (a 2-D tensor), then one token per row at each step; rows that have ended
    are padded, and their padding is not passed on.
    """

    def __init__(self, on_token: Callable[[int, int], None], end_ids: set[int]):
        self.on_token = on_token
        self.end_ids = end_ids
        self.ended: set[int] = set()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if row in self.ended:
                continue
            if token in self.end_ids:
                self.ended.add(row)
            else:
                self.on_token(row, token)

    def end(self) -> None:
        """Nothing is held back: every token was passed on when it was written."""


class TokenLogProbRecorder(LogitsProcessor):
    """Records the raw log-probability of every token `generate` picks, keeping one step of logits in memory.

    A forward hook on the output embeddings keeps the newest step's raw log-softmax; when `generate` calls this
    processor at the next step, the token chosen at the previous step is the last column of `input_ids`.
    """

    def __init__(self, model: Any):
        self._latest: torch.Tensor | None = None
        self._previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []
        self._handle = model.get_output_embeddings().register_forward_hook(self._on_logits)

    def _on_logits(self, module: Any, inputs: Any, output: torch.Tensor) -> None:
        self._latest = torch.log_softmax(output[:, -1, :].float(), dim=-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._previous is not None:
            self.steps.append(self._previous.gather(1, input_ids[:, -1:]))
        self._previous = self._latest
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """Per-token log-probabilities, shape (rows, generated steps)."""
        self._handle.remove()
        if self._previous is not None:
            self.steps.append(self._previous.gather(1, sequences[:, -1:]))
        return torch.cat(self.steps, dim=1) if self.steps else sequences.new_zeros((sequences.shape[0], 0), dtype=torch.float)


def _answer_mask(tokens: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    """True for every token up to and including the first end-of-sequence token of each row."""
    is_eos = torch.zeros_like(tokens, dtype=torch.bool)
    for eos in eos_ids:
        is_eos |= tokens == eos
    ended_before = (torch.cumsum(is_eos.int(), dim=1) - is_eos.int()) > 0
    return ~ended_before


def generate_with_confidence(model: Any, encoded: dict[str, torch.Tensor], config: GenerationConfig,
                             seed: int | None = None,
                             on_token: Callable[[int, int], None] | None = None) -> list[Generated]:
    """Run `generate` on a padded batch; return rows * num_return_sequences answers in order.

    `on_token(row, token)`, when given, is called with each token as it is written (greedy or sampling only).
    """
    eos_ids = set(end_token_ids(config))
    streamer = TokenStreamer(on_token, eos_ids) if on_token is not None else None
    with torch.random.fork_rng(devices=[]):  # the caller's RNG is restored, so without a seed draw a fresh one
        torch.manual_seed(seed if seed is not None else secrets.randbits(32))
        if config.num_beams > 1:
            output = model.generate(**encoded, generation_config=config)
            token_logprobs = None
        else:
            recorder = TokenLogProbRecorder(model)
            try:
                output = model.generate(**encoded, generation_config=config, streamer=streamer,
                                        logits_processor=LogitsProcessorList([recorder]))
            finally:
                recorder._handle.remove()
            token_logprobs = recorder.finish(output.sequences)
    prompt_length = 1 if model.config.is_encoder_decoder else encoded["input_ids"].shape[1]
    new_tokens = output.sequences[:, prompt_length:]
    mask = _answer_mask(new_tokens, eos_ids)
    if token_logprobs is None:
        confidences = torch.exp(output.sequences_scores.float())
    else:
        steps = min(token_logprobs.shape[1], new_tokens.shape[1])
        mask = mask[:, :steps]
        logprobs = (token_logprobs[:, :steps] * mask).sum(1) / mask.sum(1).clamp(min=1)
        confidences = torch.exp(logprobs)
    answers = []
    for row, confidence in zip(new_tokens.tolist(), confidences.tolist()):
        ids = []
        for token in row:
            if token in eos_ids:
                break
            ids.append(token)
        answers.append(Generated(token_ids=ids, confidence=float(min(max(confidence, 0.0), 1.0))))
    return answers
