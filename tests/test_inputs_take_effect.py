"""Every input a Cog predictor or a CLI flag accepts changes the result, as the same setting does in-process.

An input that is accepted and then dropped on its way to the model looks like it works: the call succeeds with
the configured default. So each one is set to a value whose answer differs from the default's, and the answer is
compared with the adapter configured with that value.
"""
from __future__ import annotations

import json

import pytest
import torch

import cog_predictors
from adapters.cli import main as cli_main
from tests.prompt_factory import current_item, legacy_item
from tests.test_cog import greedy_reply, run
from tests.tolerances import PROBABILITY_ATOL, PROBABILITY_SUM_ATOL

SEQUENCE = "The battery died after two days and the screen cracked."


def predictor(monkeypatch, model: str, path, **configuration) -> cog_predictors.AppModel:
    """The predictor `Predictor` resolves to for `model`, set up from the environment as Cog does."""
    monkeypatch.setenv("HF_ADAPTERS_MODEL", model)
    monkeypatch.setenv("HF_ADAPTERS_MODEL_PATH", str(path))
    monkeypatch.setenv("HF_ADAPTERS_CONFIGURATION", json.dumps(configuration))
    chosen = cog_predictors.Predictor()
    chosen.setup()
    return chosen


def zero_shot(make_adapter, path, **configuration) -> dict[str, float]:
    """The adapter's label -> score for SEQUENCE, configured in-process."""
    adapter = make_adapter("models.bart_large_mnli", model_path=str(path), **configuration)
    (collection,) = adapter.predict([current_item({"0": [SEQUENCE]})])
    output = collection.annotations[0].metadata["user"]["model_output"]
    return dict(zip(output["labels"], output["scores"]))


# ----- Cog: zero-shot -----

def test_cog_zero_shot_labels_template_and_multi_label_each_reach_the_model(monkeypatch, sharp_classifiers,
                                                                          make_adapter):
    path = sharp_classifiers["models.bart_large_mnli"]
    cog = predictor(monkeypatch, "bart-large-mnli", path)
    labels = ["billing", "mobile", "website"]

    def scores(**inputs) -> dict[str, float]:
        output = run(cog, input=SEQUENCE, **inputs)
        return dict(zip(output.labels, output.scores))

    chosen = scores(labels="billing, mobile,website")
    assert sorted(chosen) == labels
    assert chosen == pytest.approx(zero_shot(make_adapter, path, candidate_labels=labels), abs=PROBABILITY_ATOL)

    template = "Someone complains about {}."
    templated = scores(labels=",".join(labels), hypothesis_template=template)
    assert templated == pytest.approx(zero_shot(make_adapter, path, candidate_labels=labels,
                                                hypothesis_template=template), abs=PROBABILITY_ATOL)
    assert max(abs(templated[label] - chosen[label]) for label in labels) > 100 * PROBABILITY_ATOL

    for multi_label in (True, False):
        independent = scores(labels=",".join(labels), multi_label=multi_label)
        assert independent == pytest.approx(zero_shot(make_adapter, path, candidate_labels=labels,
                                                      multi_label=multi_label), abs=PROBABILITY_ATOL)
        # one distribution over the labels, or a probability per label
        assert (abs(sum(independent.values()) - 1) > 100 * PROBABILITY_SUM_ATOL) is multi_label


# ----- Cog: the email writer -----

def test_cog_email_token_count_temperature_and_n_gen_each_reach_the_model(monkeypatch, tiny_models, make_adapter):
    cog = predictor(monkeypatch, "t5-email", tiny_models["t5"], token_count=8)
    prompt = "meeting moved to friday"  # the tiny T5 writes it 8 tokens long, greedily

    def greedy(token_count: int) -> str:
        adapter = make_adapter("models.t5_email", token_count=token_count, do_sample=False, n_gen=1)
        (collection,) = adapter.predict([legacy_item({"p": [prompt]})])
        return collection.annotations[0].coordinates

    short = run(cog, prompt=prompt, temperature=0.0, token_count=2)
    assert short == [greedy(2)] and short != [greedy(8)]  # temperature 0 decodes greedily; 2 tokens, not 8
    assert run(cog, prompt=prompt, temperature=0.0) == [greedy(8)]
    emails = run(cog, prompt=prompt, temperature=50.0, n_gen=4)
    assert len(emails) == 4 and set(emails) != {greedy(8)}  # four samples, hot enough to leave the greedy email


# ----- Cog: chat -----

def test_cog_chat_max_new_tokens_temperature_and_seed_each_reach_the_model(monkeypatch, tiny_models):
    cog = predictor(monkeypatch, "dialogpt-large", tiny_models["gpt2"], max_new_tokens=8)
    turns = json.dumps(["Who won the game last night?"])

    def greedy(tokens: int) -> str:
        adapter = cog.runner.adapter
        ids = list(adapter.chat.utterance("Who won the game last night?"))
        with torch.inference_mode():
            out = adapter.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                         max_new_tokens=tokens, do_sample=False,
                                         pad_token_id=adapter.tokenizer.eos_token_id)
        return adapter.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()

    assert run(cog, turns=turns, temperature=0.0, max_new_tokens=3) == greedy(3) != greedy(8)
    assert run(cog, turns=turns, temperature=0.0) == greedy(8) == greedy_reply(cog, ["Who won the game last night?"])
    hot = {"turns": turns, "temperature": 20.0}
    replies = {seed: run(cog, seed=seed, **hot) for seed in (1, 2, 3)}
    assert run(cog, seed=1, **hot) == replies[1]  # the seed replays its reply
    assert len(set(replies.values())) > 1 and greedy(8) not in replies.values()


# ----- CLI flags -----

def forward_rows() -> tuple[list[int], object]:
    """The batch size of every forward pass of a DistilBERT classifier, read at its embeddings, which the stock and
    the pruned forward (adapters/architectures/distilbert_classification.py) both run (a torch global hook,
    torch's public API)."""
    rows: list[int] = []

    def hook(module, args, kwargs, output):
        if type(module).__name__ == "Embeddings":
            rows.append(int(output.shape[0]))
    return rows, torch.nn.modules.module.register_module_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_cli_predict_batch_size_sets_the_rows_of_each_forward_pass(tiny_models, tmp_path, capsys, batch_size):
    files = []
    for index in range(2):
        files.append(tmp_path / f"{index}.json")
        files[-1].write_text(json.dumps(legacy_item({"p": [f"first text {index}", f"second {index}",
                                                            f"third and last {index}"]})))
    rows, handle = forward_rows()
    try:
        code = cli_main(["predict", "distilbert-sst2", *map(str, files), "--model-path", str(tiny_models["distilbert"]),
                         "--batch-size", str(batch_size), "--json"])
    finally:
        handle.remove()
    assert code == 0 and [len(e["annotations"]) for e in json.loads(capsys.readouterr().out)] == [3, 3]
    assert sum(rows) == 6 and max(rows) == batch_size


def test_cli_evaluate_subset_chooses_the_subset_scored(tiny_models, tmp_path, capsys):
    from tests.test_training import sentiment_layout
    data = sentiment_layout(tmp_path / "data", train=8, validation=4)
    counts = {}
    for subset in ("train", "validation"):
        assert cli_main(["evaluate", "distilbert-sst2", str(data), "--model-path", str(tiny_models["distilbert"]),
                         "--subset", subset, "--plot", str(tmp_path / f"{subset}.png")]) == 0
        scored = json.loads(capsys.readouterr().out)
        counts[subset] = (scored["subset"], scored["questions"])
    assert counts == {"train": ("train", 8), "validation": ("validation", 4)}


def test_every_serve_limit_flag_reaches_the_server_and_uvicorn(tiny_models, monkeypatch):
    """Each limit option, set away from its default, is the limit the app and uvicorn run with (what each limit
    does is tested in test_server_limits.py and test_server_boundaries.py)."""
    import uvicorn

    from adapters.cli import build_parser
    from adapters.cli import serve as serve_command
    from tests.servers import free_loopback_port

    values = {"--max-body-bytes": 1234, "--max-request-tokens": 4321, "--max-queue-tokens": 3333, "--max-connections": 17,
              "--max-pending-bytes": 99999, "--header-timeout": 4.5, "--body-timeout": 6.5,
              "--keep-alive-timeout": 7, "--shutdown-timeout": 2.5}
    assert set(values) == {option for option, _, _ in serve_command.LIMIT_OPTIONS}
    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: seen.update(config=server.config))
    args = build_parser().parse_args(["serve", "distilbert-sst2", "--port", str(free_loopback_port()), "--model-path",
                                      f"distilbert-sst2={tiny_models['distilbert']}",
                                      *[str(part) for option, value in values.items() for part in (option, value)]])
    real_serve = serve_command.serve

    def serve(app, sock, limits, verbose=False):
        seen.update(app=app, limits=limits)
        try:
            return real_serve(app, sock, limits, verbose)
        finally:
            sock.close()
    monkeypatch.setattr(serve_command, "serve", serve)
    assert args.run(args) == 0
    limits = seen["limits"]
    for option, value in values.items():
        assert getattr(limits, option.removeprefix("--").replace("-", "_")) == value, option
    assert seen["app"].state.runners["distilbert-sst2"].limits == limits
    config = seen["config"]
    assert (config.http.header_timeout, config.http.max_connections) == (4.5, 17)
    assert (config.timeout_keep_alive, config.timeout_graceful_shutdown) == (7, 2.5)
