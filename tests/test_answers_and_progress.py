"""Stored answers read as the platform keeps them, and the progress of a local prediction over many files."""
from __future__ import annotations

import json
from pathlib import Path

import dtlpy as dl
from dtlpy.entities.prompt_item import Prompt

from adapters.dataloop.answers import StoredAnswer, model_name_of, prompt_item_answers, replaced_by, stored_answers
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
    """Two items per predict call (batch_size 2): the total is every readable question, counted before anything
    runs (an unreadable file adds none); the count never passes it or goes back, and ends at it. The last call
    holds questions answered before (kept, never run) beside the last prompt's question (every call answers the
    last prompt again): the count reaches the kept ones when the call ends, not by running."""
    runner = LocalRunner("distilbert-sst2", {"model_path": str(tiny_models["distilbert"]), "batch_size": 2})
    sizes = [3, 1, 5, 2]
    files = []
    for index, size in enumerate(sizes):
        files.append(tmp_path / f"{index}.json")
        files[-1].write_text(json.dumps(legacy_item({"p": [f"question {index}.{q}" for q in range(size)]})))
    answered = tmp_path / "answered.json"
    answered.write_text(json.dumps({**legacy_item({"p": ["asked before", "and before"], "q": ["new"]}), "annotations": [
        answer_json("p", "POSITIVE", "distilbert-sst2"), answer_json("p", "NEGATIVE", "distilbert-sst2")]}))
    files += [tmp_path / "missing.json", answered]

    def progress_of(paths) -> list[tuple[float, int]]:
        seen: list[tuple[float, int]] = []
        results = runner.predict_files([str(p) for p in paths], on_progress=lambda done, total: seen.append((done,
                                                                                                            total)))
        assert [len(r.kept) for r in results] == [2 if Path(r.file) == answered else 0 for r in results]
        assert sum(len(r.annotations) for r in results) == sum(len(json.loads(p.read_text())["prompts"]["p"])
                                                               for p in paths if p.exists() and p != answered) + (
            answered in paths)  # the answered file's last prompt
        return seen

    seen = progress_of(files)
    questions = sum(sizes) + 3
    assert seen[-1] == (questions, questions)
    done, totals = [d for d, _ in seen], [t for _, t in seen]
    assert done == sorted(done) and all(d <= t for d, t in seen)
    assert set(totals) == {questions}  # counted before the first call: the bar fills once over every file
    assert len(set(done)) > 4  # it moves with the calls, not only at the end
    assert progress_of(files[:2])[-1] == (4, 4)  # the next call counts afresh


def test_every_stored_answer_is_read_whole_past_annotations_that_are_no_answers():
    """Annotations that are no answer (a classification, a text on no prompt, a prompt key that is an object) are
    passed over, not the end of the list; each answer keeps its id and what it answered (element, fingerprint)."""
    answered = answer_json("1", "second", "chat-model")
    answered["id"] = "annotation-2"
    answered["metadata"].setdefault("user", {})["model_output"] = {"answered": {"element": "e-1", "sha256": "f" * 64}}
    odd = answer_json("3", "third", None)
    odd["metadata"]["user"] = {"model_output": {"answered": {"element": 5, "sha256": ["x"]}}}
    annotations = [
        {"type": "class", "label": "positive", "metadata": {}},
        {"type": "text", "coordinates": "on the item", "metadata": {"system": {}}},
        answer_json("0", "first", "chat-model"),
        {"type": "text", "coordinates": "odd key", "metadata": {"system": {"promptId": {"a": 1}}}},
        answered,
        odd,
    ]
    assert stored_answers(annotations) == [
        StoredAnswer("0", "first", "chat-model"),
        StoredAnswer("1", "second", "chat-model", "annotation-2", "e-1", "f" * 64),
        StoredAnswer("3", "third", None),  # a recorded element or fingerprint of another type reads as none
    ]


def test_annotation_json_of_unexpected_shapes_is_passed_over_not_a_crash():
    """Annotations come from the platform and from users' own JSON files: a record that is no object, a text
    annotation whose text is no string, metadata or its system section of another type, or an id that is no string
    must not end the reading of the answers after it, nor reach them with the wrong type."""
    numbered = answer_json("2", "kept", "chat-model")
    numbered["id"] = 7
    annotations = [
        None,
        "an annotation",
        {"type": "text", "coordinates": None, "metadata": {"system": {"promptId": "0"}}},
        {"type": "box", "coordinates": "not text", "metadata": {"system": {"promptId": "0"}}},
        {"type": "text", "coordinates": "metadata is a string", "metadata": "odd"},
        {"type": "text", "coordinates": "system is a string", "metadata": {"system": "odd"}},
        numbered,
    ]
    assert stored_answers(annotations) == [StoredAnswer("2", "kept", "chat-model")]  # the id 7 reads as none
    assert model_name_of("an annotation") is None and model_name_of({"metadata": "odd"}) is None


def test_what_a_new_answer_replaces_is_found_past_other_annotations():
    """The model's stale answers are found wherever they stand among a person's text, another model's answers and
    annotations without an id; one of the model's answers on no prompt (no `metadata.system`) is a text item's."""
    on_no_prompt = {"id": "ours-on-the-item", "type": "text", "coordinates": "an answer to the whole item",
                    "metadata": {"user": {"model": {"name": "chat-model"}}}}
    annotations = [
        answer_json("0", "another model's", "other-model", "theirs-0"),
        answer_json("0", "a person's", None, "person-0"),
        answer_json("0", "no id yet", "chat-model"),
        answer_json("0", "stale", "chat-model", "ours-0"),
        answer_json("1", "still current", "chat-model", "ours-1"),
        on_no_prompt,
    ]
    assert replaced_by(annotations, "chat-model", {"0"}) == ["ours-0"]
    assert replaced_by(annotations, "chat-model", {"0", None}) == ["ours-0", "ours-on-the-item"]
    assert replaced_by(annotations, "other-model", {"0", "1"}) == ["theirs-0"]


def test_an_assistant_prompt_is_read_by_its_text_elements_only():
    """An answer's image or other non-text elements are not its text, even when their value is a string (a URL),
    and an assistant prompt with no text element at all is no stored answer."""
    item = chat_prompt_item(["I'm fine, thanks."])
    item.assistant_prompts[0].add_element("https://example.com/a-picture.png", dl.PromptType.IMAGE)
    picture_only = Prompt(key="2", role="assistant")
    picture_only.add_element("https://example.com/another.png", dl.PromptType.IMAGE)
    item.assistant_prompts.append(picture_only)
    assert prompt_item_answers(item) == [StoredAnswer("1", "I'm fine, thanks.", CHAT, "annotation-1")]
