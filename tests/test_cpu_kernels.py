"""oneDNN routing of dense layers: same numbers as torch's default kernel, and training untouched."""
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


def test_auto_routes_a_layer_only_where_the_measurement_favours_onednn(monkeypatch):
    """The default: each layer shape is timed with both kernels (default first, then oneDNN), for few rows and for
    many, and the layer takes oneDNN in a regime only where it was at least 10% faster."""
    monkeypatch.setenv("HF_ADAPTERS_ONEDNN", "auto")
    measured: list[float] = []
    monkeypatch.setattr(cpu_kernels, "_best_seconds", lambda run, calls, repeats=3: measured.pop(0))

    def route(timings: list[float]) -> tuple[int, tuple[bool, bool]]:
        onednn_is_faster.cache_clear()
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
