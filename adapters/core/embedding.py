"""Text embeddings from a module's own model: one fixed-size vector per text, the mean of the hidden states.

Which hidden states: an encoder-decoder's encoder (BART, T5: what reads the text), else the base model under the
task head (DistilBERT's transformer, GPT-2's / DialoGPT's decoder stack). The mean runs over the real tokens only
(the attention mask), so padding in a shared micro-batch changes nothing; vectors are float32 whatever `dtype` the
model runs in, as the platform's feature vectors are. The size is the model's hidden size.
"""
from __future__ import annotations

from typing import Any

import torch


def embedding_encoder(model: Any) -> Any:
    """The module of `model` whose `last_hidden_state` is pooled: the encoder of an encoder-decoder, else the base
    model under the task head."""
    if getattr(model.config, "is_encoder_decoder", False):
        return model.get_encoder()
    return model.base_model


def embedding_size(config: Any) -> int:
    """The length of the vectors: the hidden size (`dim`, `d_model`, `n_embd` are its aliases in `transformers`)."""
    return int(config.hidden_size)


def mean_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean over each row's real tokens of `hidden` (rows x tokens x size), in float32."""
    mask = attention_mask.unsqueeze(-1).to(torch.float32)
    return (hidden.to(torch.float32) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
