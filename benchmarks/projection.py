"""What a suite's measured CPU throughput projects to on the T4 GPU of the app's `hugging-gpu` compute config.

`python -m benchmarks.projection [RESULTS.json]` prints the table from a saved `python -m benchmarks.run` report.

A projection, not a measurement (no GPU here), from the work the benchmark counted: each question's model FLOPs
(`model_gflop` / questions), run at the same fraction of the T4's dense peak as this package reached of this CPU's
measured matmul peak in the same run (`fraction_of_matmul_peak`), at the manifest's `dtype: float32` (8.1 TFLOP/s
on a T4; Turing has no TF32). A generator is also bounded by memory bandwidth: each decoding step reads every
weight once per micro-batch, so a micro-batch of `batch_size` questions takes at least (weight bytes x new tokens)
/ 320 GB/s. The lower bound wins. `dtype: float16` would use the T4's tensor cores (65 TFLOP/s), but how much of
that small batches reach cannot be read off a CPU run, so it is not projected.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

T4_FLOAT32_FLOPS = 8.1e12
T4_BANDWIDTH = 320e9  # bytes per second
FLOAT32_BYTES = 4


def t4_questions_per_s(gflop_per_question: float, fraction_of_peak: float, parameters: float,
                       new_tokens_per_question: float = 0.0, batch_size: int = 32) -> float:
    """Questions a second one T4 may answer in float32: compute bound, and for generators also bandwidth bound."""
    compute = T4_FLOAT32_FLOPS * fraction_of_peak / (gflop_per_question * 1e9)
    if not new_tokens_per_question or parameters <= 0:  # no decoding, or weights too few to count (--quick)
        return compute
    step_seconds = parameters * FLOAT32_BYTES / T4_BANDWIDTH  # one decoding step of a micro-batch
    return min(compute, batch_size / (step_seconds * new_tokens_per_question))


def suite_projection(summary: dict[str, Any]) -> dict[str, Any]:
    """The T4 projection of one suite of a `benchmarks.run` report, from its `ours (torch)` measurement."""
    ours = next(m for m in summary["methods"] if m["method"] == "ours (torch)")
    questions = summary["questions"]
    new_tokens = summary.get("generated_tokens", 0) / questions
    gflop = summary["model_gflop"] / questions
    parameters = summary.get("parameters") or summary["parameters_m"] * 1e6  # exact where the report has it
    projected = t4_questions_per_s(gflop, ours["fraction_of_matmul_peak"], parameters, new_tokens,
                                   summary["configuration"].get("batch_size", 32))
    return {"cpu_questions_per_s": ours["questions_per_s"], "gflop_per_question": round(gflop, 2),
            "fraction_of_peak": round(ours["fraction_of_matmul_peak"], 3),
            "new_tokens_per_question": round(new_tokens, 1), "t4_float32_questions_per_s": round(projected, 1)}


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path(__file__).resolve().parent / "results" / "latest.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    print("| suite | CPU questions/s | GFLOP per question | T4 float32 questions/s (projected) |")
    print("|---|---:|---:|---:|")
    for name, summary in report["suites"].items():
        if "methods" not in summary:
            continue
        projection = suite_projection(summary)
        print(f"| {name} | {projection['cpu_questions_per_s']} | {projection['gflop_per_question']} | "
              f"{projection['t4_float32_questions_per_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
