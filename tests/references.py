"""Independent references for answers: transformers' own pipelines and `generate`, one unpadded text at a time.

Tests compare the adapter's answers with these rather than with another run of the adapter, so a bug shared by
both runs (order, padding, masks) cannot hide.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import pipeline


def recomputed_confidence(model: Any, row: dict, answer: list[int]) -> float:
    """exp(mean log p(token | prefix)) of `answer` after `row`, from one separate teacher-forced forward pass."""
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            logits = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([answer])).logits[0]
            logprobs = torch.log_softmax(logits, -1).gather(1, torch.tensor(answer)[:, None])
        else:
            ids = row["input_ids"] + answer
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            logprobs = torch.log_softmax(logits[len(row["input_ids"]) - 1:-1], -1).gather(
                1, torch.tensor(answer)[:, None])
    return float(torch.exp(logprobs.mean()))


def greedy_answer(model: Any, tokenizer: Any, input_ids: list[int], max_new_tokens: int) -> tuple[str, float]:
    """`generate`'s greedy answer to one unpadded input, and its confidence (end token included if it ended)."""
    with torch.no_grad():
        output = model.generate(input_ids=torch.tensor([input_ids]), attention_mask=torch.ones(1, len(input_ids),
                                dtype=torch.long), max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    new = output[0, 1 if model.config.is_encoder_decoder else len(input_ids):].tolist()
    eos = tokenizer.eos_token_id
    answer = new[:new.index(eos) + 1] if eos in new else new
    tokens = [t for t in answer if t != eos]
    text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return text, recomputed_confidence(model, {"input_ids": input_ids}, answer)


def reference_answers(module_name: str, adapter: Any, texts: list[str]) -> list[tuple[str, float]]:
    """(answer text, confidence) for each of `texts`, one at a time, without the adapter's code."""
    path = adapter.configuration["model_path"]
    if module_name == "models.distilbert_sst2":
        results = [pipeline("text-classification", model=path)(text)[0] for text in texts]
        return [(r["label"], r["score"]) for r in results]
    if module_name == "models.bart_large_mnli":
        classify = pipeline("zero-shot-classification", model=path)
        config = adapter.configuration
        results = [classify(text, candidate_labels=config["candidate_labels"],
                            hypothesis_template=config["hypothesis_template"], multi_label=config["multi_label"])
                   for text in texts]
        return [(r["labels"][0], r["scores"][0]) for r in results]
    tokenizer = adapter.tokenizer
    if module_name == "models.dialogpt_large":
        inputs = [tokenizer.encode(text) + [tokenizer.eos_token_id] for text in texts]
        budget = adapter.configuration["max_new_tokens"]
    else:
        inputs = [tokenizer(adapter.configuration["prefix"] + text)["input_ids"] for text in texts]
        budget = adapter.configuration["token_count"]
    return [greedy_answer(adapter.model, tokenizer, ids, budget) for ids in inputs]
