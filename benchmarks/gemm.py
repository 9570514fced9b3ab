"""Dense float32 layer throughput by kernel: torch's default (MKL sgemm) against oneDNN, on layer shapes.

`python -m benchmarks.gemm` prints GFLOP/s per shape; it is why adapters/runtimes/cpu_kernels.py routes dense layers
through oneDNN on CPU. Not a test: nothing is asserted.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from adapters.runtimes.cpu_kernels import onednn_available

from .measure import best_seconds

# (rows, in, out): a DistilBERT FFN on a 512-token batch, its way back, one 60-token text, one decoding step.
SHAPES = ((2048, 2048, 2048), (512, 768, 3072), (512, 3072, 768), (60, 768, 768), (32, 1024, 1024))


def main() -> int:
    print(f"{torch.get_num_threads()} torch threads; GFLOP/s of y = x @ W.T + b")
    for rows, fan_in, fan_out in SHAPES:
        x, weight, bias = torch.randn(rows, fan_in), torch.randn(fan_out, fan_in), torch.randn(fan_out)
        flops = 2 * rows * fan_in * fan_out
        with torch.inference_mode():
            default = flops / best_seconds(lambda: F.linear(x, weight, bias), 10)
            line = f"{rows:>5} x {fan_in:>5} x {fan_out:>5}: default {default / 1e9:7.1f}"
            if onednn_available():
                seconds = best_seconds(lambda: torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], ""), 10)
                line += f"   oneDNN {flops / seconds / 1e9:7.1f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
