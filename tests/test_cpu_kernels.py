"""oneDNN routing of dense layers: same numbers as torch's default kernel, training untouched, choices remembered."""
import json

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


def routed_layer(monkeypatch, tmp_path, routes: tuple[bool, bool]) -> nn.Module:
    """A Linear(8, 4) routed in the regimes `routes` (few rows, many rows), as `auto` decides from its timings
    (no remembered choice: the choices file is a fresh one in tmp_path)."""
    monkeypatch.setenv("HF_ADAPTERS_ONEDNN", "auto")
    monkeypatch.setenv(cpu_kernels.CACHE_VARIABLE, str(tmp_path))
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
def test_a_product_takes_the_kernel_of_its_row_regime_with_64_rows_the_first_large_one(monkeypatch, tmp_path,
                                                                                       routes):
    """`SMALL_ROWS` (64) rows and more are the prefill / classifier regime, fewer the decoding regime; rows are
    every leading dimension together (2 x 32 is 64 rows); training and a lone vector keep the default kernel."""
    assert cpu_kernels.SMALL_ROWS == 64
    layer = routed_layer(monkeypatch, tmp_path, routes)
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
