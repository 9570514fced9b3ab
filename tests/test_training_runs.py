"""How a training run behaves: LoRA, early stopping, resume, gradient accumulation, the output folder's rules,
and dtlpy's `train_model` storing checkpoints so a restarted execution continues. Tiny models, offline."""
import json
import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import dtlpy as dl
import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from adapters.cli import main as cli_main
from adapters.core.errors import ConfigurationError
from adapters.dataloop.model_adapter import ModelAdapter
from tests.model_factory import build_distilbert_classifier, build_gpt2_lm, build_t5
from tests.tolerances import FORWARD_RTOL
from tests.test_training import (
    FAST,
    chat_layout,
    email_layout,
    local_adapter,
    predicted_texts,
    rows_loss,
    sentiment_layout,
)

NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


# ----- LoRA -----
def test_lora_training_lowers_the_loss_and_saves_merged_weights_that_predict_loads(tiny_models, tmp_path):
    data = chat_layout(tmp_path / "data")
    adapter, _ = local_adapter("dialogpt-large", tiny_models["gpt2"], epochs=6, **{**FAST, "learning_rate": 3e-2},
                               lora_r=8, lora_alpha=32, lora_dropout=0.0, max_new_tokens=8, do_sample=False)
    adapter.convert_from_dtlpy(str(data))
    untrained = rows_loss(adapter)
    original = {k: v.clone() for k, v in adapter.hugging.model.state_dict().items()}
    adapter.train(str(data), str(tmp_path / "out"))
    assert rows_loss(adapter) < untrained - 1.0

    adapter.save(str(tmp_path / "out"))
    saved = weights(tmp_path / "out")
    assert not any(name.startswith("adapter_") for name in os.listdir(tmp_path / "out"))  # no peft files
    assert not any("lora" in key for key in saved)                                        # merged, plain keys
    assert not torch.equal(saved["transformer.h.0.attn.c_attn.weight"], original["transformer.h.0.attn.c_attn.weight"])
    assert torch.equal(saved["transformer.wte.weight"], original["transformer.wte.weight"])  # frozen under LoRA
    texts = ["meeting monday", "team lunch"]
    reloaded, _ = local_adapter("dialogpt-large", tmp_path / "out", max_new_tokens=8, do_sample=False)
    assert predicted_texts(reloaded, texts) == predicted_texts(adapter, texts)


# ----- early stopping -----
def test_early_stopping_stops_a_run_that_does_not_improve_and_keeps_the_best_epoch(tiny_models, tmp_path):
    # Validation answers are the opposite of the training answers: the better the model learns, the worse it
    # validates, so the best epoch is an early one and the run stops `patience` epochs after it.
    data = sentiment_layout(tmp_path / "data")
    for json_file in (data / "validation" / "json").glob("*.json"):
        item = json.loads(json_file.read_text())
        label = item["annotations"][0]["coordinates"]
        item["annotations"][0]["coordinates"] = {"pos": "neg", "neg": "pos"}[label]
        json_file.write_text(json.dumps(item))
    patience = 2
    adapter, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=12, **FAST,
                               early_stopping_patience=patience)
    history = adapter.train(str(data), str(tmp_path / "out"))
    scores = [epoch["accuracy"] for epoch in history]
    best = scores.index(max(scores))
    assert len(history) == best + 1 + patience < 12
    assert scores[-1] < scores[best]
    assert adapter.evaluate_path(str(data))["accuracy"] == scores[best]  # the best epoch's weights (a ratio of counts)


def test_early_stopping_without_a_validation_subset_is_refused(tiny_models, tmp_path):
    data = sentiment_layout(tmp_path / "data", validation=0)
    adapter, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], **FAST, early_stopping_patience=1)
    from adapters.training.dataset import DatasetError
    with pytest.raises(DatasetError) as refused:
        adapter.train(str(data), str(tmp_path / "out"))
    assert str(refused.value) == ("early_stopping_patience needs a 'validation' subset to measure improvement; add "
                                  "one or set early_stopping_patience to 0")
    assert not (tmp_path / "out").exists()


# ----- resume -----
class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_at_the_next_epoch(tiny_models, tmp_path, capsys):
    data = sentiment_layout(tmp_path / "data", train=16, validation=6)
    settings = {"epochs": 4, **FAST}
    uninterrupted, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], **settings)
    expected = uninterrupted.train(str(data), str(tmp_path / "reference"))
    uninterrupted.save(str(tmp_path / "reference"))

    out = tmp_path / "out"
    first, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], **settings)
    first.overwrite_output = False  # as the CLI runs it

    def stop_after_two(epoch: int, epochs: int) -> None:
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        first.train(str(data), str(out), on_epoch_end_callback=stop_after_two)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]

    # The same command again continues from epoch 3: two epochs run, the report has all four.
    args = [str(data), str(out), "--model-path", str(tiny_models["distilbert"])]
    args += [f"--set={key}={json.dumps(value)}" for key, value in settings.items()]
    assert cli_main(["train", "distilbert-sst2", *args]) == 0
    captured = capsys.readouterr()
    assert "epoch 3/4 done" in captured.err and "epoch 2/4 done" not in captured.err
    report = json.loads(captured.out)
    assert [epoch["epoch"] for epoch in report["epochs"]] == [1, 2, 3, 4]  # as on screen: "epoch 3/4 done"
    # A resumed run repeats the uninterrupted one's operations on the same values in the same order (weights,
    # optimizer state and random state come back exactly): equal bit for bit. A tolerance would not help: AdamW
    # turns any float difference in a near-zero gradient into a whole step (see the accumulation test).
    assert [got["train_loss"] for got in report["epochs"]] == [want["train_loss"] for want in expected]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "reference").iterdir())
    for key, tensor in weights(tmp_path / "reference").items():
        assert torch.equal(weights(out)[key], tensor), key
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]

    # Finished: the same command is refused instead of silently training again.
    assert cli_main(["train", "distilbert-sst2", *args]) == 2
    assert "holds a finished model" in capsys.readouterr().err


# ----- gradient accumulation -----
ACCUMULATION_CASES = {  # module: builder, dropout off, layout, rows per optimizer step, settings
    "distilbert-sst2": (build_distilbert_classifier, {"dropout": 0.0, "attention_dropout": 0.0,
                                                      "seq_classif_dropout": 0.0}, "sentiment", 8, {}),
    "t5-email": (build_t5, {"dropout_rate": 0.0, "initializer_factor": 1.0}, "email", 4,
                 {"token_count": 8, "max_target_length": 32}),
    "dialogpt-large": (build_gpt2_lm, NO_DROPOUT, "chat", 8, {"max_new_tokens": 32}),
}  # answer limits long enough that answers keep their different token counts (8 would cut every one to 8)


# float32 keeps 24 significant bits (unit roundoff u = 2**-24, about 6e-8). A gradient here is a chain of sums over
# at most rows x tokens x width (8 x 16 x 64, about 2**13) products through a few layers; the classical worst-case
# bound for such a sum is n * u, about 5e-4 of the summed magnitudes, so accumulating in micro-batches (other
# padding widths, other summation orders) may move the whole gradient by that much relative to its norm and no more.
# A wrong weighting of micro-batches moves it by a share of the micro-batches' weights (25% or more here).
GRADIENT_RTOL = 2**13 * 2**-24


def first_step_gradient(adapter: ModelAdapter, data: Path, out: Path) -> dict[str, torch.Tensor]:
    """Train and return the gradient of every parameter as the first optimizer step sees it (after accumulation).

    A global optimizer pre-step hook (torch's public API) reads it: nothing of the project is patched.
    """
    captured: dict[str, torch.Tensor] = {}

    def read_gradients(optimizer, args, kwargs):
        if not captured:
            names = {id(p): n for n, p in adapter.hugging.model.named_parameters()}
            captured.update({names[id(p)]: p.grad.detach().clone() for group in optimizer.param_groups
                             for p in group["params"] if p.grad is not None})

    handle = register_optimizer_step_pre_hook(read_gradients)
    try:
        adapter.train(str(data), str(out))
    finally:
        handle.remove()
    return captured


def relative_distance(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    """|got - want| / |want| over all parameters as one vector: the step the optimizer would take, compared."""
    assert got.keys() == want.keys()
    difference = sum(float((got[k].double() - want[k].double()).square().sum()) for k in want)
    return (difference / sum(float(v.double().square().sum()) for v in want.values())) ** 0.5


@pytest.mark.parametrize("name", list(ACCUMULATION_CASES))
def test_accumulation_gives_the_same_updates_as_a_larger_batch(name, tmp_path):
    # Rows of different lengths: for generators the loss is a mean over answer tokens, so micro-batches must be
    # weighted by their token counts, not averaged; for classifiers the micro-batch means are averaged. The
    # gradient of the first optimizer step is compared, before clipping (off) and before AdamW, which divides
    # each entry by its own magnitude and so turns float noise in near-zero entries (an attention key's bias has
    # an exact gradient of 0) into full steps: weights after AdamW cannot be compared to float precision.
    builder, no_dropout, layout, step_rows, settings = ACCUMULATION_CASES[name]
    model = builder(tmp_path / "model", config_overrides=no_dropout)
    data = {"sentiment": lambda root: sentiment_layout(root, train=16), "email": email_layout,
            "chat": chat_layout}[layout](tmp_path / "data")
    shutil.rmtree(data / "validation")  # no best-epoch choice
    histories, gradients = {}, {}
    for steps in (1, 2, 4):
        adapter, _ = local_adapter(name, model, epochs=3,
                                   **{**FAST, "learning_rate": 1e-3, "train_batch_size": step_rows // steps},
                                   gradient_accumulation_steps=steps, lora_r=0, gradient_checkpointing=False,
                                   max_grad_norm=0.0, **settings)
        gradients[steps] = first_step_gradient(adapter, data, tmp_path / f"{steps}")
        histories[steps] = [epoch["train_loss"] for epoch in adapter.training_history]
    assert len(gradients[1]) > 20 and sum(float(g.abs().sum()) for g in gradients[1].values()) > 0
    for steps in (2, 4):
        distance = relative_distance(gradients[steps], gradients[1])
        assert distance < GRADIENT_RTOL, (steps, distance)
        # Each epoch's loss: cross-entropies of logits within FORWARD_RTOL of their scale (tests/tolerances.py); the
        # updates differ beyond rounding only where AdamW amplifies noise in near-zero gradients, whose parameters
        # barely move the loss (a wrong weighting of micro-batches moves it by far more, and fails above).
        assert histories[steps] == pytest.approx(histories[1], rel=FORWARD_RTOL)


# ----- settings -----
@pytest.mark.parametrize("bad", [{"mixed_precision": "fp8"}, {"lora_r": -1}, {"lora_dropout": 1.0},
                                 {"gradient_accumulation_steps": 0}, {"early_stopping_patience": -1},
                                 {"gradient_checkpointing": "yes"}, {"lora_alpha": 0}])
def test_new_training_keys_are_range_checked(bad):
    from adapters.dataloop.local_runner import validate_configuration
    with pytest.raises(ConfigurationError):
        validate_configuration({"module_name": "models.dialogpt_large", **bad})


def test_mixed_precision_follows_the_device():
    from adapters.training.loop import precision_flags
    cpu = torch.device("cpu")
    assert precision_flags("auto", cpu) == {"fp16": False, "bf16": False}
    assert precision_flags("bf16", cpu) == {"fp16": False, "bf16": True}
    with pytest.raises(ConfigurationError, match="needs a CUDA GPU"):
        precision_flags("fp16", cpu)


# ----- the output folder -----
@pytest.fixture
def cli_train(tiny_models, tmp_path, capsys):
    """cli_train(out, *extra) -> (exit code, stderr); a short DistilBERT run on a small layout."""
    data = sentiment_layout(tmp_path / "data", train=8, validation=4)

    def run(out: Path, *extra: str) -> tuple[int, str]:
        code = cli_main(["train", "distilbert-sst2", str(data), str(out), "--model-path",
                         str(tiny_models["distilbert"]), "--set", "epochs=1", *extra])
        return code, capsys.readouterr().err
    return run


def test_an_unusable_output_location_is_refused_before_anything_runs(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    # DATA does not exist: the output is checked first, and no model is loaded for it.
    for out, message in ((a_file, "is a file, not a folder"), (a_file / "below", "is a file")):
        assert cli_main(["train", "distilbert-sst2", str(tmp_path / "no-data"), str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and "no 'train' subset" not in err
    assert a_file.read_text() == "keep me"
    # A folder that holds the data (or the current folder) would be replaced by the model, even with --overwrite.
    (tmp_path / "data").mkdir()
    for out in (tmp_path, tmp_path / "data", Path(".")):
        assert cli_main(["train", "distilbert-sst2", str(tmp_path / "data"), str(out), "--overwrite"]) == 2
        assert "choose a folder of its own" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: permissions cannot be tested")
def test_an_unwritable_output_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert cli_main(["train", "distilbert-sst2", str(tmp_path / "no-data"), str(locked / "out")]) == 2
        assert "cannot be written" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_a_folder_with_other_files_is_replaced_only_with_overwrite_and_only_when_done(cli_train, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, err = cli_train(out)
    assert code == 2 and "files this run did not write (notes.txt)" in err and "--overwrite" in err
    assert sorted(os.listdir(out)) == ["notes.txt"]

    code, _ = cli_train(out, "--overwrite")
    assert code == 0
    assert "notes.txt" not in os.listdir(out) and (out / "model.safetensors").is_file()
    # Nothing hidden is left beside it but the run lock (an empty file, free again: see the lock test below).
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == [".out.lock"]


def test_checkpoints_of_another_run_are_refused_unless_overwrite(cli_train, tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "run.json").write_text(json.dumps({"fingerprint": "another run", "seed": 1}))
    code, err = cli_train(out)
    assert code == 2 and "checkpoints of a different run" in err
    assert (out / "checkpoints" / "run.json").is_file()
    code, _ = cli_train(out, "--overwrite")
    assert code == 0 and sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.json",
                                                     "tokenizer_config.json", "training_curve.png",
                                                     "training_metrics.json"]


def test_a_symlinked_output_folder_is_trained_into_and_rerun(cli_train, tmp_path):
    """A symlinked OUTPUT_DIR trained fully, then crashed (IsADirectoryError) leaving the model in a hidden
    `.partial` folder; every rerun crashed the same way."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    for extra in ((), ("--overwrite",)):
        code, err = cli_train(link, *extra)
        assert code == 0 and "Traceback" not in err, err
        assert link.is_symlink() and link.resolve() == real and (real / "model.safetensors").is_file()
    # No hidden partial model left; the run lock is taken beside the folder the link points to.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".real.lock"]


@pytest.mark.parametrize("system", ["/usr/lib", "/etc", "/"])
def test_an_output_folder_that_is_or_links_to_a_system_folder_is_refused_even_with_overwrite(tmp_path, system):
    """With --overwrite and a link into a system folder, training created its checkpoints there."""
    from adapters.training.output import OutputError, OutputFolder
    link = tmp_path / "out"
    link.symlink_to(system)
    for out in (link, Path(system)):
        with pytest.raises(OutputError, match="system folder|choose a folder of its own"):
            OutputFolder(out, overwrite=True).check()


def interrupted_run(tiny_models, data: Path, out: Path, model_path: Path | None = None, **settings) -> None:
    """Two epochs planned, stopped after the first: OUT holds the run's checkpoints."""
    first, _ = local_adapter("distilbert-sst2", model_path or tiny_models["distilbert"], epochs=2, **FAST, **settings)
    first.overwrite_output = False  # as the CLI runs it

    def stop(epoch: int, epochs: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        first.train(str(data), str(out), on_epoch_end_callback=stop)
    assert (out / "checkpoints" / "run.json").is_file()


def cli_resume(data: Path, out: Path, model_path: Path, capsys, *extra: str) -> tuple[int, str]:
    args = ["train", "distilbert-sst2", str(data), str(out), "--model-path", str(model_path), *extra]
    args += [f"--set={key}={json.dumps(value)}" for key, value in {"epochs": 2, **FAST}.items()]
    capsys.readouterr()  # what ran before (the interrupted run's own library output) is not this command's
    code = cli_main(args)
    return code, capsys.readouterr().err


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "truncated weights": lambda checkpoint: cut_short(checkpoint / "model.safetensors"),
    "truncated optimizer": lambda checkpoint: cut_short(checkpoint / "optimizer.pt"),
    "state not JSON": lambda checkpoint: (checkpoint / "trainer_state.json").write_text("{not json"),
    "state a list": lambda checkpoint: (checkpoint / "trainer_state.json").write_text("[]"),
    "bad seed": lambda checkpoint: (checkpoint.parent / "run.json").write_text(
        json.dumps({**json.loads((checkpoint.parent / "run.json").read_text()), "seed": -1})),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_is_refused_in_one_line_or_with_overwrite_started_over(tiny_models, tmp_path, capsys,
                                                                                    damage):
    """A truncated safetensors, a trainer_state.json that is not JSON or is `[]`, or a bad seed in run.json gave
    a traceback on every run."""
    data = sentiment_layout(tmp_path / "data", train=16, validation=6)
    out = tmp_path / "out"
    interrupted_run(tiny_models, data, out)
    (checkpoint,) = (out / "checkpoints").glob("checkpoint-*")
    DAMAGES[damage](checkpoint)
    code, err = cli_resume(data, out, tiny_models["distilbert"], capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"error: output folder {str(out)!r}: the checkpoint cannot be resumed: "), err
    assert err.endswith(" (damaged or not this model's); pass --overwrite to start a new run, or choose another "
                        "folder\n"), err
    code, err = cli_resume(data, out, tiny_models["distilbert"], capsys, "--overwrite")
    assert code == 0 and "epoch 1/2 done" in err and "epoch 2/2 done" in err, err
    assert (out / "model.safetensors").is_file() and not (out / "checkpoints").exists()


def test_on_the_platform_a_damaged_checkpoint_starts_the_run_over_in_one_warning(tiny_models, tmp_path, caplog):
    data = sentiment_layout(tmp_path / "data", train=16, validation=6)
    out = tmp_path / "out"
    interrupted_run(tiny_models, data, out)
    (checkpoint,) = (out / "checkpoints").glob("checkpoint-*")
    cut_short(checkpoint / "model.safetensors")
    adapter, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=2, **FAST)  # overwrite: True
    with caplog.at_level(logging.WARNING, logger="adapters"):
        history = adapter.train(str(data), str(out))
    assert [epoch["epoch"] for epoch in history] == [1, 2]
    (warning,) = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert "model.safetensors" in warning and "starting the run over" in warning


def test_overwrite_starts_a_new_run_even_when_the_checkpoints_are_this_runs(tiny_models, tmp_path, capsys):
    """--overwrite still resumed when the fingerprint matched, though it is documented to start a new run."""
    data = sentiment_layout(tmp_path / "data", train=16, validation=6)
    out = tmp_path / "out"
    interrupted_run(tiny_models, data, out)
    code, err = cli_resume(data, out, tiny_models["distilbert"], capsys, "--overwrite")
    assert code == 0 and "epoch 1/2 done" in err and "epoch 2/2 done" in err, err


def test_a_lora_checkpoint_is_this_models_and_resumes(tiny_models, tmp_path):
    """A LoRA checkpoint holds only LoRA's weights and the new head, under peft's names: not another architecture."""
    data = sentiment_layout(tmp_path / "data", train=16, validation=6)
    out = tmp_path / "out"
    interrupted_run(tiny_models, data, out, lora_r=4)
    adapter, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=2, **FAST, lora_r=4)
    adapter.overwrite_output = False
    assert [epoch["epoch"] for epoch in adapter.train(str(data), str(out))] == [1, 2]


def test_a_checkpoint_of_another_architecture_is_refused_like_its_weights(tiny_models, tmp_path, capsys):
    """Weights replaced under the same model_path (same tokenizer, so the same rows and fingerprint) by a model of
    another shape: the checkpoint resumed with only transformers' key warnings."""
    data = sentiment_layout(tmp_path / "data", train=16, validation=6)
    weights_folder = build_distilbert_classifier(tmp_path / "weights")
    out = tmp_path / "out"
    interrupted_run(tiny_models, data, out, weights_folder)
    build_distilbert_classifier(weights_folder, config_overrides={"n_layers": 3})
    code, err = cli_resume(data, out, weights_folder, capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "another architecture" in err and "--overwrite" in err
    code, err = cli_resume(data, out, weights_folder, capsys, "--overwrite")
    assert code == 0 and "epoch 1/2 done" in err, err


def test_a_checkpoint_with_every_weight_and_one_more_is_of_another_architecture(tiny_models, tmp_path):
    """Shapes that all fit and nothing missing is not enough: a weight the model does not have (a head or layer
    of another architecture) makes the checkpoint another model's, named in the refusal."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification

    from adapters.training.output import other_architecture
    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["distilbert"])
    checkpoint = tmp_path / "checkpoint-1"
    model.save_pretrained(checkpoint)
    assert other_architecture(checkpoint, model) is None
    weights = load_file(checkpoint / "model.safetensors")
    save_file({**weights, "extra_head.weight": torch.zeros(2, 2)}, checkpoint / "model.safetensors")
    assert other_architecture(checkpoint, model) == (
        "1 unexpected weight(s) (extra_head.weight): weights of another architecture")


# ----- dtlpy's train_model: checkpoints stored with the model, a restarted execution continues -----
class ArtifactStore:
    """The model's artifacts as dtlpy's Artifacts repository sees them, kept in a local folder."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir()
        store = self

        class Artifact:
            def __init__(self, path: Path):
                self.id = str(path.relative_to(store.root))
                self.filename = "/artifacts/models/m/" + self.id

        def upload(repo, filepath, overwrite=False, **kwargs):  # dtlpy keeps an existing file unless `overwrite`
            for source in Path(filepath).parent.rglob("*"):
                target = store.root / source.relative_to(Path(filepath).parent)
                if source.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                elif overwrite or not target.exists():
                    shutil.copy2(source, target)

        def download(repo, local_path=None, **kwargs):
            shutil.copytree(store.root, local_path, dirs_exist_ok=True)

        def listing(repo, **kwargs):
            return [Artifact(p) for p in sorted(store.root.rglob("*")) if p.is_file()]

        def delete(repo, artifact_id=None, **kwargs):
            (store.root / artifact_id).unlink()

        self.methods = {"upload": upload, "download": download, "list": listing, "delete": delete}

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())


class PodKilled(BaseException):
    """The pod stopped (preempted, evicted): no `except Exception` of dtlpy's runs, nothing is saved on the way out."""


class Progress:
    """dtlpy's execution progress; `fail_at` makes the execution fail there, as a crash would (`error`: Interrupt,
    which dtlpy's train_model catches to save the output on failure, or PodKilled, which nothing catches)."""

    def __init__(self, fail_at: str | None = None, error: type[BaseException] = Interrupt):
        self.fail_at, self.error = fail_at, error
        self.messages: list[str] = []

    def update(self, message: str = "", progress: int | None = None, **kwargs):
        self.messages.append(message)
        if self.fail_at and message.startswith(self.fail_at):
            raise self.error(message)


def executions_on_new_pods(tmp_path: Path, monkeypatch, datasets: list[Path]) -> ArtifactStore:
    """dtlpy's train_model as the platform runs it: the model's artifacts in an ArtifactStore, and each execution on
    a new pod (nothing local survives) whose `prepare_data` gives the next of `datasets`."""
    store = ArtifactStore(tmp_path / "artifacts")
    for name, method in store.methods.items():
        monkeypatch.setattr(dl.repositories.Artifacts, name, method)
    monkeypatch.setattr(dl.entities.Model, "dataset", property(lambda self: None))
    pods = enumerate(datasets)

    def prepare_data(self, dataset, root_path=None, **kwargs):
        index, data = next(pods)
        pod = tmp_path / f"pod-{index}"
        shutil.copytree(data, pod / "data")
        (pod / "output").mkdir()
        return str(pod), str(pod / "data"), str(pod / "output")

    monkeypatch.setattr(ModelAdapter, "prepare_data", prepare_data)
    return store


def test_dtlpy_train_model_stores_checkpoints_and_a_restarted_execution_continues(tiny_models, tmp_path,
                                                                                monkeypatch):
    data = sentiment_layout(tmp_path / "data", train=16, validation=6)
    store = executions_on_new_pods(tmp_path, monkeypatch, [data, data])
    adapter, samples = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=4, **FAST)
    model = adapter.model_entity
    model.wait_for_model_ready = lambda: model

    with pytest.raises(Interrupt):  # the first execution dies after its second epoch
        adapter.train_model(model, progress=Progress(fail_at="finished epoch: 1/"))
    assert any(f.startswith("checkpoints/checkpoint-") for f in store.files())

    restarted = ModelAdapter(model_entity=model)
    progress = Progress()
    assert restarted.train_model(model, progress=progress) is model
    assert model.status == "trained"
    assert [m for m in progress.messages if m.startswith("finished epoch")] == ["finished epoch: 2/4",
                                                                               "finished epoch: 3/4"]
    files = store.files()
    assert "model.safetensors" in files and not [f for f in files if f.startswith("checkpoints/")]
    report = json.loads((store.root / "training_metrics.json").read_text())
    assert [epoch["epoch"] for epoch in report["epochs"]] == [1, 2, 3, 4] and report["seed"] == 0

    next_run = ModelAdapter(model_entity=model)
    next_run.load_from_model(model_entity=model, local_path=str(tmp_path / "deployed"))
    assert next_run.hugging.model.config.id2label == {0: "neg", 1: "pos"}
    trained = restarted.hugging.model.state_dict()
    assert all(torch.equal(tensor, trained[key]) for key, tensor in next_run.hugging.model.state_dict().items())


def test_a_run_on_other_data_replaces_the_stored_checkpoints_of_a_run_that_never_finished(tiny_models, tmp_path,
                                                                                         monkeypatch):
    """Stored checkpoints are named by step and the run's fingerprint file is one name for every run: a run on
    other data, stored over the checkpoints of a run whose pod was killed, must replace them (dtlpy keeps an
    artifact that exists unless told to overwrite), or its own restart would resume the other run's weights or
    start over. The pods are killed, not failed: dtlpy's save on failure would store the output whole itself."""
    first = sentiment_layout(tmp_path / "first", train=16, validation=6)
    other = sentiment_layout(tmp_path / "other", train=12, validation=6)
    store = executions_on_new_pods(tmp_path, monkeypatch, [first, other, other])
    adapter, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=4, **FAST)
    model = adapter.model_entity
    model.wait_for_model_ready = lambda: model
    for execution in range(2):  # the run on `first` dies after epoch 2, then the run on `other` does
        progress = Progress(fail_at="finished epoch: 1/", error=PodKilled)
        with pytest.raises(PodKilled):
            ModelAdapter(model_entity=model).train_model(model, progress=progress)
        assert [m for m in progress.messages if m.startswith("finished epoch")] == ["finished epoch: 0/4",
                                                                                   "finished epoch: 1/4"]
    progress = Progress()
    ModelAdapter(model_entity=model).train_model(model, progress=progress)  # the run on `other`, restarted
    assert [m for m in progress.messages if m.startswith("finished epoch")] == ["finished epoch: 2/4",
                                                                               "finished epoch: 3/4"]
    assert not [f for f in store.files() if f.startswith("checkpoints/")]


@pytest.mark.parametrize("steps", [100, 101, 1000, 3])
def test_progress_within_epochs_is_one_update_per_whole_percent_of_the_run_at_most(steps):
    """Each progress update is a call to the platform: a run of any length makes at most 100 of them (one per
    percent; 100 steps is the limit where every step reports), each naming its epoch and step."""
    from adapters.training.reporting import StepProgress
    updates: list[tuple[int, str]] = []
    reporter = StepProgress(SimpleNamespace(update=lambda progress, message: updates.append((progress, message))),
                            epochs=4 if steps > 3 else 3)
    for step in range(1, steps + 1):
        reporter(step, steps)
    percents = [percent for percent, _ in updates]
    assert len(updates) == min(steps, 100) and percents == sorted(set(percents)) and percents[-1] == 100
    assert updates[-1][1] == f"training: epoch {4 if steps > 3 else 3}/{4 if steps > 3 else 3}, step {steps}/{steps}"
    if steps == 100:
        assert updates[24][1] == "training: epoch 1/4, step 25/100"
        assert updates[25][1] == "training: epoch 2/4, step 26/100"


# ----- one run at a time per output folder -----
def test_a_second_run_into_a_live_runs_folder_is_refused_naming_the_holders_pid(tiny_models, tmp_path, capsys,
                                                                                 nothing_loads):
    """A second `train` into a live run's OUTPUT_DIR resumed its checkpoints under it, then crashed: the folder is
    locked for the run, and another process (a real one here) is refused at once, before anything loads."""
    import subprocess
    import sys
    data = sentiment_layout(tmp_path / "data", train=4, validation=0)
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom pathlib import Path\nfrom adapters.training.output import OutputFolder\n"
         "with OutputFolder(Path(sys.argv[1])).lock():\n    print('held', flush=True)\n    sys.stdin.read()\n",
         str(out)], cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        args = ["train", "distilbert-sst2", str(data), str(out), "--model-path", str(tiny_models["distilbert"])]
        assert cli_main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is in use: process {holder.pid} is training into it" in err
        assert not out.exists()
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
    # Its run over, the lock is free again; this process takes it (and gives it back) in turn.
    from adapters.training.output import OutputFolder
    with OutputFolder(out).lock():
        assert (tmp_path / ".out.lock.pid").read_text().strip() == str(os.getpid())
    assert not (tmp_path / ".out.lock.pid").exists()


def test_the_kept_epoch_is_the_first_best_or_the_last_and_says_why():
    from adapters.training.reporting import kept_epoch
    records = [{"epoch": 1, "accuracy": 0.5}, {"epoch": 2, "accuracy": 0.75}, {"epoch": 3, "accuracy": 0.75},
               {"epoch": 4, "accuracy": 0.5}]
    kept = kept_epoch(records, "accuracy", epochs=4, patience=0)
    assert (kept["epoch"], kept["value"]) == (2, 0.75)  # Trainer takes a later epoch only when strictly better
    assert kept["reason"] == "the best validation accuracy (0.75) of the 4 epoch(s) validated"
    stopped = kept_epoch(records, "accuracy", epochs=10, patience=2)
    assert stopped["reason"].endswith("early stopping ended the run after epoch 4 of 10 (2 epoch(s) without a "
                                      "better validation score)")
    last = kept_epoch([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}], None, epochs=2, patience=0)
    assert last == {"epoch": 2, "reason": "the last epoch (no validation subset to choose by)"}
    assert kept_epoch([], "accuracy", 3, 0) is None
