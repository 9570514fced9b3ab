"""Any checkpoint of a module's task family, by configuration: each module runs several architectures of its family
(tiny random checkpoints loaded through `model_path`) and answers as `transformers` does; docs/configuration.md's
table lists exactly these; the module that serves a checkpoint is found from its config, and register_model.py uses
it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

import register_model
from adapters.core.checkpoints import choose_module
from adapters.core.errors import ConfigurationError
from adapters.core.module_loader import load_model_module
from tests.model_factory import (build_bart_nli, build_chat_lm, build_distilbert_classifier, build_gpt2_lm,
                                 build_seq2seq, build_sequence_classifier, build_t5, sharpen)
from tests.prompt_factory import current_item, legacy_item
from tests.references import greedy_answer

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["I love this movie, it is wonderful!", "Terrible service and a boring, awful plot.", "ok",
         "The quarterly report is attached; please review it by Friday."]
NLI_LABELS = {2: {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"},  # roberta-large-mnli's order
              0: {0: "entailment", 1: "neutral", 2: "contradiction"}}  # cross-encoder NLI checkpoints' order

# The architectures each module is verified on, and how the tests build a tiny checkpoint of each.
BUILDERS = {
    "models.distilbert_sst2": {
        "DistilBertForSequenceClassification": lambda path: build_distilbert_classifier(path),
        "BertForSequenceClassification": lambda path: build_sequence_classifier(path, "bert"),
        "RobertaForSequenceClassification": lambda path: build_sequence_classifier(
            path, "roberta", id2label={0: "neg", 1: "neu", 2: "pos"}),
        "DebertaV2ForSequenceClassification": lambda path: build_sequence_classifier(path, "deberta-v2"),
        "ElectraForSequenceClassification": lambda path: build_sequence_classifier(path, "electra"),
    },
    "models.bart_large_mnli": {
        "BartForSequenceClassification": lambda path: build_bart_nli(path),
        "RobertaForSequenceClassification": lambda path: build_sequence_classifier(path, "roberta",
                                                                                   id2label=NLI_LABELS[2]),
        "DebertaV2ForSequenceClassification": lambda path: build_sequence_classifier(path, "deberta-v2",
                                                                                     id2label=NLI_LABELS[0]),
    },
    "models.t5_email": {
        "T5ForConditionalGeneration": lambda path: build_t5(path, config_overrides={"initializer_factor": 2.0}),
        "BartForConditionalGeneration": lambda path: build_seq2seq(path, "bart"),
        "PegasusForConditionalGeneration": lambda path: build_seq2seq(path, "pegasus"),
    },
    "models.dialogpt_large": {
        "GPT2LMHeadModel": lambda path: build_gpt2_lm(path),  # DialoGPT's: no chat template
        "LlamaForCausalLM": lambda path: build_chat_lm(path, "llama"),
        "Qwen2ForCausalLM": lambda path: build_chat_lm(path, "qwen2"),
    },
}
CASES = [(module, architecture) for module, builders in BUILDERS.items() for architecture in builders]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """One tiny checkpoint per (module, architecture); classifiers sharpened so their scores tell texts apart."""
    root = tmp_path_factory.mktemp("architectures")
    built = {}
    for index, (module, architecture) in enumerate(CASES):
        path = BUILDERS[module][architecture](root / f"{index}-{architecture}")
        built[module, architecture] = sharpen(path, seed=index) if "Sequence" in architecture else path
        assert AutoConfig.from_pretrained(path).architectures == [architecture]
    return built


def adapter_for(module: str, path: Path, **configuration):
    return load_model_module(module).HuggingAdapter({"model_path": str(path), **configuration})


@pytest.mark.parametrize("architecture", BUILDERS["models.distilbert_sst2"])
def test_the_classifier_module_scores_as_the_text_classification_pipeline_on(checkpoints, architecture):
    path = checkpoints["models.distilbert_sst2", architecture]
    (collection,) = adapter_for("models.distilbert_sst2", path, batch_size=3).predict([legacy_item({"p": TEXTS})])
    reference = pipeline("text-classification", model=str(path), top_k=None)(TEXTS)
    confidences = []
    for annotation, expected in zip(collection.annotations, reference, strict=True):
        output = annotation.metadata["user"]["model_output"]
        assert annotation.coordinates == max(expected, key=lambda r: r["score"])["label"]
        assert output["scores"] == pytest.approx({r["label"]: r["score"] for r in expected}, abs=1e-5)
        confidences.append(round(annotation.metadata["user"]["model"]["confidence"], 6))
    assert len(set(confidences)) == len(TEXTS)  # texts told apart: the comparison can fail


@pytest.mark.parametrize("architecture", BUILDERS["models.bart_large_mnli"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_the_zero_shot_module_scores_as_the_zero_shot_pipeline_on(checkpoints, architecture, multi_label):
    path = checkpoints["models.bart_large_mnli", architecture]
    labels, template = ["sports", "politics", "cooking"], "The topic is {}."
    adapter = adapter_for("models.bart_large_mnli", path, candidate_labels=labels, hypothesis_template=template,
                          multi_label=multi_label)
    (collection,) = adapter.predict([current_item({str(i): [text] for i, text in enumerate(TEXTS)})])
    classify = pipeline("zero-shot-classification", model=str(path))
    for annotation, text in zip(collection.annotations, TEXTS, strict=True):
        expected = classify(text, candidate_labels=labels, hypothesis_template=template, multi_label=multi_label)
        output = annotation.metadata["user"]["model_output"]
        assert dict(zip(output["labels"], output["scores"])) == pytest.approx(
            dict(zip(expected["labels"], expected["scores"])), abs=1e-5)
        assert annotation.coordinates == expected["labels"][0]
    label2id = {name.lower(): index for name, index in AutoConfig.from_pretrained(path).label2id.items()}
    assert adapter.entailment_id == label2id["entailment"]


def test_an_nli_checkpoint_whose_entailment_label_comes_first_is_read_as_such(checkpoints):
    adapter = adapter_for("models.bart_large_mnli", checkpoints["models.bart_large_mnli",
                                                               "DebertaV2ForSequenceClassification"])
    assert (adapter.entailment_id, adapter.contradiction_id) == (0, 2)


@pytest.mark.parametrize("architecture", BUILDERS["models.t5_email"])
def test_the_text_to_text_module_writes_what_generate_writes_on(checkpoints, architecture):
    path = checkpoints["models.t5_email", architecture]
    adapter = adapter_for("models.t5_email", path, token_count=8, do_sample=False, n_gen=1)
    (collection,) = adapter.predict([legacy_item({"p": TEXTS})])
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    for annotation, text in zip(collection.annotations, TEXTS, strict=True):
        ids = tokenizer(adapter.configuration["prefix"] + text)["input_ids"]
        expected, confidence = greedy_answer(model, tokenizer, ids, 8)
        assert annotation.coordinates == expected
        assert annotation.metadata["user"]["model"]["confidence"] == pytest.approx(confidence, rel=1e-4)
    assert len({a.coordinates for a in collection.annotations}) > 1


@pytest.mark.parametrize("architecture", BUILDERS["models.dialogpt_large"])
def test_the_chat_module_writes_what_generate_writes_on(checkpoints, architecture):
    """The model input is the module's (template or end-of-text format: tests/test_chat_templates.py); the answer
    to it is `generate`'s, whatever the architecture."""
    from transformers import AutoModelForCausalLM
    path = checkpoints["models.dialogpt_large", architecture]
    adapter = adapter_for("models.dialogpt_large", path, max_new_tokens=8, do_sample=False)
    seen = []
    preprocess = adapter.preprocess
    adapter.preprocess = lambda question, history: seen.append(preprocess(question, history)[0]) or seen[-1:]
    (collection,) = adapter.predict([legacy_item({str(i): [text] for i, text in enumerate(TEXTS)})])
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    for annotation, row in zip(collection.annotations, seen, strict=True):
        expected, confidence = greedy_answer(model, adapter.tokenizer, row["input_ids"], 8)
        assert annotation.coordinates == expected
        assert annotation.metadata["user"]["model"]["confidence"] == pytest.approx(confidence, rel=1e-4)
    assert (adapter.chat.name == "chat template") == (architecture != "GPT2LMHeadModel")


def test_the_docs_list_exactly_the_architectures_verified_for_each_module():
    document = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = document[document.index("### Architectures verified in tests"):]
    listed = {}
    for line in section.splitlines()[1:]:
        match = re.match(r"\| `(models\.\w+)` \| [^|]+ \| (.+) \|$", line)
        if match:
            listed[match.group(1)] = re.findall(r"`(\w+)`", match.group(2))
        elif listed and not line.startswith("|"):
            break
    assert listed == {module: list(builders) for module, builders in BUILDERS.items()}


# ----- which module serves a checkpoint -----

@pytest.mark.parametrize("module, architecture", CASES)
def test_each_checkpoint_is_served_by_its_module_alone(checkpoints, module, architecture):
    config = AutoConfig.from_pretrained(checkpoints[module, architecture])
    assert choose_module(config, "ckpt") == module
    other = next(name for name in BUILDERS if name != module)
    with pytest.raises(ConfigurationError, match=f"'ckpt' is a {architecture} checkpoint, which {other} does not "
                                                 "serve"):
        choose_module(config, "ckpt", asked=other)


def masked_lm(checkpoints, tmp_path) -> Path:
    """A checkpoint no module serves: a BERT masked language model (its config names the architecture)."""
    folder = tmp_path / "masked-lm"
    source = checkpoints["models.distilbert_sst2", "BertForSequenceClassification"]
    folder.mkdir()
    for file in source.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    return folder


def test_a_checkpoint_no_module_serves_is_refused_with_what_each_module_serves(checkpoints, tmp_path):
    config = AutoConfig.from_pretrained(masked_lm(checkpoints, tmp_path))
    with pytest.raises(ConfigurationError) as refusal:
        choose_module(config, "bert-mlm")
    message = str(refusal.value)
    assert message.startswith("'bert-mlm' is a BertForMaskedLM checkpoint, which no module of this package serves")
    for module in BUILDERS:
        assert f"{module} serves {load_model_module(module).HuggingAdapter.family}" in message


def test_register_model_takes_a_checkpoint_folder_and_picks_its_module(checkpoints, tmp_path, capsys):
    qwen = checkpoints["models.dialogpt_large", "Qwen2ForCausalLM"]
    assert register_model.main([str(qwen), "--dry-run", "--name", "my-qwen", "--set", "system_prompt=Be brief."]) == 0
    printed = json.loads(capsys.readouterr().out)
    request = printed["create"]
    assert request["dpk_model_name"] == "dialogpt-large" and request["model_name"] == "my-qwen"
    assert request["configuration"]["module_name"] == "models.dialogpt_large"
    assert request["configuration"]["model_path"] == str(qwen) and request["status"] == "trained"
    assert request["configuration"]["system_prompt"] == "Be brief."
    assert "model.safetensors" in printed["artifacts"] and "tokenizer.json" in printed["artifacts"]
    nli = checkpoints["models.bart_large_mnli", "DebertaV2ForSequenceClassification"]
    assert register_model.main([str(nli), "--dry-run"]) == 0
    request = json.loads(capsys.readouterr().out)["create"]
    assert request["configuration"]["module_name"] == "models.bart_large_mnli"
    assert request["model_name"].startswith(f"{nli.name}-")


@pytest.mark.parametrize("arguments, message", [
    (lambda c, t: [str(masked_lm(c, t))], "which no module of this package serves: models.bart_large_mnli serves"),
    (lambda c, t: [str(c["models.dialogpt_large", "LlamaForCausalLM"]), "--module", "models.t5_email"],
     "LlamaForCausalLM checkpoint, which models.t5_email does not serve"),
    (lambda c, t: ["t5-email", "--artifacts", str(c["models.dialogpt_large", "LlamaForCausalLM"])],
     "LlamaForCausalLM checkpoint, which models.t5_email does not serve"),
    (lambda c, t: ["no/such-model"], "unknown model 'no/such-model': it is none of this app's models"),
])
def test_register_model_refuses_a_checkpoint_its_module_would_not_run(checkpoints, tmp_path, capsys, arguments,
                                                                      message):
    assert register_model.main([*arguments(checkpoints, tmp_path), "--dry-run"]) == 2
    assert message in capsys.readouterr().err
