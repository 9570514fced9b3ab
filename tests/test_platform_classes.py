"""Class outputs and the evaluation the platform shows, through dtlpy's own `predict_items`, `train_model` and
`evaluate_model` (and dtlpymetrics, dtlpy's scoring library), with only the platform's HTTP layer faked
(tests/fake_platform.py): classifications on text items, free text on prompt items, labels on the model entity,
class annotations read for training and evaluation, and the scores files of the evaluation views."""
from __future__ import annotations

import json
import logging
import tempfile

import dtlpy as dl
import pytest

from adapters.core.hugging_adapter import LoadedItem
from adapters.dataloop.model_adapter import ModelAdapter
from adapters.training.dataset import DatasetError
from adapters.training.metrics import question_rouge
from tests.conftest import FAST_SETTINGS, MODULE_MODELS
from tests.fake_platform import FakePlatform, answer_json, file_item, prompt_file_item
from tests.prompt_factory import current_item

MODEL = "my-classifier"
TEXTS = ["I loved every minute of it", "The worst film I have ever seen", "The staff were friendly",
         "Terrible customer support, nobody answered", "A beautiful, moving story"]


@pytest.fixture(scope="module")
def split_classifier(sharp_classifiers, tmp_path_factory):
    """The sharpened tiny DistilBERT with its output bias moved so that TEXTS split between its two labels (the
    sharpened one calls them all POSITIVE), so right and wrong answers both occur."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    folder = tmp_path_factory.mktemp("split") / "distilbert"
    shutil.copytree(sharp_classifiers["models.distilbert_sst2"], folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        logits = torch.cat([model(**tokenizer(text, return_tensors="pt")).logits for text in TEXTS])
        differences = (logits[:, 1] - logits[:, 0]).sort().values
        model.classifier.bias[1] -= float(differences[1:3].mean())  # 2 of 5 stay POSITIVE
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def platform(monkeypatch, tmp_path):
    """The fake platform with its dataset; the working folder is a fresh one (dtlpymetrics writes beside it)."""
    fake = FakePlatform()
    fake.install_dataset(monkeypatch, tmp_path / "artifacts")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return fake


def deployed(platform, model_dir, module: str, output_type: str = "class", **configuration) -> ModelAdapter:
    configuration = {"module_name": module, "model_path": str(model_dir), **FAST_SETTINGS.get(module, {}),
                     **({"output_type": output_type} if output_type else {}), **configuration}
    return ModelAdapter(model_entity=platform.model(MODEL, configuration))


def text_items(platform, tmp_path, texts=TEXTS, folder="/reviews", references=None, first_id=1):
    """Text items (ObjectId-like ids, as dtlpy splits a dataset by id), each with its reference annotations."""
    items = []
    for index, text in enumerate(texts):
        item_id = f"{index + first_id:024x}"
        annotations = references[index] if references else []
        items.append(platform.add_item(file_item(tmp_path / "data", f"{folder}/r{index}.txt", text, item_id,
                                                 "text/plain"), annotations))
    return items


def label(name: str, model_name: str | None = None, confidence: float = 0.9) -> dict:
    """A class annotation on a text item (`model_name` None: a person's ground truth)."""
    metadata: dict = {"system": {}}
    if model_name is not None:
        metadata = {"system": {"model": {"name": model_name}}, "user": {"model": {"name": model_name,
                                                                                 "confidence": confidence}}}
    return {"type": "class", "label": name, "coordinates": [], "metadata": metadata}


def mine(platform, item_id: str) -> list[tuple[str, str]]:
    """(type, label or text) of this model's annotations on the item."""
    return [(a["type"], a["label"] if a["type"] == "class" else a["coordinates"]) for a in platform.annotations[item_id]
            if ((a["metadata"].get("user") or {}).get("model") or {}).get("name") == MODEL]


# ----- predict_items: classifications on text items, free text on prompt items -----
def test_class_output_classifies_text_items_and_keeps_prompt_items_readable(split_classifier, tmp_path, platform):
    adapter = deployed(platform, split_classifier, "models.distilbert_sst2")
    model = adapter.model_entity
    labels = adapter.hugging.label_set()
    assert (model.output_type, model.labels) == ("class", labels) and len(labels) == 2
    items = text_items(platform, tmp_path, references=[[label("NEGATIVE"), label("POSITIVE", "other-model")]]
                       + [[]] * (len(TEXTS) - 1))
    chat = platform.add_item(prompt_file_item(tmp_path / "data", "/chat/c.json", current_item({"1": [TEXTS[0]]}),
                                              f"{99:024x}"))
    _, annotations = adapter.predict_items([*items, chat])
    expected = adapter.hugging.predict([current_item({"1": [text]}) for text in TEXTS])
    for item, answer in zip(items, expected):
        (classification,) = [a for a in annotations if a.item_id == item.id]
        free_text = answer.annotations[0]
        assert classification.type == "class" and classification.label == free_text.coordinates
        assert classification.metadata["user"]["model"]["confidence"] == pytest.approx(
            free_text.metadata["user"]["model"]["confidence"])
        assert classification.metadata["user"]["model_output"]["label_set"] == labels
    assert len({a.label for a in annotations if a.type == "class"}) == 2  # answers differ per text
    others = [(a["label"], ((a["metadata"].get("user") or {}).get("model") or {}).get("name"))
              for a in platform.annotations[items[0].id]][:2]
    assert others == [("NEGATIVE", None), ("POSITIVE", "other-model")]  # a person's and another model's stay
    (answer,) = [a for a in annotations if a.item_id == chat.id]
    assert answer.type == "text" and answer.metadata["user"]["model_output"]["label_set"] == labels
    messages = dl.PromptItem.from_item(chat).to_messages(model_name=MODEL)  # readable: no class annotation on it
    assert [m["role"] for m in messages] == ["user", "assistant"]
    adapter.predict_items(items[:1])  # predicting again replaces this model's classification
    assert [kind for kind, _ in mine(platform, items[0].id)] == ["class"]


def test_text_output_answers_text_items_with_free_text(split_classifier, tmp_path, platform):
    adapter = deployed(platform, split_classifier, "models.distilbert_sst2",
                       output_type="text")
    assert adapter.model_entity.output_type == "text"
    (item,) = text_items(platform, tmp_path, TEXTS[:1])
    adapter.predict_items([item])
    assert [kind for kind, _ in mine(platform, item.id)] == ["text"]


def test_the_entity_is_told_what_it_lacks_in_one_update_and_not_again(split_classifier, platform, caplog):
    """A load sets the entity's `embeddings_size`, output type and labels in one update; the next load of the same
    model (another execution) finds them said and sets nothing (dtlpy's own configuration defaults aside)."""
    with caplog.at_level(logging.INFO, logger="adapters.dataloop.model_adapter"):
        adapter = deployed(platform, split_classifier, "models.distilbert_sst2")
        entity = adapter.model_entity
        assert entity.labels == ["NEGATIVE", "POSITIVE"] and entity.output_type == "class"
        assert entity.configuration["embeddings_size"] == adapter.hugging.embedding_size
        ModelAdapter(model_entity=entity)
    said = [r.getMessage() for r in caplog.records if r.name == "adapters.dataloop.model_adapter"
            and ": set " in r.getMessage()]
    size = adapter.hugging.embedding_size
    assert said == [f"model {MODEL!r}: set embeddings_size {size}, outputType 'class', 2 labels"]


def test_zero_shot_multi_label_gives_one_classification_per_label_at_the_threshold(sharp_classifiers, tmp_path,
                                                                                   platform, caplog):
    labels = ["billing", "bug", "praise", "question"]
    path = sharp_classifiers["models.bart_large_mnli"]
    scoring = deployed(platform, path, "models.bart_large_mnli", candidate_labels=labels, multi_label=True)
    (details,) = scoring.hugging.predict([current_item({"1": [TEXTS[0]]})])[0].annotations
    scores = dict(zip(details.metadata["user"]["model_output"]["labels"],
                      details.metadata["user"]["model_output"]["scores"]))
    ranked = sorted(scores.values())
    threshold = (ranked[1] + ranked[2]) / 2  # two labels reach it, two do not
    adapter = deployed(platform, path, "models.bart_large_mnli", candidate_labels=labels, multi_label=True,
                       threshold=threshold)
    assert adapter.model_entity.labels == labels
    items = text_items(platform, tmp_path, TEXTS[:3])
    adapter.predict_items(items)
    reached = {name: score for name, score in scores.items() if score >= threshold}
    assert len(reached) == 2
    assert sorted(name for _, name in mine(platform, items[0].id)) == sorted(reached)
    confidences = {a["label"]: a["metadata"]["user"]["model"]["confidence"] for a in platform.annotations[items[0].id]}
    assert confidences == pytest.approx(reached)
    strict = deployed(platform, path, "models.bart_large_mnli", candidate_labels=labels, multi_label=True,
                      threshold=1.0)
    with caplog.at_level(logging.WARNING, logger="dtlpy"):
        strict.predict_items(items)  # no label reaches it: the answer is no classification, and it succeeds
    assert not [r for r in caplog.records if "upload receives 0 annotations" in r.getMessage()]  # nothing to upload
    assert all(mine(platform, item.id) == [] for item in items)  # the earlier classifications went


def test_a_single_label_zero_shot_class_output_is_the_best_label(sharp_classifiers, tmp_path, platform):
    adapter = deployed(platform, sharp_classifiers["models.bart_large_mnli"], "models.bart_large_mnli",
                       candidate_labels=["billing", "bug", "praise"], threshold=0.99)
    (item,) = text_items(platform, tmp_path, TEXTS[:1])
    adapter.predict_items([item])
    (best,) = adapter.hugging.predict([current_item({"1": [TEXTS[0]]})])[0].annotations
    assert mine(platform, item.id) == [("class", best.coordinates)]  # the threshold is for multi_label only


# ----- evaluate_model: dtlpy's default (dtlpymetrics) for classes, this package's scores for text -----
def evaluated(platform, adapter: ModelAdapter) -> tuple[list[dict], dict]:
    adapter.evaluate_model(adapter.model_entity, platform.dataset)
    model_id = adapter.model_entity.id
    interpolated = json.loads(platform.uploads[f"/.modelscores/{model_id}-interpolated.json"])
    return platform.scores(model_id), interpolated


def test_evaluate_model_with_class_output_scores_classifications_with_dtlpymetrics(split_classifier, tmp_path,
                                                                                   platform):
    adapter = deployed(platform, split_classifier, "models.distilbert_sst2")
    adapter.model_entity.dataset_id = "the-training-dataset"  # evaluated on another dataset: the plots say which
    truth = ["NEGATIVE", "POSITIVE", "NEGATIVE", "POSITIVE", "NEGATIVE"]
    platform.labels = ["NEGATIVE", "POSITIVE"]
    items = text_items(platform, tmp_path, references=[[label(t)] for t in truth])
    rows, interpolated = evaluated(platform, adapter)
    dl.BaseModelAdapter.evaluate(adapter, adapter.model_entity, platform.dataset, None)  # dtlpy's own scoring
    assert sorted(rows, key=str) == sorted(platform.scores(adapter.model_entity.id), key=str)  # row for row
    said = {item.id: mine(platform, item.id) for item in items}
    assert all(len(answers) == 1 and answers[0][0] == "class" for answers in said.values())
    right = [said[item.id][0][1] == t for item, t in zip(items, truth)]
    assert 0 < sum(right) < len(right)
    by_item = {row["item_id"]: row for row in rows}
    assert {row["annotation_type"] for row in rows} == {"class"}
    assert [float(by_item[item.id]["label_score"]) for item in items] == [float(r) for r in right]
    assert sorted(interpolated) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"]
    assert adapter.evaluation_metrics["accuracy"] == pytest.approx(sum(right) / len(right))
    samples = {s.legend: s for s in platform.metric_samples}
    assert {s.figure for s in platform.metric_samples} == {"evaluation"}
    assert samples["accuracy"].y == pytest.approx(sum(right) / len(right))
    assert platform.metric_datasets == [platform.dataset.id]


def test_evaluate_model_with_text_output_writes_the_same_files_with_this_packages_scores(split_classifier, tmp_path,
                                                                                         platform):
    """Free text has no dtlpymetrics scorer: the adapter writes /.modelscores/<id>.csv in dtlpymetrics' columns
    (label_score 1 or 0, not dtlpymetrics' 0.667 for a wrong class) and dtlpymetrics interpolates it."""
    adapter = deployed(platform, split_classifier, "models.distilbert_sst2",
                       output_type="text")
    truth = ["NEGATIVE", "POSITIVE", "NEGATIVE", "POSITIVE", "NEGATIVE"]
    items = text_items(platform, tmp_path, references=[[answer_json(None, t, None)] for t in truth])
    for item in items:  # a text item's reference is a text annotation on no prompt
        del platform.annotations[item.id][0]["metadata"]["system"]["promptId"]
    chat = platform.add_item(prompt_file_item(tmp_path / "data", "/chat/c.json", current_item({"1": [TEXTS[1]]}),
                                              f"{99:024x}"), [answer_json("1", "POSITIVE", None)])
    rows, interpolated = evaluated(platform, adapter)
    said = {item.id: mine(platform, item.id)[0][1] for item in [*items, chat]}
    expected = {item.id: t for item, t in zip([*items, chat], [*truth, "POSITIVE"])}
    assert len(rows) == 6 and {row["annotation_type"] for row in rows} == {"text"}
    for row in rows:
        right = float(said[row["item_id"]] == expected[row["item_id"]])
        assert (float(row["label_score"]), float(row["annotation_score"]), float(row["geometry_score"])) == (right,) * 3
        assert (row["first_label"], row["second_label"]) == (expected[row["item_id"]], said[row["item_id"]])
        stored = {a["id"]: a for a in platform.annotations[row["item_id"]]}
        assert stored[row["first_id"]]["coordinates"] == row["first_label"]
        assert stored[row["second_id"]]["metadata"]["user"]["model"]["name"] == MODEL
    accuracy = sum(said[i] == expected[i] for i in said) / len(said)
    assert adapter.evaluation_metrics["accuracy"] == pytest.approx(accuracy)
    assert "1" in interpolated and set(interpolated["1"]) == {"recall", "precision", "confidence"}


@pytest.mark.parametrize("output_type", ["class", "text"])
@pytest.mark.parametrize("as_dict", [True, False], ids=["filter as JSON", "dl.Filters"])
def test_evaluate_model_scores_only_the_items_its_filter_selects(split_classifier, tmp_path, platform, as_dict,
                                                                 output_type, monkeypatch):
    """A pipeline passes the evaluation's filter as JSON, the SDK as `dl.Filters`: either way only the items it
    selects are answered, downloaded and scored, with their annotations (`annotation_options` JSON), also after
    an evaluation with another filter (dtlpy's own `evaluate` scores every file in its shared download folder of
    the dataset, where that evaluation's files stay)."""
    adapter = deployed(platform, split_classifier, "models.distilbert_sst2", output_type=output_type)
    adapter.model_entity.dataset_id = "the-training-dataset"  # evaluated on another dataset
    platform.labels = ["NEGATIVE", "POSITIVE"]
    reference = label if output_type == "class" else (lambda name: answer_json(None, name, None))
    selected = text_items(platform, tmp_path, TEXTS[:3], folder="/eval",
                          references=[[reference("POSITIVE")] for _ in range(3)])
    others = text_items(platform, tmp_path, TEXTS[3:5], folder="/other", first_id=10,
                        references=[[reference("NEGATIVE")] for _ in range(2)])
    if output_type == "text":
        for item in [*selected, *others]:  # a text item's reference is a text annotation on no prompt
            del platform.annotations[item.id][0]["metadata"]["system"]["promptId"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for chosen, left_out, folder in [(others, selected, "/other"), (selected, others, "/eval")]:
        query = dl.Filters(field="dir", values=folder)
        adapter.evaluate_model(adapter.model_entity, platform.dataset, filters=query.prepare() if as_dict else query)
        if chosen is others:  # the first evaluation answers only the items it selects
            assert all(mine(platform, item.id) == [] for item in left_out)
        rows = platform.scores(adapter.model_entity.id)
        assert sorted(row["item_id"] for row in rows) == sorted(i.id for i in chosen)
        assert {row["annotation_type"] for row in rows} == {output_type}
        assert {(row["model_id"], row["dataset_id"]) for row in rows} == {(adapter.model_entity.id,
                                                                          platform.dataset.id)}
    assert platform.metric_datasets[-1] == platform.dataset.id  # the evaluation's figure names its dataset
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("hf-adapter-evaluate-")]  # nothing left


def test_an_evaluation_whose_filter_selects_nothing_says_so_in_one_line(split_classifier, tmp_path, platform):
    adapter = deployed(platform, split_classifier, "models.distilbert_sst2")
    text_items(platform, tmp_path, TEXTS[:2], references=[[label("POSITIVE")] for _ in range(2)])
    with pytest.raises(DatasetError) as refused:
        adapter.evaluate_model(adapter.model_entity, platform.dataset, filters=dl.Filters(field="dir", values="/none"))
    assert str(refused.value) == (f"the evaluation's filter selects no item of dataset {platform.dataset.name!r} "
                                  f"({platform.dataset.id}): nothing to evaluate")
    assert not [name for name in platform.uploads if name.startswith("/.modelscores/")]


def test_a_generators_scores_are_rouge_per_question(tiny_models, tmp_path, platform):
    adapter = deployed(platform, tiny_models[MODULE_MODELS["models.dialogpt_large"]], "models.dialogpt_large",
                       output_type=None, do_sample=False, max_new_tokens=12)
    texts = ["meeting monday", "Who won the game last night?"]
    (first, second), _ = adapter.hugging.predict_with_report([LoadedItem(f"{i}.txt", text=t) for i, t in
                                                              enumerate(texts)])
    answers = [first.annotations[0].coordinates, second.annotations[0].coordinates]
    # the answer's words reversed, and one more: every unigram matches, the longest common sequence does not
    references = [" ".join(reversed(answer.split())) + " indeed" for answer in answers]
    items = text_items(platform, tmp_path, texts, references=[[answer_json(None, r, None)] for r in references])
    for item in items:
        del platform.annotations[item.id][0]["metadata"]["system"]["promptId"]
    rows, _ = evaluated(platform, adapter)
    for row, item, reference in zip(sorted(rows, key=lambda r: r["item_id"]), items, references):
        said = mine(platform, item.id)[0][1]
        expected = question_rouge(said, [reference])
        assert {k: float(row[k]) for k in expected} == pytest.approx(expected)
        assert float(row["label_score"]) == float(row["annotation_score"]) == pytest.approx(expected["rougeL"])
        assert row["first_label"] == row["second_label"] == ""  # texts are no labels
    assert any(float(r["rouge1"]) > float(r["rougeL"]) > 0 for r in rows)  # the scores tell the columns apart
    assert adapter.evaluation_metrics["rougeL"] == pytest.approx(sum(float(r["rougeL"]) for r in rows) / 2)


def test_a_models_classifications_are_scored_by_the_most_confident_whatever_their_order(tmp_path):
    """A multi-label answer is several classifications; the one scored is the most confident, not the first stored."""
    from adapters.training.dataset import read_subset
    from adapters.training.evaluation import evaluate_annotations
    from adapters.training.layout import class_annotation, write_text_item
    for index, (truth, stored) in enumerate([("bug", [("billing", 0.3), ("bug", 0.8)]),
                                             ("billing", [("praise", 0.4), ("billing", 0.6), ("bug", 0.5)])]):
        write_text_item(tmp_path / "evaluation", f"t{index}", "some text",
                        [class_annotation(truth), *(class_annotation(label, MODEL, confidence)
                                                    for label, confidence in stored)])
    subset = read_subset(tmp_path / "evaluation", "evaluation", predictions_of=MODEL)
    assert evaluate_annotations("classification", subset, ["billing", "bug", "praise"])["accuracy"] == 1.0


def test_evaluation_refuses_class_labels_the_model_does_not_know_naming_them_short(split_classifier, tmp_path,
                                                                                   platform):
    adapter = deployed(platform, split_classifier, "models.distilbert_sst2")
    long_label = "neutral " * 2000
    text_items(platform, tmp_path, TEXTS[:3], references=[[label("NEGATIVE")], [label("mixed")], [label(long_label)]])
    with pytest.raises(Exception) as raised:
        adapter.evaluate_model(adapter.model_entity, platform.dataset)
    message = str(raised.value)
    assert "2 class label(s) the model does not know" in message and "'mixed'" in message
    assert long_label not in message and len(message) < 1000
    assert not platform.uploads  # nothing scored


# ----- train_model: class annotations, labels on the model entity -----
def training_items(platform, tmp_path, labels):
    rows = []
    for subset, count in (("train", 8), ("validation", 4)):
        for index in range(count):
            item_id = f"{len(rows) + 1:024x}"
            text = ("great wonderful film" if index % 2 == 0 else "awful boring film") + f" {index}"
            platform.add_item(file_item(tmp_path / "data", f"/{subset}/t{index}.txt", text, item_id, "text/plain"),
                              [label(labels[index % 2]), answer_json(None, "a text note", None)])
            rows.append(item_id)
    return rows


def trainable(platform, model_dir, module, **configuration) -> tuple[ModelAdapter, dl.Model]:
    adapter = deployed(platform, model_dir, module, epochs=1, learning_rate=1e-2, train_batch_size=8,
                       warmup_ratio=0.0, seed=0, **configuration)
    model = adapter.model_entity
    model.metadata["system"] = {"subsets": {
        name: dl.Filters(field="dir", values=f"/{name}").prepare() for name in ("train", "validation")}}
    return ModelAdapter(), model


def test_train_model_learns_class_annotations_and_puts_the_new_labels_on_the_model(tiny_models, tmp_path, platform):
    training_items(platform, tmp_path, ["happy", "sad"])
    adapter, model = trainable(platform, tiny_models["distilbert"], "models.distilbert_sst2")
    adapter.train_model(model)
    downloads = [call for call in platform.calls if call[0] == "dataset.download"]
    assert len(downloads) == 2 and all(count == (8, 4)[i] for i, (_, _, count) in enumerate(downloads))
    assert (model.output_type, model.labels) == ("class", ["happy", "sad"])
    assert adapter.hugging.label_set() == ["happy", "sad"]
    assert len(adapter._prepared.train_rows) == 8  # the class annotations; the text notes are not downloaded


def test_zero_shot_training_refuses_class_labels_that_are_no_candidate_labels(tiny_models, tmp_path, platform):
    training_items(platform, tmp_path, ["billing", "x" * 5000])
    adapter, model = trainable(platform, tiny_models["bart"], "models.bart_large_mnli",
                               candidate_labels=["billing", "bug"])
    with pytest.raises(Exception) as raised:
        adapter.train_model(model)
    message = str(raised.value)
    assert "is not one of the candidate labels 'billing', 'bug'" in message and "x" * 5000 not in message
