"""DistilBERT sequence classification that runs the last layer only where the classification head reads.

`DistilBertForSequenceClassification` classifies from the final hidden state of the first token ([CLS]). Every
layer but the last must still run at every position (its states are the next layer's keys and values), but the
last layer's queries, attention output, feed-forward network and layer norms are needed at that one position
only: of its 12 x dim^2 multiply-adds per token (4 in attention, 8 in the feed-forward network), the keys' and
values' 2 remain, about 14% less work for a six-layer model (docs/performance.md). The same modules and weights
run in the same order, so the logits equal the stock forward's within float rounding (tests/test_classifiers.py);
training, embeddings and other architectures use the stock one.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import DistilBertForSequenceClassification


def cls_classifier(model: Any) -> ClsClassifier | None:
    """The pruned forward for a torch DistilBERT classifier, or None for any other model (use its own forward),
    and for one whose own call or last layer someone instruments (a hook, a replaced `forward`): the pruned
    forward calls neither, and what they watch must run."""
    if type(model) is not DistilBertForSequenceClassification:
        return None
    if _instrumented(model) or _instrumented(model.distilbert.transformer.layer[-1]):
        return None
    return ClsClassifier(model)


def _instrumented(module: nn.Module) -> bool:
    return "forward" in vars(module) or bool(module._forward_pre_hooks or module._forward_hooks)


class ClsClassifier:
    """`model(input_ids, attention_mask).logits`, with the last transformer layer run at the first token only."""

    def __init__(self, model: DistilBertForSequenceClassification):
        self.model = model
        encoder = model.distilbert
        # Shallow copies of the encoder and its layer stack that stop before the last layer; they share every
        # module and weight with the model.
        layers = copy.copy(encoder.transformer)
        layers._modules = dict(encoder.transformer._modules)
        layers.layer = nn.ModuleList(encoder.transformer.layer[:-1])
        self.trunk = copy.copy(encoder)
        self.trunk._modules = dict(encoder._modules)
        self.trunk.transformer = layers
        self.last = encoder.transformer.layer[-1]

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = self.last  # TransformerBlock.forward (post-norm) at the first position
        attention = last.attention
        rows, length, _ = hidden.shape
        heads, size = attention.n_heads, attention.attention_head_size
        query = hidden[:, :1]
        queries = attention.q_lin(query).view(rows, 1, heads, size).transpose(1, 2)
        keys = attention.k_lin(hidden).view(rows, length, heads, size).transpose(1, 2)
        values = attention.v_lin(hidden).view(rows, length, heads, size).transpose(1, 2)
        readable = attention_mask.bool()[:, None, None, :]  # the keys a position may read: the row's real tokens
        attended = torch.nn.functional.scaled_dot_product_attention(queries, keys, values, attn_mask=readable,
                                                                    scale=attention.scaling)
        attended = attention.out_lin(attended.transpose(1, 2).reshape(rows, 1, heads * size))
        state = last.sa_layer_norm(attended + query)
        state = last.output_layer_norm(last.ffn(state) + state)
        head = self.model
        pooled = head.dropout(nn.functional.relu(head.pre_classifier(state[:, 0])))
        return head.classifier(pooled)
