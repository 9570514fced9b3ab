"""oneDNN routing of dense layers: same numbers as torch's default kernel, training untouched, choices remembered."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from adapters.runtimes import cpu_kernels
from adapters.runtimes.cpu_kernels import onednn_available, onednn_is_faster, use_onednn_linears

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


def test_routed_layers_match_the_default_kernel_and_keep_autograd(monkeypatch):
    monkeypatch.setenv("HF_ADAPTERS_ONEDNN", "1")  # route whatever this machine's timings say
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), Conv1D(8, 32))
    reference = nn.Sequential(nn.Linear(16, 32), nn.GELU(), Conv1D(8, 32))
    reference.load_state_dict(model.state_dict())
    assert use_onednn_linears(model) == 2
    assert model.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(3, 5, 16)
    with torch.inference_mode():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    loss = model(x).square().mean()  # gradients recorded: the standard path, so training works
    loss.backward()
    assert model[0].weight.grad is not None and model[2].weight.grad is not None


def test_adapters_route_their_layers_on_cpu_only_for_inference(make_adapter, monkeypatch):
    monkeypatch.setenv("HF_ADAPTERS_ONEDNN", "1")
    adapter = make_adapter("models.distilbert_sst2")
    linear = adapter.model.pre_classifier
    assert linear.forward.__func__.__name__ == "_linear_forward"
    x = torch.randn(2, linear.in_features)
    with torch.inference_mode():
        assert torch.allclose(linear(x), F.linear(x, linear.weight, linear.bias), atol=1e-5)


def test_the_environment_switch_keeps_default_kernels(monkeypatch):
    monkeypatch.setenv("HF_ADAPTERS_ONEDNN", "0")
    assert use_onednn_linears(nn.Sequential(nn.Linear(4, 4))) == 0


def test_auto_routes_a_layer_only_where_the_measurement_favours_onednn(monkeypatch, tmp_path):
    """The default: each layer shape is timed with both kernels (default first, then oneDNN), for few rows and for
    many, and the layer takes oneDNN in a regime only where it was at least 10% faster."""
    monkeypatch.setenv("HF_ADAPTERS_ONEDNN", "auto")
    monkeypatch.setenv(cpu_kernels.CACHE_VARIABLE, str(tmp_path))  # nothing remembered: every shape is timed
    measured: list[float] = []
    monkeypatch.setattr(cpu_kernels, "_best_seconds", lambda run, calls, repeats=3: measured.pop(0))

    def route(timings: list[float]) -> tuple[int, tuple[bool, bool]]:
        onednn_is_faster.cache_clear()
        (tmp_path / "kernels.json").unlink(missing_ok=True)
        measured[:] = timings
        model = nn.Sequential(nn.Linear(8, 12))
        return use_onednn_linears(model), getattr(model[0], "onednn_routes", None)

    try:
        assert route([1.05, 1.0, 1.05, 1.0]) == (0, (False, False))  # 5% faster: not worth switching
        assert route([1.0, 2.0, 2.0, 1.0]) == (1, (False, True))  # faster on many rows only
        count, routes = route([3.0, 1.0, 3.0, 1.0])
        assert (count, routes) == (1, (True, True)) and not measured
    finally:
        onednn_is_faster.cache_clear()


# ----- kernel choices remembered per machine -----
@pytest.fixture
def timings(monkeypatch, tmp_path):
    """Timings handed to the kernel choice in order (default kernel, then oneDNN, per row regime); an empty list
    means no timing may happen. The remembered choices live in tmp_path."""
    monkeypatch.setenv("HF_ADAPTERS_ONEDNN", "auto")
    monkeypatch.setenv(cpu_kernels.CACHE_VARIABLE, str(tmp_path))
    queued: list[float] = []
    monkeypatch.setattr(cpu_kernels, "_best_seconds", lambda run, calls, repeats=3: queued.pop(0))
    onednn_is_faster.cache_clear()
    yield queued
    onednn_is_faster.cache_clear()


def routed(in_features: int = 8, out_features: int = 12) -> tuple[bool, bool] | None:
    onednn_is_faster.cache_clear()  # a new process
    model = nn.Sequential(nn.Linear(in_features, out_features))
    use_onednn_linears(model)
    return getattr(model[0], "onednn_routes", None)


def remembered(tmp_path) -> dict:
    return json.loads((tmp_path / "kernels.json").read_text())["machines"]


def test_a_choice_is_timed_once_per_machine_then_read_back(timings, tmp_path):
    timings[:] = [1.0, 2.0, 2.0, 1.0]
    assert routed() == (False, True) and not timings
    assert remembered(tmp_path) == {cpu_kernels.machine_key(): {"8x12x16:float32": False, "8x12x256:float32": True}}
    assert routed() == (False, True)  # timings is empty: popping it would raise, so nothing was timed
    timings[:] = [2.0, 1.0, 2.0, 1.0]
    assert routed(8, 16) == (True, True) and not timings  # another shape is timed, beside the first
    assert len(remembered(tmp_path)[cpu_kernels.machine_key()]) == 4


def test_the_remembered_choice_is_followed_and_another_machines_is_not(timings, tmp_path):
    machine = cpu_kernels.machine_key()
    (tmp_path / "kernels.json").write_text(json.dumps({"machines": {
        machine: {"8x12x16:float32": True, "8x12x256:float32": False},
        "another CPU | torch 0 | 64 threads": {"8x16x16:float32": True, "8x16x256:float32": True}}}))
    assert routed() == (True, False)  # what the file says, though timings would have said otherwise
    timings[:] = [1.0, 1.0, 1.0, 1.0]
    assert routed(8, 16) == (False, False) and not timings  # this machine never timed 8x16: timed, not taken from another
    assert remembered(tmp_path)["another CPU | torch 0 | 64 threads"] == {"8x16x16:float32": True,
                                                                          "8x16x256:float32": True}


@pytest.mark.parametrize("content", ["not json", "[]", '{"machines": []}', '{"machines": {"x": {"8x12x16:float32": 1}}}'])
def test_a_damaged_choices_file_is_timed_again_and_rewritten(timings, tmp_path, content):
    (tmp_path / "kernels.json").write_text(content)
    timings[:] = [2.0, 1.0, 2.0, 1.0]
    assert routed() == (True, True) and not timings
    assert remembered(tmp_path)[cpu_kernels.machine_key()] == {"8x12x16:float32": True, "8x12x256:float32": True}


def test_an_unwritable_cache_costs_a_timing_not_the_load(timings, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(cpu_kernels.CACHE_VARIABLE, str(blocker / "sub"))  # a folder inside a file: never writable
    timings[:] = [2.0, 1.0, 2.0, 1.0]
    assert routed() == (True, True)
    timings[:] = [1.0, 2.0, 1.0, 2.0]
    assert routed() == (False, False) and not timings  # timed again, as nothing could be kept


def test_the_file_keeps_at_most_its_limits_of_choices_and_machines(timings, tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_kernels, "MAX_REMEMBERED", 4)
    monkeypatch.setattr(cpu_kernels, "MAX_MACHINES", 2)
    for out_features in (12, 16):
        timings[:] = [1.0, 1.0, 1.0, 1.0]
        routed(8, out_features)
    assert len(remembered(tmp_path)[cpu_kernels.machine_key()]) == 4  # at the limit: all kept
    timings[:] = [1.0, 1.0, 1.0, 1.0]
    routed(8, 20)
    kept = remembered(tmp_path)[cpu_kernels.machine_key()]
    assert list(kept) == ["8x16x16:float32", "8x16x256:float32", "8x20x16:float32", "8x20x256:float32"]
    data = {"machines": {"old": {}, "older": {}, **remembered(tmp_path)}}
    (tmp_path / "kernels.json").write_text(json.dumps(data))
    timings[:] = [1.0, 1.0, 1.0, 1.0]
    routed(8, 24)
    assert list(remembered(tmp_path)) == ["older", cpu_kernels.machine_key()]  # this machine last, newest
