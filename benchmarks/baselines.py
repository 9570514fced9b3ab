"""What the package is measured against: the reference adapters' naive loop, and `transformers` pipelines.

The naive loops are the reference Dataloop adapters (seed 001) reimplemented: one question at a time, no
batching, DialoGPT's history carried as the previous `generate` output, and its confidence from an extra
forward pass over the answer. Zero-shot runs each (question, label) pair alone, as the pipeline the seed
000 adapter calls with its default batch size does. Every answer is `(text, {label: score} or confidence)`.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
from transformers import pipeline

from .workload import Workload

Answer = tuple[str, Any]


@torch.no_grad()
def naive_sentiment(model: Any, tokenizer: Any, workload: Workload) -> list[Answer]:
    answers = []
    id2label = model.config.id2label
    for _, _, text, _ in workload.questions():
        encoded = tokenizer(text, return_tensors="pt", truncation=True)
        scores = torch.softmax(model(**encoded).logits[0].float(), dim=-1).tolist()
        best = max(range(len(scores)), key=scores.__getitem__)
        answers.append((id2label[best], {id2label[i]: s for i, s in enumerate(scores)}))
    return answers


@torch.no_grad()
def naive_zero_shot(model: Any, tokenizer: Any, workload: Workload, template: str) -> list[Answer]:
    entailment = next(i for label, i in model.config.label2id.items() if label.lower().startswith("entail"))
    answers = []
    for _, _, text, metadata in workload.questions():
        labels = metadata["candidate_labels"]
        logits = []
        for label in labels:
            encoded = tokenizer(text, template.format(label), return_tensors="pt", truncation="only_first")
            logits.append(model(**encoded).logits[0, entailment].float())
        scores = torch.softmax(torch.stack(logits), dim=0).tolist()
        best = max(range(len(labels)), key=scores.__getitem__)
        answers.append((labels[best], dict(zip(labels, scores))))
    return answers


@torch.no_grad()
def naive_chat(model: Any, tokenizer: Any, workload: Workload, max_new_tokens: int) -> list[Answer]:
    """Seed 001's DialoGPT loop, greedy: every item is one conversation, one `generate` per turn."""
    answers = []
    eos = tokenizer.eos_token_id
    history: dict[int, torch.Tensor] = {}
    for item, _, text, _ in workload.questions():
        new_input = tokenizer.encode(text + tokenizer.eos_token, return_tensors="pt")
        previous = history.get(id(item))
        bot_input = torch.cat([previous, new_input], dim=-1) if previous is not None else new_input
        bot_input = bot_input[:, -(model.config.n_positions - max_new_tokens):]
        output = model.generate(bot_input, attention_mask=torch.ones_like(bot_input), max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=eos)
        history[id(item)] = output
        answer = output[:, bot_input.shape[-1]:]
        # the reference's compute_confidence: one more forward pass over the conversation and its answer
        logprobs = torch.log_softmax(model(output).logits[0, bot_input.shape[-1] - 1:-1].float(), dim=-1)
        confidence = float(torch.exp(logprobs.gather(1, answer[0][:, None]).mean()))
        answers.append((tokenizer.decode(answer[0], skip_special_tokens=True).strip(), confidence))
    return answers


@torch.no_grad()
def naive_template_chat(model: Any, tokenizer: Any, workload: Workload, max_new_tokens: int) -> list[Answer]:
    """The same loop for a chat-template model, as its model card writes it: `apply_chat_template` of the
    conversation so far with the generation prompt, one greedy `generate` per turn (stopping at the checkpoint's
    end-of-turn tokens), and the confidence from one more forward pass over the answer."""
    answers = []
    conversations: dict[int, list[dict[str, str]]] = {}
    for item, _, text, _ in workload.questions():
        messages = conversations.setdefault(id(item), [])
        messages.append({"role": "user", "content": text})
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)["input_ids"]
        output = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        answer = output[:, prompt.shape[-1]:]
        logprobs = torch.log_softmax(model(output).logits[0, prompt.shape[-1] - 1:-1].float(), dim=-1)
        confidence = float(torch.exp(logprobs.gather(1, answer[0][:, None]).mean()))
        reply = tokenizer.decode(answer[0], skip_special_tokens=True).strip()
        messages.append({"role": "assistant", "content": reply})
        answers.append((reply, confidence))
    return answers


@torch.no_grad()
def naive_text2text(model: Any, tokenizer: Any, workload: Workload, prefix: str, max_new_tokens: int) -> list[Answer]:
    """One `generate` per question; confidence from the scores generate returns."""
    answers = []
    for _, _, text, _ in workload.questions():
        encoded = tokenizer(prefix + text, return_tensors="pt", truncation=True)
        output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                output_scores=True, return_dict_in_generate=True)
        scores = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
        answers.append((tokenizer.decode(output.sequences[0], skip_special_tokens=True).strip(),
                        float(torch.exp(scores[0].mean()))))
    return answers


def sentiment_pipeline(model: Any, tokenizer: Any) -> Callable[[Workload, int], list[Answer]]:
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None, device="cpu")

    def run(workload: Workload, batch_size: int) -> list[Answer]:
        texts = [text for _, _, text, _ in workload.questions()]
        results = classify(texts, batch_size=batch_size, truncation=True)
        return [(max(r, key=lambda x: x["score"])["label"], {x["label"]: x["score"] for x in r}) for r in results]
    return run


def zero_shot_pipeline(model: Any, tokenizer: Any, template: str) -> Callable[[Workload, int], list[Answer]]:
    """The pipeline called once per label set (questions grouped by their labels: the pipeline's best case)."""
    classify = pipeline("zero-shot-classification", model=model, tokenizer=tokenizer, device="cpu")

    def run(workload: Workload, batch_size: int) -> list[Answer]:
        groups: dict[tuple[str, ...], list[int]] = {}
        questions = list(workload.questions())
        for index, (_, _, _, metadata) in enumerate(questions):
            groups.setdefault(tuple(metadata["candidate_labels"]), []).append(index)
        answers: list[Answer | None] = [None] * len(questions)
        for labels, indices in groups.items():
            results = classify([questions[i][2] for i in indices], candidate_labels=list(labels),
                               hypothesis_template=template, batch_size=batch_size)
            for index, result in zip(indices, results):
                answers[index] = (result["labels"][0], dict(zip(result["labels"], result["scores"])))
        return answers
    return run


def best_batch_size(run: Callable[[Workload, int], list[Answer]], sample: Workload,
                    candidates: tuple[int, ...]) -> tuple[int, dict[int, float]]:
    """The pipeline batch size with the highest throughput on `sample`, and every candidate's seconds."""
    seconds = {}
    for batch_size in candidates:
        start = time.perf_counter()
        run(sample, batch_size)
        seconds[batch_size] = time.perf_counter() - start
    return min(seconds, key=seconds.__getitem__), seconds


# ----- CTranslate2 called directly: what a user who converts the model themselves would write -----

def ctranslate2_text2text(translator: Any, tokenizer: Any, workload: Workload, prefix: str, max_new_tokens: int,
                          batch_size: int) -> list[Answer]:
    """Every question in one greedy `translate_batch` (CTranslate2 sorts by length and cuts `batch_size` batches)."""
    sources = [tokenizer.convert_ids_to_tokens(tokenizer(prefix + text, truncation=True)["input_ids"])
               for _, _, text, _ in workload.questions()]
    results = translator.translate_batch(sources, max_batch_size=batch_size, beam_size=1,
                                         max_decoding_length=max_new_tokens, min_decoding_length=0)
    return [(tokenizer.decode(tokenizer.convert_tokens_to_ids(r.hypotheses[0]), skip_special_tokens=True).strip(),
             None) for r in results]


def ctranslate2_chat(generator: Any, tokenizer: Any, workload: Workload, max_new_tokens: int, batch_size: int,
                     context: int) -> list[Answer]:
    """Every item is one conversation (its prompts in order); turn t of all of them in one `generate_batch`.

    Each prompt is built as DialoGPT expects (every utterance ends in eos): the question, cut to its last tokens
    if it alone is too long, after as many whole earlier turns (question and answer) as fit in `context` minus
    the answer budget.
    """
    def utterance(text: str) -> list[int]:
        return tokenizer.encode(text) + [tokenizer.eos_token_id]

    budget = context - max_new_tokens
    questions = list(workload.questions())
    turns: dict[int, list[list[int]]] = {}  # id(item) -> its earlier turns, oldest first
    answers: list[Answer | None] = [None] * len(questions)
    for batch in batches_by_turn(questions):
        prompts = []
        for i in batch:
            prompt = utterance(questions[i][2])[-budget:]
            for earlier in reversed(turns.get(id(questions[i][0]), [])):
                if len(earlier) + len(prompt) > budget:
                    break
                prompt = earlier + prompt
            prompts.append(prompt)
        results = generator.generate_batch([tokenizer.convert_ids_to_tokens(p) for p in prompts],
                                           max_batch_size=batch_size, max_length=max_new_tokens,
                                           include_prompt_in_result=False)
        for i, result in zip(batch, results):
            text = tokenizer.decode(result.sequences_ids[0], skip_special_tokens=True).strip()
            turns.setdefault(id(questions[i][0]), []).append(utterance(questions[i][2]) + utterance(text))
            answers[i] = (text, None)
    return answers


def ctranslate2_template_chat(generator: Any, tokenizer: Any, workload: Workload, max_new_tokens: int,
                              batch_size: int, end_ids: list[int]) -> list[Answer]:
    """As `ctranslate2_chat`, for a chat-template model: turn t of every conversation in one `generate_batch`,
    each prompt `apply_chat_template` of its conversation so far, stopping at the end-of-turn tokens."""
    questions = list(workload.questions())
    conversations: dict[int, list[dict[str, str]]] = {}
    answers: list[Answer | None] = [None] * len(questions)
    for batch in batches_by_turn(questions):
        prompts = []
        for i in batch:
            messages = conversations.setdefault(id(questions[i][0]), [])
            messages.append({"role": "user", "content": questions[i][2]})
            prompts.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))
        results = generator.generate_batch([tokenizer.convert_ids_to_tokens(p) for p in prompts],
                                           max_batch_size=batch_size, max_length=max_new_tokens,
                                           include_prompt_in_result=False, end_token=end_ids)
        for i, result in zip(batch, results):
            text = tokenizer.decode(result.sequences_ids[0], skip_special_tokens=True).strip()
            conversations[id(questions[i][0])].append({"role": "assistant", "content": text})
            answers[i] = (text, None)
    return answers


def batches_by_turn(questions: list) -> list[list[int]]:
    """Indices of `questions` (item first in each) grouped by turn: the first question of every conversation, then
    the second, ...: what a chat baseline may batch together, each turn after the answers it builds on."""
    depth = [sum(1 for other, *_ in questions[:i] if other is item) for i, (item, *_) in enumerate(questions)]
    return [[i for i in range(len(questions)) if depth[i] == turn] for turn in range(max(depth, default=-1) + 1)]
