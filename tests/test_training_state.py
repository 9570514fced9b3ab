"""State a training run carries: an adapter trained again, checkpoints of another run, the seed of a resumed run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from adapters.training.output import OutputError, OutputFolder, Resume, read_run
from adapters.training.trainer import Prepared, fingerprint
from tests.test_training import FAST, local_adapter, sentiment_layout


class Interrupt(Exception):
    pass


def stop_after_first_epoch(epoch: int, epochs: int) -> None:
    if epoch == 0:
        raise Interrupt


def interrupted(adapter, data, out) -> None:
    """Run until the first epoch's checkpoint is written, then stop, as a preempted pod does."""
    adapter.overwrite_output = False  # as the CLI runs it: what is in OUT is never replaced unasked
    with pytest.raises(Interrupt):
        adapter.train(str(data), str(out), on_epoch_end_callback=stop_after_first_epoch)
    assert list((out / "checkpoints").glob("checkpoint-*"))


@pytest.mark.parametrize("same_folder", [False, True], ids=["another-folder", "the-folder-rewritten"])
def test_the_same_adapter_trained_again_learns_the_new_data(tiny_models, tmp_path, same_folder):
    """A second `train` reads its data: in another folder, or in the same folder with new content (an SDK user
    who refreshes the data between runs)."""
    first = sentiment_layout(tmp_path / "first", labels=("pos", "neg"), train=8, validation=0)
    adapter, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=1, **FAST)
    adapter.train(str(first), str(tmp_path / "out-1"))
    assert set(adapter.hugging.model.config.label2id) == {"pos", "neg"}
    second = tmp_path / ("first" if same_folder else "second")
    shutil.rmtree(second, ignore_errors=True)
    sentiment_layout(second, labels=("good", "bad"), train=12, validation=0)
    history = adapter.train(str(second), str(tmp_path / "out-2"))
    assert len(history) == 1
    assert set(adapter.hugging.model.config.label2id) == {"good", "bad"}
    assert len(adapter._prepared.train_rows) == 12


def test_checkpoints_of_a_run_whose_validation_subset_changed_are_not_resumed(tiny_models, tmp_path):
    data = sentiment_layout(tmp_path / "data", train=16, validation=6)
    out = tmp_path / "out"
    first, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=3, **FAST)
    interrupted(first, data, out)
    run = read_run(out / "checkpoints")
    for json_file in (data / "validation" / "json").glob("*.json"):  # the validation answers change, train does not
        item = json.loads(json_file.read_text())
        item["annotations"][0]["coordinates"] = {"pos": "neg", "neg": "pos"}[item["annotations"][0]["coordinates"]]
        json_file.write_text(json.dumps(item))
    second, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=3, **FAST)
    second.overwrite_output = False
    with pytest.raises(OutputError, match="checkpoints of a different run"):
        second.train(str(data), str(out))
    assert read_run(out / "checkpoints") == run  # refused before anything was replaced


def test_a_resumed_run_without_a_seed_keeps_the_seed_it_was_started_with(tiny_models, tmp_path):
    """`seed: null` draws a seed per run; the rerun that continues an interrupted run must train, and report, with
    that run's seed (a fresh draw would shuffle the remaining epochs otherwise and report a seed no run used)."""
    data = sentiment_layout(tmp_path / "data", train=16, validation=0)
    out = tmp_path / "out"
    settings = {**FAST, "seed": None, "epochs": 2}
    first, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], **settings)
    interrupted(first, data, out)
    seed = read_run(out / "checkpoints")["seed"]
    assert first.training_seed == seed

    resumed, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], **settings)
    resumed.overwrite_output = False
    history = resumed.train(str(data), str(out))
    assert [epoch["epoch"] for epoch in history] == [1, 2]  # the first epoch came from the checkpoint
    assert resumed.training_seed == seed
    resumed.save(str(out))
    assert json.loads((out / "training_metrics.json").read_text())["seed"] == seed

    fresh, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], **settings)
    fresh.train(str(data), str(tmp_path / "fresh"))
    assert fresh.training_seed != seed  # a new run draws its own: the check above can fail


def test_the_run_fingerprint_follows_what_is_learned_and_not_where_or_how_it_predicts():
    """Two runs are the same run (one may resume the other's checkpoints) when module, configuration and rows
    agree; a learning setting or a row changes it, the device and prediction batching do not."""
    class Adapter:  # what `fingerprint` reads of an adapter: its module and configuration
        def __init__(self, **configuration):
            self.configuration = {"module_name": "models.distilbert_sst2", "learning_rate": 5e-5, "epochs": 2,
                                  "device": "cpu", "batch_size": 8, **configuration}

    rows = [{"input_ids": [101, 7, 102], "labels": 1}]
    prepared = Prepared(Path("data"), {}, 0, rows, [])
    same = fingerprint(Adapter(), prepared)
    assert fingerprint(Adapter(device="cuda", batch_size=32, max_batch_tokens=512, reanswer=True), prepared) == same
    assert fingerprint(Adapter(learning_rate=1e-4), prepared) != same
    assert fingerprint(Adapter(epochs=3), prepared) != same
    other_module = type("Other", (Adapter,), {"__module__": "models.another"})
    assert fingerprint(other_module(), prepared) != same
    assert fingerprint(Adapter(), Prepared(Path("data"), {}, 0, rows, rows)) != same  # the validation rows too


@pytest.mark.parametrize("damage", ["run file", "checkpoint"])
def test_a_run_started_over_from_damaged_checkpoints_is_the_one_its_restart_continues(tmp_path, damage):
    """With overwrite, damaged checkpoints start the run over in a folder that names this run and its seed: if it is
    interrupted in turn, its restart continues it rather than finding "checkpoints of a different run"."""
    checkpoints = tmp_path / "out" / "checkpoints"
    (checkpoints / "checkpoint-3").mkdir(parents=True)
    if damage == "run file":
        (checkpoints / "run.json").write_text('{"not": "a run"}')
    else:  # this run's file, and a checkpoint whose trainer state is not JSON
        (checkpoints / "run.json").write_text(json.dumps({"fingerprint": "this-run", "seed": 7}))
        (checkpoints / "checkpoint-3" / "trainer_state.json").write_text("{not json")
    assert OutputFolder(tmp_path / "out", overwrite=True).begin("this-run", 7) == Resume(None, 7)
    assert read_run(checkpoints) == {"fingerprint": "this-run", "seed": 7}
    assert not (checkpoints / "checkpoint-3").exists()
    assert OutputFolder(tmp_path / "out").begin("this-run", 99) == Resume(None, 7)  # continued, with its seed
