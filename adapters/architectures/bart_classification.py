"""BART sequence classification that runs the last decoder layer only where the classification head reads.

`BartForSequenceClassification` classifies a pair from the decoder's final hidden state at the last
end-of-sequence token. The decoder is causal, so every layer but the last must still run over the whole pair
(its states are the next layer's keys and values), but the last layer's queries, output projections and
feed-forward network are needed at that one position only: about a tenth of the model's work on zero-shot
pairs (docs/performance.md). The same modules and weights run in the same order, so the logits equal the stock
forward's within float rounding (tests/test_classifiers.py); training and other architectures use the stock one.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import BartForSequenceClassification
from transformers.models.bart.modeling_bart import shift_tokens_right


def eos_classifier(model: Any) -> EosClassifier | None:
    """The pruned forward for a torch BART classifier, or None for any other model (use its own forward)."""
    return EosClassifier(model) if type(model) is BartForSequenceClassification else None


class EosClassifier:
    """`model(input_ids, attention_mask).logits`, with the last decoder layer run at the classified token only."""

    def __init__(self, model: BartForSequenceClassification):
        self.model = model
        decoder = model.model.decoder
        # A shallow copy of the decoder that stops before its last layer; it shares every module and weight.
        self.trunk = copy.copy(decoder)
        self.trunk._modules = dict(decoder._modules)
        self.trunk.layers = decoder.layers[:-1]
        self.last = decoder.layers[-1]

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        encoded = self.model.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        decoder_ids = shift_tokens_right(input_ids, config.pad_token_id, config.decoder_start_token_id)
        hidden = self.trunk(input_ids=decoder_ids, encoder_hidden_states=encoded, encoder_attention_mask=attention_mask,
                            use_cache=False).last_hidden_state
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)
        where = (input_ids.eq(config.eos_token_id) * (positions + 1)).argmax(1)  # each row's last <eos>
        query = hidden[torch.arange(len(where), device=where.device), where].unsqueeze(1)
        causal = (positions[None, :] <= where[:, None])[:, None, None, :]  # the keys that position may read
        padding = attention_mask.bool()[:, None, None, :]
        last = self.last  # BartDecoderLayer.forward (post-norm) at one query position
        attended, _ = last.self_attn(query, key_value_states=hidden, attention_mask=causal)
        state = last.self_attn_layer_norm(query + attended)
        attended, _ = last.encoder_attn(state, key_value_states=encoded, attention_mask=padding)
        state = last.encoder_attn_layer_norm(state + attended)
        state = last.final_layer_norm(state + last.fc2(last.activation_fn(last.fc1(state))))
        return self.model.classification_head(state[:, 0])
