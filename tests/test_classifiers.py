"""DistilBERT sentiment and BART zero-shot: equal to transformers' own pipelines on the same weights."""
import logging

import pytest
import torch
from transformers import pipeline

from tests.model_factory import build_bart_nli, build_distilbert_classifier, sharpen
from tests.prompt_factory import current_item, legacy_item
from tests.tolerances import LOGIT_ATOL, PROBABILITY_ATOL, PROBABILITY_SUM_ATOL

TEXTS = ["I love this movie, it is wonderful!", "Terrible service and a boring, awful plot.", "ok",
         "Café au lait in Zürich was naïve 😂 but fine", "The quarterly report is attached; please review it by Friday."]


def sharpened_models(root, build, label_sets: dict, config_overrides: dict | None = None) -> dict:
    """One sharpened model per named label set (None: the builder's default labels), each with its own weights;
    `config_overrides` maps a name to its config changes."""
    return {name: sharpen(build(root / name, id2label=labels, config_overrides=(config_overrides or {}).get(name)),
                          seed)
            for seed, (name, labels) in enumerate(label_sets.items())}


@pytest.fixture(scope="module")
def sentiment_dirs(tmp_path_factory):
    return sharpened_models(tmp_path_factory.mktemp("classifiers"), build_distilbert_classifier,
                            {"two": None, "three": {0: "neg", 1: "neu", 2: "pos"},
                             "multi_label": {0: "urgent", 1: "billing", 2: "bug"}, "one_label": {0: "spam"}},
                            {"multi_label": {"problem_type": "multi_label_classification"}})


@pytest.mark.parametrize("which", ["two", "three"])
def test_sentiment_equals_text_classification_pipeline(sentiment_dirs, which):
    assert_equals_text_classification_pipeline(sentiment_dirs[which])


@pytest.mark.parametrize("which", ["multi_label", "one_label"])
def test_multi_label_and_one_label_classifiers_score_each_label_with_a_sigmoid_like_the_pipeline(sentiment_dirs,
                                                                                               which):
    """transformers scores a multi-label or one-label classifier with a sigmoid per label, never a softmax."""
    scores = assert_equals_text_classification_pipeline(sentiment_dirs[which])
    if which == "one_label":  # a softmax over one label would be 1.0 for every text
        assert all(0.0 < s["spam"] < 1.0 for s in scores)
    else:  # independent labels: their scores do not sum to 1
        assert all(abs(sum(s.values()) - 1.0) > 1e-3 for s in scores)


def assert_equals_text_classification_pipeline(model_dir) -> list[dict]:
    """The adapter's answers equal the text-classification pipeline's on TEXTS; returns the scores per text."""
    from models.distilbert_sst2 import HuggingAdapter
    adapter = HuggingAdapter({"model_path": str(model_dir), "batch_size": 2})
    reference = pipeline("text-classification", model=str(model_dir), top_k=None)(TEXTS)
    (collection,) = adapter.predict([legacy_item({"p": TEXTS})])
    assert len(collection.annotations) == len(reference) == len(TEXTS)
    for annotation, expected in zip(collection.annotations, reference):
        best = max(expected, key=lambda r: r["score"])
        output = annotation.metadata["user"]["model_output"]
        assert annotation.coordinates == best["label"] == output["label"]
        # the pipeline, one text unpadded: float32 rounding of the logits (tests/tolerances.py)
        assert annotation.metadata["user"]["model"]["confidence"] == pytest.approx(best["score"], abs=PROBABILITY_ATOL)
        assert output["scores"] == pytest.approx({r["label"]: r["score"] for r in expected}, abs=PROBABILITY_ATOL)
        assert adapter.model.config.id2label[output["class_index"]] == best["label"]
    confidences = [a.metadata["user"]["model"]["confidence"] for a in collection.annotations]
    assert len({round(c, 6) for c in confidences}) == len(TEXTS), confidences  # texts are told apart
    return [a.metadata["user"]["model_output"]["scores"] for a in collection.annotations]


@pytest.fixture(scope="module")
def nli_dirs(tmp_path_factory):
    # "swapped": another NLI checkpoint whose entailment label sits at index 0
    return sharpened_models(tmp_path_factory.mktemp("nli"), build_bart_nli,
                            {"mnli": None, "swapped": {0: "ENTAILMENT", 1: "neutral", 2: "CONTRADICTION"}})


@pytest.mark.parametrize("which", ["mnli", "swapped"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_zero_shot_equals_pipeline(nli_dirs, which, multi_label):
    from models.bart_large_mnli import HuggingAdapter
    labels = ["sports", "politics", "cooking", "travel"]
    template = "The topic is {}."
    adapter = HuggingAdapter({"model_path": str(nli_dirs[which]), "candidate_labels": labels,
                              "hypothesis_template": template, "multi_label": multi_label, "batch_size": 3})
    classifier = pipeline("zero-shot-classification", model=str(nli_dirs[which]))
    (collection,) = adapter.predict([current_item({str(i): [text] for i, text in enumerate(TEXTS)})])
    assert len(collection.annotations) == len(TEXTS)
    for annotation, text in zip(collection.annotations, TEXTS):
        expected = classifier(text, candidate_labels=labels, hypothesis_template=template, multi_label=multi_label)
        output = annotation.metadata["user"]["model_output"]
        assert output["sequence"] == expected["sequence"] == text
        assert output["scores"] == pytest.approx(expected["scores"], abs=PROBABILITY_ATOL)  # the pipeline's rounding
        assert set(output["labels"]) == set(labels)
        assert dict(zip(output["labels"], output["scores"])) == pytest.approx(
            dict(zip(expected["labels"], expected["scores"])), abs=PROBABILITY_ATOL)
        assert annotation.coordinates == output["labels"][0]
        assert output["hypothesis_template"] == template and output["multi_label"] is multi_label
        if not multi_label:
            assert sum(output["scores"]) == pytest.approx(1.0, abs=PROBABILITY_SUM_ATOL)  # one float32 softmax


def test_single_label_is_scored_independently_like_the_pipeline(nli_dirs):
    from models.bart_large_mnli import HuggingAdapter
    adapter = HuggingAdapter({"model_path": str(nli_dirs["mnli"]), "candidate_labels": ["urgent"]})
    expected = pipeline("zero-shot-classification", model=str(nli_dirs["mnli"]))(TEXTS[0], candidate_labels=["urgent"])
    (collection,) = adapter.predict([legacy_item({"p": [TEXTS[0]]})])
    assert collection.annotations[0].metadata["user"]["model"]["confidence"] == pytest.approx(expected["scores"][0],
                                                                                         abs=PROBABILITY_ATOL)


def test_prompt_metadata_overrides_labels_and_bad_overrides_are_reported(make_adapter):
    adapter = make_adapter("models.bart_large_mnli")
    item = current_item({"1": ["hello"], "2": ["bye"], "3": ["again"]},
                        metadata={"2": {"candidate_labels": ["yes", "no"]}, "3": {"candidate_labels": "not a list"}})
    (collection,) = adapter.predict([item])
    outputs = [a.metadata["user"]["model_output"] for a in collection.annotations]
    assert [set(o["labels"]) for o in outputs] == [{"positive", "neutral", "negative"}, {"yes", "no"}]
    (skipped,) = adapter.last_report.skipped
    assert (skipped.item, skipped.prompt_key, skipped.element_key) == ("batch[0]", "3", "0")
    assert "candidate_labels" in skipped.reason


def test_all_label_pairs_of_a_batch_run_together(make_adapter):
    adapter = make_adapter("models.bart_large_mnli", batch_size=64)
    calls = []
    forward = adapter.forward
    adapter.forward = lambda inputs: (calls.append(inputs["input_ids"].shape[0]), forward(inputs))[1]
    adapter.predict([legacy_item({"p": TEXTS}), legacy_item({"q": TEXTS[:2]})])
    assert calls == [7 * 3]


def test_long_text_is_truncated_with_a_warning_not_an_error(make_adapter, caplog):
    long_text = " ".join(["wonderful terrible"] * 400)
    for module in ("models.distilbert_sst2", "models.bart_large_mnli"):
        adapter = make_adapter(module)
        with caplog.at_level(logging.WARNING, logger="adapters"):
            (collection,) = adapter.predict([legacy_item({"p": [long_text, "short"]})])
        assert len(collection.annotations) == 2
        assert "truncated to the model's limit of 128" in caplog.text
        assert "wonderful" not in caplog.text  # user text never reaches logs above DEBUG
        caplog.clear()


def test_bart_runs_its_last_decoder_layer_only_at_the_classified_token_with_equal_logits(nli_dirs):
    """The head reads one decoder position: the last layer's feed-forward runs there only, logits unchanged."""
    from models.bart_large_mnli import HuggingAdapter
    adapter = HuggingAdapter({"model_path": str(nli_dirs["mnli"])})
    model = adapter.model
    pairs = adapter.tokenizer([TEXTS[i % 5] for i in range(8)], [f"It is about {x}." for x in "abcdefgh"],
                              padding=True, return_tensors="pt")
    seen = []
    hook = model.model.decoder.layers[-1].fc1.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    try:
        with torch.inference_mode():
            pruned = torch.stack(adapter.forward(dict(pairs)))
            stock = model(**pairs, use_cache=False).logits
    finally:
        hook.remove()
    assert seen[0][:2] == (8, 1) and seen[1][:2] == tuple(pairs["input_ids"].shape)
    # the same weights, one layer run on fewer positions: float32 rounding of the logits (tests/tolerances.py)
    assert torch.allclose(pruned, stock, atol=LOGIT_ATOL) and pairs["attention_mask"].min() == 0  # rows were padded
    adapter.eos_classifier = None  # what runs for other NLI architectures and runtimes: the model's own forward
    with torch.inference_mode():
        assert torch.allclose(torch.stack(adapter.forward(dict(pairs))), stock, atol=LOGIT_ATOL)


def test_distilbert_runs_its_last_layer_only_at_the_first_token_with_equal_logits(sentiment_dirs):
    """The head reads the first position: the last layer's feed-forward runs there only, logits unchanged, with
    padded rows (whose padding the pruned attention must not read) in the batch."""
    from models.distilbert_sst2 import HuggingAdapter
    adapter = HuggingAdapter({"model_path": str(sentiment_dirs["three"])})
    model = adapter.model
    texts = [TEXTS[i % 5] + " and more" * i for i in range(8)]
    inputs = adapter.tokenizer(texts, padding=True, return_tensors="pt")
    seen = []
    hook = model.distilbert.transformer.layer[-1].ffn.lin1.register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape))
    try:
        with torch.inference_mode():
            pruned = torch.stack(adapter.forward(dict(inputs)))
            stock = model(**inputs).logits
    finally:
        hook.remove()
    assert seen[0][:2] == (8, 1) and seen[1][:2] == tuple(inputs["input_ids"].shape)
    # the same weights, one layer run on fewer positions: float32 rounding of the logits (tests/tolerances.py)
    assert torch.allclose(pruned, stock, atol=LOGIT_ATOL) and inputs["attention_mask"].min() == 0  # rows were padded
    adapter.prune_last_layer = False  # what runs for other architectures and runtimes: the model's own forward
    with torch.inference_mode():
        assert torch.allclose(torch.stack(adapter.forward(dict(inputs))), stock, atol=LOGIT_ATOL)
    adapter.prune_last_layer = True
    calls = []  # a hook on the model (tests and users inject failures so): the model's own call runs
    hook = model.register_forward_pre_hook(lambda module, args: calls.append(module))
    try:
        with torch.inference_mode():
            assert torch.allclose(torch.stack(adapter.forward(dict(inputs))), stock, atol=LOGIT_ATOL)
    finally:
        hook.remove()
    assert calls == [model]
    adapter.model = HuggingAdapter({"model_path": str(sentiment_dirs["two"])}).model  # as training replaces it
    with torch.inference_mode():
        assert torch.allclose(torch.stack(adapter.forward(dict(inputs))), adapter.model(**inputs).logits,
                              atol=LOGIT_ATOL)


def test_nli_labels_without_the_usual_names_fall_back_to_the_last_and_first_logits(tmp_path, caplog):
    """No 'entailment' label: the last logit is entailment (with a warning); no 'contradiction' label: the first,
    or the last when entailment is the first. Named labels are found wherever they are."""
    from models.bart_large_mnli import HuggingAdapter
    cases = [({0: "yes", 1: "no"}, (-1, 0)), ({0: "Entailment", 1: "other", 2: "x"}, (0, -1)),
             ({0: "x", 1: "entailment"}, (1, 0)), ({0: "contradiction", 1: "neutral", 2: "entailment"}, (2, 0)),
             ({0: "neutral", 1: "Contradiction", 2: "entailment"}, (2, 1))]
    for index, (labels, expected) in enumerate(cases):
        with caplog.at_level(logging.WARNING, logger="models"):
            adapter = HuggingAdapter({"model_path": str(build_bart_nli(tmp_path / str(index), id2label=labels))})
        assert (adapter.entailment_id, adapter.contradiction_id) == expected
        assert ("no 'entailment' label" in caplog.text) is (index == 0)
        caplog.clear()


def test_a_regression_checkpoint_is_refused_by_its_path_not_scored_as_a_class(tmp_path):
    """A DistilBERT fine-tuned for regression outputs one number, not class logits: reading it as a one-label
    classifier would answer a meaningless sigmoid; it is refused when loaded, naming the checkpoint."""
    from adapters.core.errors import ConfigurationError
    from models.distilbert_sst2 import HuggingAdapter
    path = build_distilbert_classifier(tmp_path / "regression", id2label={0: "LABEL_0"},
                                       config_overrides={"problem_type": "regression"})
    with pytest.raises(ConfigurationError) as error:
        HuggingAdapter({"model_path": str(path)})
    assert str(error.value) == f"{path} is a regression model, not a classifier"


@pytest.mark.parametrize("template", ["This example is {}.", "{}", "{} {{braces}}", "{{a}} {} {{b}}",
                                      "x{}y", "{{{}}}"])
def test_a_templates_hypothesis_is_what_str_format_would_write(template):
    """The template is split, never formatted (a format spec could pad a hypothesis to any size), so the split
    must rebuild exactly what the pipeline's `template.format(label)` writes, literal braces included."""
    from models.bart_large_mnli import template_parts
    before, after = template_parts(template)
    for label in ("sports", "a {b}"):
        assert before + label + after == template.format(label)


def test_templates_are_accepted_up_to_200_characters_and_labels_must_be_valid_unicode():
    from models.bart_large_mnli import _labels_problem, template_parts
    longest = "{}" + "x" * 198
    assert template_parts(longest) == ("", "x" * 198)
    with pytest.raises(ValueError):
        template_parts(longest + "x")
    assert _labels_problem(["ok", "fine"]) is None
    assert _labels_problem(["ok", "bad\ud800"]) == ("every label must be valid Unicode (no lone surrogates such as "
                                                    "\\ud800)")
