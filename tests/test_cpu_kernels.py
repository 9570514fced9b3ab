"""oneDNN routing of dense layers: same numbers as torch's default kernel, and training untouched."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from adapters.runtimes import cpu_kernels
from adapters.runtimes.cpu_kernels import onednn_available, onednn_is_faster, use_onednn_linears
from tests.tolerances import U32

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
    with torch.inference_mode():  # two kernels' sums of n <= 32 products (each <= 4): within 2 n u of n x 4, twice
        assert torch.allclose(model(x), reference(x), atol=2 * 2 * 32 * U32 * 32 * 4)
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
        reference = F.linear(x, linear.weight, linear.bias)
        assert torch.allclose(linear(x), reference, atol=2 * 32 * U32 * 32)  # 32 products <= 1


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


# ----- decisions: which kernel runs a given product -----
class KernelCalls:
    """Counts the products that reach oneDNN (torch's own op, wrapped): which kernel ran, not only what came out."""

    def __init__(self, monkeypatch, refuse: torch.dtype | None = None):
        self.calls: list[tuple[int, ...]] = []
        real = torch.ops.mkldnn._linear_pointwise

        def counted(x, weight, *args):
            if x.dtype == refuse:  # what oneDNN does for bfloat16 on a CPU with AVX2 only (ONEDNN_MAX_CPU_ISA=AVX2)
                raise RuntimeError("could not create a primitive descriptor for the inner product forward "
                                   "propagation primitive")
            self.calls.append(tuple(x.shape))
            return real(x, weight, *args)
        monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", counted)


def routed_layer(monkeypatch, routes: tuple[bool, bool]) -> nn.Module:
    """A Linear(8, 4) routed in the regimes `routes` (few rows, many rows), as `auto` decides from its timings."""
    monkeypatch.setenv("HF_ADAPTERS_ONEDNN", "auto")
    timings = {(False, False): [1.0, 1.0, 1.0, 1.0], (False, True): [1.0, 1.0, 2.0, 1.0],
               (True, False): [2.0, 1.0, 1.0, 1.0], (True, True): [2.0, 1.0, 2.0, 1.0]}[routes]
    monkeypatch.setattr(cpu_kernels, "_best_seconds", lambda run, calls, repeats=3: timings.pop(0))
    onednn_is_faster.cache_clear()
    layer = nn.Linear(8, 4)
    try:
        assert use_onednn_linears(layer) == int(any(routes)) and layer.onednn_routes == routes
    finally:
        onednn_is_faster.cache_clear()
    return layer


@pytest.mark.parametrize("routes", [(False, True), (True, False)])
def test_a_product_takes_the_kernel_of_its_row_regime_with_64_rows_the_first_large_one(monkeypatch, routes):
    """`SMALL_ROWS` (64) rows and more are the prefill / classifier regime, fewer the decoding regime; rows are
    every leading dimension together (2 x 32 is 64 rows); training and a lone vector keep the default kernel."""
    assert cpu_kernels.SMALL_ROWS == 64
    layer = routed_layer(monkeypatch, routes)
    kernels = KernelCalls(monkeypatch)
    shapes = [(63, 8), (64, 8), (2, 31, 8), (2, 32, 8), (1, 8)]
    with torch.inference_mode():
        for shape in shapes:
            x = torch.randn(*shape)
            reference = F.linear(x, layer.weight, layer.bias)
            assert torch.allclose(layer(x), reference, atol=2 * 8 * U32 * 8 * 2)  # 8 products <= 2
    few, many = routes
    assert kernels.calls == [s for s in shapes if (many if s[0] * (s[1] if len(s) == 3 else 1) >= 64 else few)]
    kernels.calls.clear()
    layer(torch.randn(64, 8))  # gradients recorded: the standard path
    with torch.inference_mode():
        layer(torch.randn(8))  # one vector: no rows to batch
    assert kernels.calls == []


def test_a_type_onednn_has_no_kernel_for_on_this_cpu_is_never_routed(monkeypatch):
    """bfloat16 on a CPU with AVX2 only: oneDNN refuses the product, so no bfloat16 layer may be routed (the model
    would fail at its first forward with mode `1`, or while `auto` times it); float32 layers still are."""
    KernelCalls(monkeypatch, refuse=torch.bfloat16)
    cpu_kernels.onednn_runs.cache_clear()
    try:
        for mode in ("1", "auto"):
            monkeypatch.setenv("HF_ADAPTERS_ONEDNN", mode)
            onednn_is_faster.cache_clear()
            half = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).to(torch.bfloat16)
            assert use_onednn_linears(half) == 0
            with torch.inference_mode():
                assert half(torch.randn(70, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16
        monkeypatch.setenv("HF_ADAPTERS_ONEDNN", "1")
        assert use_onednn_linears(nn.Sequential(nn.Linear(16, 32))) == 1
    finally:
        cpu_kernels.onednn_runs.cache_clear()
        onednn_is_faster.cache_clear()
