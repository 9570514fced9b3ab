"""Training options and data whose effect must show: LoRA on a classifier, answers a model wrote, several
references per question (the best one not first)."""
from __future__ import annotations

import pytest
import torch
from rouge_score import rouge_scorer
from safetensors.torch import load_file

from adapters.training.dataset import read_layout
from adapters.training.layout import text_annotation, write_item
from adapters.training.metrics import accuracy, macro_f1, rouge
from tests.prompt_factory import current_item
from tests.test_training import FAST, local_adapter, predicted_texts, sentiment_layout


def test_lora_on_a_classifier_trains_its_new_head_whole_and_saves_it_merged(tiny_models, tmp_path):
    """Under LoRA the body is frozen (rank-r updates only) and a classifier's head trains whole: a new head, drawn
    at random for labels the model did not have, would otherwise stay random."""
    data = sentiment_layout(tmp_path / "data", labels=("good", "bad"), train=32, validation=12)
    adapter, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=10, **FAST, lora_r=8,
                               lora_alpha=16, lora_dropout=0.0)
    adapter.convert_from_dtlpy(str(data))  # the new head is in place, at its random start
    before = {k: v.clone() for k, v in adapter.hugging.model.state_dict().items()}
    head = [k for k in before if k.startswith(("pre_classifier.", "classifier."))]
    assert len(head) == 4
    history = adapter.train(str(data), str(tmp_path / "out"))
    adapter.save(str(tmp_path / "out"))
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert saved.keys() == before.keys()  # plain keys: no LoRA or peft copies of the head
    assert all(not torch.equal(saved[k], before[k]) for k in head)  # the whole head trained
    assert torch.equal(saved["distilbert.embeddings.word_embeddings.weight"],
                       before["distilbert.embeddings.word_embeddings.weight"])  # not a LoRA target: frozen
    query = "distilbert.transformer.layer.0.attention.q_lin.weight"
    assert not torch.equal(saved[query], before[query])  # a LoRA target: its update is merged in
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.2  # it learns (slowly: the body is random)
    reloaded, _ = local_adapter("distilbert-sst2", tmp_path / "out")
    texts = ["the film was wonderful today", "the film was awful today", "the film was boring today"]
    assert predicted_texts(reloaded, texts) == predicted_texts(adapter, texts)


def test_answers_a_model_wrote_are_training_references_and_only_the_evaluated_models_are_predictions(tmp_path):
    """The layout's rule: every text answer on a prompt is a reference, whoever wrote it (answers a model wrote
    and a person accepted or edited keep the model's name); when a model is evaluated, its own are its predictions
    and other models' answers are neither."""
    subset = tmp_path / "data" / "train"
    write_item(subset, "a", current_item({"1": ["the film was great"]}),
               [text_annotation("1", "pos", model_name="distilbert-sst2")])
    write_item(subset, "b", current_item({"1": ["the film was awful"]}), [text_annotation("1", "neg")])
    write_item(subset, "c", current_item({"1": ["the film was fine"]}),
               [text_annotation("1", "pos", model_name="another-model"), text_annotation("1", "pos")])
    training = read_layout(tmp_path / "data")["train"]
    assert [sorted(texts for texts in item.references.values()) for item in training.items] == [
        [["pos"]], [["neg"]], [["pos", "pos"]]]
    evaluated = read_layout(tmp_path / "data", predictions_of="distilbert-sst2")["train"]
    assert [list(item.references.values()) for item in evaluated.items] == [[], [["neg"]], [["pos"]]]  # a person's
    assert [list(item.predictions.values()) for item in evaluated.items] == [[["pos"]], [], []]


def test_a_question_is_scored_against_its_best_reference_wherever_it_stands():
    """Several references per question: ROUGE takes the best one, accuracy and F1 the one the prediction names;
    the best is put second, so a metric that reads only the first fails."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    prediction = "please send the invoice by friday"
    references = ["the invoice is late", "send the invoice friday please"]
    best = {name: max(scorer.score(ref, prediction)[name].fmeasure for ref in references)
            for name in ("rouge1", "rouge2", "rougeL")}
    assert best["rouge1"] > scorer.score(references[0], prediction)["rouge1"].fmeasure + 0.2
    assert rouge([prediction], [references]) == pytest.approx(best, abs=1e-12)  # float64 of one score
    assert accuracy(["neutral"], [["positive", "neutral"]]) == 1.0
    assert macro_f1(["neutral", "positive"], [["positive", "neutral"], ["positive"]]) == 1.0
