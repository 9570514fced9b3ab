"""Fine-tuning and evaluation from the Dataloop data layout, offline, on tiny models and synthetic data."""
import contextlib
import json
import random
from pathlib import Path
from typing import Iterator

import dtlpy as dl
import pytest
import torch

from adapters.cli import main as cli_main
from adapters.dataloop.local_runner import LocalRunner
from adapters.dataloop.model_adapter import ModelAdapter
from adapters.training.dataset import DatasetError, read_layout, read_subset
from adapters.training.layout import text_annotation, write_item
from adapters.training.loop import collator_for
from adapters.training.metrics import accuracy, macro_f1, rouge, score
from tests.model_factory import build_t5
from tests.prompt_factory import current_item, legacy_item

POSITIVE = ["great", "wonderful", "love", "excellent", "happy", "beautiful"]
NEGATIVE = ["awful", "terrible", "boring", "worst", "broken", "disappointing"]
EMAILS = [("meeting monday", "the meeting is cancelled"), ("invoice friday", "please send the invoice"),
          ("team lunch", "lunch is at noon"), ("new release", "the release is available")]
# Tiny random models learn only with a large step; real models keep the manifest's defaults.
FAST = {"learning_rate": 1e-2, "train_batch_size": 8, "warmup_ratio": 0.0, "seed": 0}


def sentiment_layout(root: Path, labels=("pos", "neg"), train=32, validation=12, template="the film was {} today",
                     say_label=False):
    """A learnable rule: a positive word means labels[0], a negative word labels[1] (or the text says the label)."""
    rng = random.Random(0)
    for subset, count in (("train", train), ("validation", validation)):
        for i in range(count):
            label = labels[i % 2]
            word = label if say_label else rng.choice(POSITIVE if label == labels[0] else NEGATIVE)
            write_item(root / subset, f"{subset}-{i}", current_item({"1": [template.format(word)]}),
                       [text_annotation("1", label)])
    return root


def email_layout(root: Path) -> Path:
    """A memorisable mapping subject -> email; validation repeats train, so learning it shows in ROUGE-L."""
    for subset in ("train", "validation"):
        for i, (subject, email) in enumerate(EMAILS):
            write_item(root / subset, f"{subset}-{i}", legacy_item({"1": [subject]}), [text_annotation("1", email)])
    return root


def chat_layout(root: Path) -> Path:
    """Two-turn conversations (current format: the prompts of an item are its turns) with reference replies."""
    for subset in ("train", "validation"):
        for i, (subject, email) in enumerate(EMAILS):
            write_item(root / subset, f"{subset}-{i}", current_item({"1": [subject], "2": ["and then?"]}),
                       [text_annotation("1", email), text_annotation("2", email + " too")])
    return root


def local_adapter(name: str, model_path, **overrides) -> tuple[ModelAdapter, list]:
    """A ModelAdapter on an offline dl.Model from the manifest; model.metrics.create collects its samples."""
    runner = LocalRunner(name, {"model_path": str(model_path), **overrides})
    collected: list = []
    runner.model.metrics.create = lambda samples, dataset_id=None: collected.extend(samples)
    return runner.adapter, collected


def rows_loss(adapter: ModelAdapter) -> float:
    """Mean loss of the model on the prepared validation rows, in one batch: the same measure before and after."""
    model = adapter.hugging.model.eval()
    with torch.no_grad():
        return float(model(**collator_for(model, adapter.hugging.tokenizer)(adapter._prepared.validation_rows)).loss)


def untrained_scores(adapter: ModelAdapter, data: Path) -> dict:
    """Validation metrics and loss of the model before training (after any new head is in place)."""
    adapter.convert_from_dtlpy(str(data))
    return {**adapter.evaluate_path(str(data)), "loss": rows_loss(adapter)}


def predicted_texts(adapter: ModelAdapter, texts: list[str]) -> list[str]:
    collections = adapter.predict([current_item({"1": [text]}) for text in texts])
    return [collection.annotations[0].coordinates for collection in collections]


# ----- metrics -----
def test_classifier_metrics_follow_their_definitions():
    assert accuracy(["a", "b", "a"], [["a"], ["a"], ["a", "c"]]) == pytest.approx(2 / 3)  # float64 2/3: one rounding
    # label a: P 1, R 2/3 -> F1 0.8; label b: never right -> 0; macro = 0.4
    assert macro_f1(["a", "b", "a"], [["a"], ["a"], ["a"]]) == pytest.approx(0.4)


ROUGE_PAIRS = [  # (prediction, references): stemming, order, several references, empty and non-word text
    ("The cats were sitting on the mats.", ["the cat sat on the mat"]),
    ("please send the invoice by friday", ["send the invoice friday please", "the invoice is late"]),
    ("lunch is at noon", ["the meeting is cancelled"]),
    ("", ["an answer"]),
    ("!!!", ["???"]),
]


def test_rouge_matches_rouge_score_on_fixed_pairs():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    predictions, references = [p for p, _ in ROUGE_PAIRS], [r for _, r in ROUGE_PAIRS]
    expected = {name: sum(max(scorer.score(ref, p)[name].fmeasure for ref in refs) for p, refs in ROUGE_PAIRS)
                / len(ROUGE_PAIRS) for name in ("rouge1", "rouge2", "rougeL")}
    assert score("generation", predictions, references) == pytest.approx(expected, abs=1e-12)  # float64 means of 5
    # By hand, with the Porter stemmer: "cats" = "cat" and "sitting" = "sit" but "sat" stays, so the prediction
    # (the cat were sit on the mat: 7 tokens) and the reference (the cat sat on the mat: 6) share the LCS
    # "the cat on the mat" (5): P = 5/7, R = 5/6, F = 2PR / (P + R) = 10/13.
    assert rouge(*zip(ROUGE_PAIRS[0]))["rougeL"] == pytest.approx(10 / 13)


# ----- each model learns -----
def test_distilbert_learns_new_labels_saves_and_reloads(tiny_models, tmp_path):
    data = sentiment_layout(tmp_path / "data")
    adapter, samples = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=6, **FAST)
    before = untrained_scores(adapter, data)
    progress, steps = [], []
    history = adapter.train(str(data), str(tmp_path / "out"), on_epoch_end_callback=lambda i, n: progress.append(i),
                            on_step=lambda *step: steps.append(step))
    assert progress == list(range(6))  # dtlpy's callback counts from 0; the records from 1, as the screen does
    assert [epoch["epoch"] for epoch in history] == list(range(1, 7))
    # A step reports the epoch's loss so far: at an epoch's last step, the loss the epoch's record has.
    assert [(step, total) for step, total, _ in steps] == [(step, 24) for step in range(1, 25)]
    for record in history:
        assert steps[4 * record["epoch"] - 1][2] == pytest.approx(record["train_loss"], rel=1e-5)
    assert steps[4][2] != pytest.approx(steps[3][2])  # a new epoch starts its own mean
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert rows_loss(adapter) < before["loss"]
    assert history[-1]["accuracy"] >= 0.9 > before["accuracy"] and history[-1]["macro_f1"] >= 0.9
    figures = {(s.figure, s.legend) for s in samples}
    assert {("loss", "train"), ("loss", "validation"), ("accuracy", "validation")} <= figures
    assert len([s for s in samples if s.figure == "accuracy"]) == 6

    adapter.save(str(tmp_path / "out"))
    saved = {p.name for p in (tmp_path / "out").iterdir()}
    assert "model.safetensors" in saved and "config.json" in saved and "training_metrics.json" in saved
    assert not {name for name in saved if name.endswith((".bin", ".pt", ".pth"))}
    texts = ["the film was wonderful today", "the film was terrible today"]
    expected = predicted_texts(adapter, texts)
    assert expected == ["pos", "neg"]
    by_path, _ = local_adapter("distilbert-sst2", tmp_path / "out")         # model_path -> the saved folder
    assert predicted_texts(by_path, texts) == expected
    by_artifacts = ModelAdapter(model_entity=by_path.model_entity)          # load() of the next run
    by_artifacts.load(str(tmp_path / "out"))
    assert predicted_texts(by_artifacts, texts) == expected


def test_bart_nli_learns_from_labels_with_the_hypothesis_template(tiny_models, tmp_path):
    # Rule: the hypothesis "This example is <w>." is entailed when the text says <w> (premise-hypothesis match).
    data = sentiment_layout(tmp_path / "data", labels=("great", "awful"), train=16, validation=8,
                            say_label=True)
    adapter, _ = local_adapter("bart-large-mnli", tiny_models["bart"], epochs=3, **FAST,
                               candidate_labels=["great", "awful"])
    hugging = adapter.hugging
    question = read_layout(data)["train"].items[0].parsed.questions[0]
    rows = hugging.training_rows(question, [], "great")
    assert [row["labels"] for row in rows] == [hugging.entailment_id, hugging.contradiction_id]
    assert rows[0]["input_ids"] == hugging.preprocess(question, [])[0]["input_ids"]
    scores = adapter.evaluate_path(str(data))  # the validation subset (8 items), no confusion matrix unless asked
    on_train = adapter.evaluate_path(str(data), "train", with_confusion=True)
    assert "confusion_matrix" not in scores and sum(map(sum, on_train["confusion_matrix"]["counts"])) == 16
    history = adapter.train(str(data), str(tmp_path / "out"))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["accuracy"] >= 0.9 > scores["accuracy"]


@contextlib.contextmanager
def library_warnings() -> Iterator[list[str]]:
    """Every warning `transformers` logs in the block, at its own default verbosity (as on the platform, where no
    CLI quiets it), with its warn-once memory cleared so that a message said by an earlier test is said again."""
    import logging

    from transformers.utils import logging as library_logging
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    root = logging.getLogger("transformers")
    verbosity = library_logging.get_verbosity()
    library_logging.set_verbosity_warning()
    library_logging.warning_once.cache_clear()
    root.addHandler(handler)
    try:
        yield seen
    finally:
        root.removeHandler(handler)
        library_logging.set_verbosity(verbosity)


def test_t5_memorises_emails_loss_falls_and_rouge_rises(tmp_path, caplog):
    # The shared tiny T5 is drawn with a huge init scale (varied untrained output); training wants the normal one.
    model = build_t5(tmp_path / "t5", config_overrides={"initializer_factor": 1.0})
    adapter, samples = local_adapter("t5-email", model, epochs=12, **FAST, token_count=8, max_target_length=8,
                                     do_sample=False)
    data = email_layout(tmp_path / "data")
    before = untrained_scores(adapter, data)
    with library_warnings() as warned, caplog.at_level("WARNING", logger="adapters"):
        history = adapter.train(str(data), str(tmp_path / "out"))
    # T5's tied embeddings are saved once ("missing keys ... embed_tokens" when the best epoch is loaded back), and
    # epochs saved within a second ("mtime may not be reliable"): neither is a problem, so neither is said.
    assert not [m for m in warned if "missing keys" in m or "mtime" in m], warned
    assert not [r for r in caplog.records if "did not match the model" in r.getMessage()]
    assert rows_loss(adapter) < before["loss"] - 1
    assert history[-1]["rougeL"] > before["rougeL"]
    assert {"rouge1", "rouge2", "rougeL"} <= {s.figure for s in samples}


def test_dialogpt_trains_on_answer_tokens_with_predicts_history(tiny_models, tmp_path):
    data = chat_layout(tmp_path / "data")
    adapter, _ = local_adapter("dialogpt-large", tiny_models["gpt2"], epochs=8, **FAST, max_new_tokens=8,
                               do_sample=False, lora_r=0)
    hugging = adapter.hugging
    item = read_layout(data)["train"].items[0]
    first, second = hugging.conversations(item.parsed)[0]
    from adapters.core.hugging_adapter import Answer, Turn
    history = [Turn(first, [Answer(item.references[first][0], 1.0)])]
    row = hugging.training_rows(second, history, "reply")[0]
    context = hugging.preprocess(second, history)[0]["input_ids"]
    answer = hugging.chat.utterance("reply")
    assert row["input_ids"] == context + answer
    assert row["labels"] == [-100] * len(context) + answer

    before = untrained_scores(adapter, data)
    result = adapter.train(str(data), str(tmp_path / "out"))
    assert rows_loss(adapter) < before["loss"] - 1
    assert max(epoch["rougeL"] for epoch in result) > before["rougeL"]


def test_a_chat_template_model_trains_on_its_template_with_the_loss_on_the_answer_and_its_end_of_turn(chat_models,
                                                                                                  tmp_path):
    data = chat_layout(tmp_path / "data")
    adapter, _ = local_adapter("dialogpt-large", chat_models["qwen2"], epochs=8, **FAST, max_new_tokens=8,
                               do_sample=False, lora_r=0, system_prompt="Be brief.")
    hugging = adapter.hugging
    item = read_layout(data)["train"].items[0]
    first, second = hugging.conversations(item.parsed)[0]
    from adapters.core.hugging_adapter import Answer, Turn
    reference = item.references[first][0]
    row = hugging.training_rows(second, [Turn(first, [Answer(reference, 1.0)])], "reply")[0]
    prompt = hugging.tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": first.text},
         {"role": "assistant", "content": reference}, {"role": "user", "content": second.text}],
        add_generation_prompt=True, return_dict=False)
    answer = hugging.tokenizer.encode("reply<|im_end|>", add_special_tokens=False)
    assert row["input_ids"] == prompt + answer
    assert row["labels"] == [-100] * len(prompt) + answer

    before = untrained_scores(adapter, data)
    result = adapter.train(str(data), str(tmp_path / "out"))
    assert rows_loss(adapter) < before["loss"] - 1
    assert max(epoch["rougeL"] for epoch in result) > before["rougeL"]


# ----- dtlpy's own train_model / evaluate_model paths -----
def test_dtlpy_evaluate_model_scores_uploaded_answers(tiny_models, tmp_path, monkeypatch):
    from tests.fake_platform import FakePlatform, prompt_file_item
    platform = FakePlatform()
    dataset = platform.install_dataset(monkeypatch, tmp_path / "artifacts")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # dtlpymetrics writes beside the working folder
    adapter, samples = local_adapter("distilbert-sst2", tiny_models["distilbert"])
    model = adapter.model_entity
    model.configuration["overwrite_annotations"] = False   # dtlpy's switch: score the answers already uploaded
    truth = ["pos", "neg", "pos", "neg"]
    said = ["pos", "neg", "neg", "neg"]
    for i, (reference, answer) in enumerate(zip(truth, said)):
        predictions = dl.AnnotationCollection()   # as predict_items uploads them
        predictions.add(annotation_definition=dl.FreeText(text=answer), prompt_id="1",
                        model_info={"name": model.name, "confidence": 0.9})
        other = text_annotation("1", "pos", model_name="another-model")
        platform.add_item(prompt_file_item(tmp_path / "data", f"/item-{i}.json", current_item({"1": ["some text"]}),
                                           f"{i + 1:024x}"),
                          [text_annotation("1", reference), other, *(a.to_json() for a in predictions.annotations)])
    result_model, result_dataset = adapter.evaluate_model(model, dataset)
    assert result_model is model and result_dataset is dataset
    assert not [call for call in platform.calls if call[0] == "annotations.upload"]  # nothing predicted again
    assert adapter.evaluation_metrics["accuracy"] == pytest.approx(0.75)
    assert adapter.evaluation_metrics["questions"] == 4
    assert [float(row["label_score"]) for row in platform.scores(model.id)] == [1.0, 1.0, 0.0, 1.0]
    assert {s.figure for s in samples} == {"evaluation"}  # apart from the training curves
    assert {s.legend: s.y for s in samples}["accuracy"] == pytest.approx(0.75)


def test_evaluation_scores_a_question_it_cannot_prepare_as_unanswered_and_reports_it(make_adapter, tmp_path):
    """Evaluation answers as predict does: a question the model cannot prepare (a candidate label longer than the
    window) is a reported skip that scores as wrong, and the other questions are answered and scored."""
    from adapters.training.evaluation import evaluate_by_predicting
    huge = {"1": {"candidate_labels": ["x9 " * 66, "other"]}}  # within the 200-character cap, 200 tokens
    write_item(tmp_path / "validation", "item-0", current_item({"1": ["first"], "2": ["second"]}, metadata=huge),
               [text_annotation("1", "other"), text_annotation("2", "positive")])
    subset = read_subset(tmp_path / "validation", "validation")
    adapter = make_adapter("models.bart_large_mnli", candidate_labels=["positive", "negative"])
    answers, report = adapter.answer_questions([item.parsed for item in subset.items])
    assert [question.prompt_key for question in answers] == ["2"]
    (skipped,) = report.skipped
    assert skipped.prompt_key == "1" and "leaves no room for the question" in skipped.reason
    scored = evaluate_by_predicting(adapter, subset)
    assert (scored["questions"], scored["unanswered"]) == (2, 1)


# ----- command line -----
def test_cli_train_then_evaluate(tiny_models, tmp_path, capsys):
    data = sentiment_layout(tmp_path / "data")
    out = tmp_path / "trained"
    code = cli_main(["train", "distilbert-sst2", str(data), str(out), "--model-path", str(tiny_models["distilbert"]),
                     "--set", "epochs=5", "--set", "learning_rate=0.01", "--set", "train_batch_size=8"])
    captured = capsys.readouterr()
    trained = json.loads(captured.out)
    assert code == 0 and len(trained["epochs"]) == 5 and trained["seed"] == 42
    assert (out / "model.safetensors").is_file()
    # Epochs are numbered from 1 on screen and in the JSON; the kept epoch is said, with why, in both.
    assert [epoch["epoch"] for epoch in trained["epochs"]] == [1, 2, 3, 4, 5]
    for epoch in trained["epochs"]:
        assert f"epoch {epoch['epoch']}/5 done: train_loss {epoch['train_loss']:.4f}" in captured.err
    best = max(epoch["accuracy"] for epoch in trained["epochs"])
    first_best = next(epoch["epoch"] for epoch in trained["epochs"] if epoch["accuracy"] == best)
    assert trained["kept"]["epoch"] == first_best and trained["kept"]["value"] == best
    assert f"kept epoch {first_best}: the best validation accuracy" in captured.err
    assert json.loads((out / "training_metrics.json").read_text())["kept"] == trained["kept"]
    assert (out / "training_curve.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"training curve: {out / 'training_curve.png'}" in captured.err
    plot = tmp_path / "confusion.png"
    code = cli_main(["evaluate", "distilbert-sst2", str(data), "--model-path", str(out), "--plot", str(plot)])
    captured = capsys.readouterr()
    scored = json.loads(captured.out)
    assert code == 0 and scored["questions"] == 12
    # The saved weights are the best epoch's (validation accuracy; the first best on ties).
    assert scored["accuracy"] == pytest.approx(best)
    matrix = scored["confusion_matrix"]
    assert matrix["labels"] == ["neg", "pos"] and sum(map(sum, matrix["counts"])) == 12
    assert sum(matrix["counts"][i][i] for i in range(2)) / 12 == pytest.approx(scored["accuracy"])
    assert plot.read_bytes().startswith(b"\x89PNG") and f"confusion matrix: {plot}" in captured.err

    assert cli_main(["train", "distilbert-sst2", str(tmp_path / "nothing"), str(tmp_path / "other"), "--model-path",
                     str(tiny_models["distilbert"])]) == 1
    assert f"data folder {str(tmp_path / 'nothing')!r} does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["train", "distilbert-sst2", str(tmp_path / "empty"), str(tmp_path / "other")]) == 1
    assert "has no 'train' subset (found: no subset folders at all)" in capsys.readouterr().err
    assert cli_main(["train", "distilbert-sst2", str(data), str(tmp_path / "other"), "--set", "epochs=0"]) == 2
    assert "'epochs' must be >= 1" in capsys.readouterr().err


# ----- bad data and configuration -----
@pytest.fixture(scope="module")
def distilbert_adapter(tiny_models):
    return local_adapter("distilbert-sst2", tiny_models["distilbert"])[0]


def test_bad_datasets_get_clear_errors(distilbert_adapter, tiny_models, tmp_path):
    convert = distilbert_adapter.convert_from_dtlpy
    with pytest.raises(DatasetError, match="no 'train' subset"):
        convert(str(tmp_path))
    (tmp_path / "empty" / "train" / "json").mkdir(parents=True)
    with pytest.raises(DatasetError, match="has no items"):
        convert(str(tmp_path / "empty"))

    unanswered = tmp_path / "unanswered"
    write_item(unanswered / "train", "a", current_item({"1": ["fine"]}), [])
    with pytest.raises(DatasetError, match="no answers"):
        convert(str(unanswered))

    unknown = sentiment_layout(tmp_path / "unknown", train=4, validation=2)
    write_item(unknown / "validation", "odd", current_item({"1": ["meh"]}), [text_annotation("1", "neutral")])
    with pytest.raises(DatasetError, match="'neutral' is not among the training labels"):
        convert(str(unknown))

    one_label = sentiment_layout(tmp_path / "one", labels=("pos", "pos"), train=4, validation=2)
    with pytest.raises(DatasetError, match="at least 2 different labels"):
        convert(str(one_label))

    broken = sentiment_layout(tmp_path / "broken", train=4, validation=2)
    (broken / "train" / "items" / "train-1.json").write_text("")
    with pytest.raises(DatasetError, match="train-1.json.*missing, empty or not a regular file"):
        convert(str(broken))

    bart, _ = local_adapter("bart-large-mnli", tiny_models["bart"], candidate_labels=["positive", "negative"])
    with pytest.raises(DatasetError, match="'pos' is not one of the candidate labels"):
        bart.convert_from_dtlpy(str(sentiment_layout(tmp_path / "bart", train=4, validation=2)))


def test_ambiguous_and_unanswered_questions_are_reported_not_guessed(tmp_path, caplog):
    write_item(tmp_path / "train", "two-questions", legacy_item({"1": ["first", "second"]}),
               [text_annotation("1", "a"), text_annotation("1", "b"), text_annotation("1", "c")])
    write_item(tmp_path / "train", "paired", legacy_item({"1": ["first", "second"]}),
               [text_annotation("1", "a"), text_annotation("1", "b")])
    train = read_layout(tmp_path)["train"]
    paired, ambiguous = train.items  # files are read in name order
    assert ambiguous.references == {}
    assert any("cannot tell which answer" in s.reason for s in train.skipped)
    assert [paired.references[q] for q in paired.parsed.questions] == [["a"], ["b"]]
    assert "cannot tell which answer" in caplog.text


def test_training_keys_are_validated_and_seed_is_declared_once():
    from adapters.core.errors import ConfigurationError
    from adapters.core.module_loader import available_modules, load_model_module
    from adapters.dataloop.local_runner import validate_configuration

    for module_name in available_modules():
        names = [s.name for s in load_model_module(module_name).HuggingAdapter.settings]
        assert len(names) == len(set(names)), module_name
        assert {"epochs", "learning_rate", "train_batch_size", "seed"} <= set(names)
    for bad in ({"learning_rate": 0}, {"warmup_ratio": 1.5}, {"train_batch_size": 0}, {"max_target_length": 0}):
        with pytest.raises(ConfigurationError):
            validate_configuration({"module_name": "models.t5_email", **bad})


def test_a_module_without_training_rows_is_refused_before_the_data_is_read(make_adapter, tmp_path):
    from adapters.core.errors import ConfigurationError
    from adapters.core.hugging_adapter import HuggingAdapter
    from adapters.training.trainer import prepare
    from models.distilbert_sst2 import HuggingAdapter as Sentiment

    class Untrainable(Sentiment):
        training_rows = HuggingAdapter.training_rows

    adapter = make_adapter("models.distilbert_sst2")
    adapter.__class__ = Untrainable
    with pytest.raises(ConfigurationError, match="cannot be fine-tuned"):
        prepare(adapter, tmp_path / "no-such-folder")


# ----- training rows, as each module builds them -----
def training_question(text: str):
    from adapters.core.prompt_items import Question
    return Question(0, "item", "1", "0", text)


def test_dialogpt_training_answers_are_cut_to_what_generation_could_write(make_adapter):
    """The answer's tokens and its end token: whole when they fit the budget, else the budget ending in eos."""
    adapter = make_adapter("models.dialogpt_large", max_new_tokens=8)
    eos = adapter.tokenizer.eos_token_id
    words = "the team lunch is scheduled for noon on thursday at the station".split()
    utterance = adapter.chat.utterance
    fitting = next(text for text in (" ".join(words[:n]) for n in range(1, len(words) + 1))
                   if len(utterance(text)) == 8)  # exactly the budget, end token included
    for reference, expected in ((fitting, utterance(fitting)),
                                (fitting + " lunch lunch", utterance(fitting + " lunch lunch")[:7] + [eos])):
        (row,) = adapter.training_rows(training_question("hi"), [], reference)
        assert row["labels"][-len(expected):] == expected and row["input_ids"][-len(expected):] == expected
        assert row["attention_mask"] == [1] * len(row["input_ids"])


def test_t5_training_targets_are_cut_to_max_target_length(make_adapter):
    adapter = make_adapter("models.t5_email", max_target_length=4)
    (row,) = adapter.training_rows(training_question("meeting"), [], "please send the invoice by friday")
    assert len(row["labels"]) == 4 and row["labels"][-1] == adapter.tokenizer.eos_token_id


def test_nli_fine_tuning_needs_an_entailment_label_wherever_it_is(tmp_path):
    from adapters.core.errors import ConfigurationError
    from models.bart_large_mnli import HuggingAdapter
    from tests.model_factory import build_bart_nli
    for index, labels in enumerate(({0: "contradiction", 1: "entailment"}, {0: "ENTAILMENT", 1: "neutral"})):
        adapter = HuggingAdapter({"model_path": str(build_bart_nli(tmp_path / f"nli-{index}", id2label=labels))})
        adapter.prepare_training(["a", "b"])  # an entailment label at index 1 or 0: fine
    adapter = HuggingAdapter({"model_path": str(build_bart_nli(tmp_path / "no-nli", id2label={0: "yes", 1: "no"}))})
    with pytest.raises(ConfigurationError, match="'entailment' label"):
        adapter.prepare_training(["a", "b"])


def test_a_classifier_keeps_its_head_when_the_answers_use_its_own_labels(make_adapter):
    adapter = make_adapter("models.distilbert_sst2")
    model = adapter.model
    adapter.prepare_training(["POSITIVE", "NEGATIVE", "POSITIVE"])
    assert adapter.model is model
    adapter.prepare_training(["POSITIVE", "spam"])  # a label the head does not have: a new head
    assert adapter.model is not model and set(adapter.model.config.label2id) == {"POSITIVE", "spam"}


def test_user_text_in_training_errors_is_shortened(make_adapter):
    """A 200 KB reference appeared whole in a DatasetError (which the platform's train_model raises), and an
    unknown label listed eight 100 KB labels: a 3.2 MB line."""
    bart = make_adapter("models.bart_large_mnli", candidate_labels=["positive", "negative"])
    with pytest.raises(DatasetError, match="is not one of the candidate labels") as error:
        bart.training_rows(training_question("hi"), [], "x" * 200_000)
    assert len(str(error.value)) < 400
    classifier = make_adapter("models.distilbert_sst2")
    classifier.prepare_training([f"{i}" + "y" * 100_000 for i in range(8)])  # a new head of eight long labels
    with pytest.raises(DatasetError, match="is not among the training labels") as error:
        classifier.training_rows(training_question("hi"), [], "z" * 100_000)
    assert len(str(error.value)) < 800
    with pytest.raises(DatasetError, match="at least 2 different labels") as error:
        classifier.prepare_training(["w" * 200_000] * 3)
    assert len(str(error.value)) < 400
