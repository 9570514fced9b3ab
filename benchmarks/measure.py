"""Timing, peak memory, the machine's dense matmul FLOP/s, and the model FLOPs of the work actually done."""
from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from adapters.runtimes.cpu_kernels import onednn_available


def best_seconds(run: Any, repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rates(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Dense float32 FLOP/s of `size` x `size` products through torch's default kernel (MKL sgemm) and oneDNN."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator) for _ in range(2))
    flops = 2 * size ** 3
    rates = {"torch.matmul": flops / best_seconds(lambda: torch.matmul(a, b), repeats)}
    if onednn_available():
        weight = b.t().contiguous()
        with torch.inference_mode():
            rates["oneDNN linear"] = flops / best_seconds(
                lambda: torch.ops.mkldnn._linear_pointwise(a, weight, None, "none", [], ""), repeats)
    return rates


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's measured dense float32 matmul FLOP/s: the best kernel torch can reach here."""
    return max(matmul_rates(size, repeats).values())


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            match = re.search(rf"{key}:\s+(\d+)", status.read())
    except OSError:
        return None
    return int(match.group(1)) if match else None


@dataclass
class Measurement:
    """Wall time and the process's peak resident memory during one timed block, and how much it grew in it."""

    seconds: float = 0.0
    peak_rss_mb: float | None = None
    added_rss_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def measured() -> Iterator[Measurement]:
    """Time a block and read its peak RSS; Linux's peak counter is reset first (/proc/self/clear_refs)."""
    result = Measurement()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        resettable = True
    except OSError:
        resettable = False
    resident = _status_kib("VmRSS")
    start = time.perf_counter()
    yield result
    result.seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    if resettable and peak is not None:
        result.peak_rss_mb = round(peak / 1024, 1)
        result.added_rss_mb = round((peak - (resident or peak)) / 1024, 1)


# ----- model FLOPs: 2 * parameters * tokens for the matmuls, plus attention's two L x L products -----

def _body_parameters(module: Any) -> int:
    """Parameters used as matmul weights: everything but embedding tables (a lookup costs no FLOPs)."""
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() for p in module.parameters() if id(p) not in embeddings)


def _dims(config: Any) -> tuple[int, int]:
    """(attention width = heads * head size, vocabulary size) of a transformers config."""
    heads = getattr(config, "num_heads", None) or getattr(config, "n_head", None) or config.num_attention_heads
    head_size = getattr(config, "d_kv", None) or (config.hidden_size // heads)
    return heads * head_size, config.vocab_size


def classifier_flops(model: Any, lengths: list[int]) -> float:
    """FLOPs of one forward over rows of the given (unpadded) lengths: encoder, or BART's encoder and decoder."""
    config = model.config
    width, _ = _dims(config)
    if config.is_encoder_decoder:  # the decoder reads the same tokens: self + cross attention per decoder layer
        attention_layers = config.encoder_layers + 2 * config.decoder_layers
    else:
        attention_layers = config.num_hidden_layers
    body = _body_parameters(model)
    return float(sum(2 * body * n + 4 * n * n * width * attention_layers for n in lengths))


def generation_flops(model: Any, prompt_lengths: list[int], new_tokens: list[int]) -> float:
    """FLOPs of reading each prompt once and decoding its new tokens with a KV cache (logits of new tokens only)."""
    config = model.config
    width, vocab = _dims(config)
    hidden = getattr(config, "d_model", None) or config.hidden_size
    head = 2 * vocab * hidden
    total = 0.0
    if config.is_encoder_decoder:
        encoder, decoder = _body_parameters(model.get_encoder()), _body_parameters(model.get_decoder())
        layers = config.num_decoder_layers
        for source, generated in zip(prompt_lengths, new_tokens):
            total += 2 * encoder * source + 4 * source * source * width * config.num_layers
            for step in range(1, generated + 1):
                total += 2 * decoder + head + 4 * (step + source) * width * layers
        return total
    body = _body_parameters(model)
    layers = config.num_hidden_layers
    for prompt, generated in zip(prompt_lengths, new_tokens):
        total += 2 * body * prompt + 4 * prompt * prompt * width * layers + head
        for step in range(1, generated):
            total += 2 * body + head + 4 * (prompt + step) * width * layers
    return total
