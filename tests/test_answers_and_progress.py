"""Stored answers read as the platform keeps them, and the progress of a local prediction over many files."""
from __future__ import annotations

import json

import dtlpy as dl
from dtlpy.entities.prompt_item import Prompt

from adapters.dataloop.answers import StoredAnswer, prompt_item_answers
from adapters.dataloop.local_runner import LocalRunner
from tests.fake_platform import answer_json
from tests.prompt_factory import current_item, legacy_item

CHAT = "tiny-chat"


def chat_prompt_item(answer_texts: list[str]) -> dl.PromptItem:
    """Two user prompts; this model's answer to the first holds `answer_texts` as its text elements, in order."""
    item = dl.PromptItem(name="chat.json")
    for key, text in (("1", "Hi there! How are you doing today?"), ("2", "Who won the game last night?")):
        prompt = Prompt(key=key)
        prompt.add_element(text, dl.PromptType.TEXT)
        item.prompts.append(prompt)
    answer = Prompt(key="1", role="assistant")
    for text in answer_texts:
        answer.add_element(text, dl.PromptType.TEXT)
    answer.add_element({"id": "annotation-1", "model_info": {"name": CHAT, "confidence": 1.0}}, dl.PromptType.METADATA)
    item.assistant_prompts.append(answer)
    return item


def test_an_assistant_prompt_with_several_text_elements_answers_with_its_last_one(tiny_models):
    """dtlpy's `PromptItem.add` updates the last text element of an answer: that is the answer as it stands, and
    the history the next turn of the chat sees."""
    drafts = ["Not bad at all, just a little tired after work.", "I'm fine, thanks. What about you?"]
    assert prompt_item_answers(chat_prompt_item(drafts)) == [StoredAnswer("1", drafts[-1], CHAT, "annotation-1")]

    import models.dialogpt_large as chat_module
    adapter = chat_module.HuggingAdapter({"model_path": str(tiny_models["gpt2"]), "max_new_tokens": 8,
                                          "do_sample": False}, model_name=CHAT)

    def second_answer(item) -> str:
        (collection,) = adapter.predict([item])
        assert [a.metadata["system"]["promptId"] for a in collection.annotations] == ["2"]  # the first is kept
        return collection.annotations[0].coordinates

    as_it_stands = second_answer(chat_prompt_item(drafts))
    stored = {"name": "chat.json", **current_item({"1": ["Hi there! How are you doing today?"],
                                                   "2": ["Who won the game last night?"]}),
              "annotations": [answer_json("1", drafts[-1], CHAT)]}
    assert as_it_stands == second_answer(stored)
    assert as_it_stands != second_answer(chat_prompt_item(drafts[:1]))  # the history shows: the check can fail


def test_progress_reaches_its_total_across_several_files_and_predict_calls(tiny_models, tmp_path):
    """Two items per predict call (batch_size 2): the total is counted before the first call, the count never
    passes it or goes back, and both end at every readable question; an unreadable file adds none. The last
    call's item holds an earlier prompt answered before (kept, never run: the count reaches its questions when
    the call ends) and a last prompt, which every call answers (issue 21's regenerate)."""
    runner = LocalRunner("distilbert-sst2", {"model_path": str(tiny_models["distilbert"]), "batch_size": 2})
    sizes = [3, 1, 5, 2]
    files = []
    for index, size in enumerate(sizes):
        files.append(tmp_path / f"{index}.json")
        files[-1].write_text(json.dumps(legacy_item({"p": [f"question {index}.{q}" for q in range(size)]})))
    answered = tmp_path / "answered.json"
    answered.write_text(json.dumps({**legacy_item({"p": ["asked before", "and before"], "q": ["asked now"]}),
                                    "annotations": [answer_json("p", "POSITIVE", "distilbert-sst2"),
                                                    answer_json("p", "NEGATIVE", "distilbert-sst2")]}))
    files += [tmp_path / "missing.json", answered]

    def progress_of(paths) -> list[tuple[float, int]]:
        seen: list[tuple[float, int]] = []
        results = runner.predict_files([str(p) for p in paths], on_progress=lambda done, total: seen.append((done,
                                                                                                            total)))
        asked = sum(len(json.loads(p.read_text())["prompts"]["p"]) for p in paths if p.exists() and p != answered)
        assert sum(len(r.annotations) for r in results) == asked + (answered in paths)  # its last prompt only
        return seen

    seen = progress_of(files)
    assert seen[-1] == (sum(sizes) + 3, sum(sizes) + 3)
    done, totals = [d for d, _ in seen], [t for _, t in seen]
    assert done == sorted(done) and totals == sorted(totals) and all(d <= t for d, t in seen)
    assert set(totals) == {sum(sizes) + 3}  # counted before the first of the three predict calls, never growing
    assert progress_of(files[:2])[-1] == (4, 4)  # the next call counts afresh
