"""`python -m benchmarks.training_memory`: peak memory of fine-tuning each model at its real size, per configuration.

For every model of the manifest, a randomly initialised model of the real architecture (DistilBERT-base,
BART-large, GPT-2 large = DialoGPT-large, T5-base) takes training steps through this package's own training
path (`trainable_model`, `training_arguments`, `ValidatingTrainer`) on CPU, for four configurations: full
fine-tuning, + gradient checkpointing, LoRA, LoRA + gradient checkpointing; in float32, and with `--precision
bf16` under bf16 autocast (the CPU twin of the fp16 autocast a T4 runs, see docs/training.md).

Attention dropout is off: on CPU, `scaled_dot_product_attention` with dropout falls back to the kernel that
stores every attention matrix, while a T4 runs its memory-efficient kernel, which stores none (measured: +200 MiB
per GPT-2-large layer and 1024-token row on CPU). Without dropout the CPU kernel stores what the T4's does.

Each measurement runs in a fresh process, whose peak resident memory (VmHWM) above its memory before the
model was built is the figure; glibc is told to return every freed block (EXACT_MALLOC), so that peak is the
peak of live memory, not of what the allocator keeps. The first step runs on 8-token rows so that the optimizer state exists; the
second runs full-length rows (the manifest's `max_source_length` / context window / `max_target_length`) at
the measured batch size, so its peak is the steady-state peak of training: weights, gradients, optimizer state
and the activations of one batch. The first step's peak is the fixed part (weights, gradients, optimizer
state); the second's excess over it, per row, is the cost of a row, and the table extrapolates to the
manifest's `train_batch_size`, which it also measures directly when the estimate fits. A run that would not
fit in `--max-gib` is refused by the child's allocator (RLIMIT_DATA) instead of swapping the machine.

    python -m benchmarks.training_memory                          # everything, float32, batches 1 and 2
    python -m benchmarks.training_memory --models dialogpt-large --configs lora lora+gc --precision bf16
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

RESULTS = Path(__file__).resolve().parent / "results"
# glibc raises its mmap threshold as large blocks are freed, then keeps freed activations in its heap, so peak
# RSS would count memory torch already released (measured: 86 MiB per checkpointed GPT-2-large layer instead of
# the 5 MiB it holds). A fixed threshold maps every block over 64 KiB on its own and unmaps it when freed, so
# the peak RSS is the peak of live memory.
EXACT_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
CONFIGS = {"full": (0, False), "full+gc": (0, True), "lora": (16, False), "lora+gc": (16, True)}

# model -> (transformers class, config class, real-size configuration, task)
ARCHITECTURES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "distilbert-sst2": ("DistilBertForSequenceClassification", "DistilBertConfig",
                        dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072, vocab_size=30522,
                             max_position_embeddings=512, num_labels=2, attention_dropout=0.0), "classification"),
    "bart-large-mnli": ("BartForSequenceClassification", "BartConfig",
                        dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                             decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                             vocab_size=50265, max_position_embeddings=1024, num_labels=3, attention_dropout=0.0),
                        "classification"),
    "dialogpt-large": ("GPT2LMHeadModel", "GPT2Config",
                       dict(n_embd=1280, n_layer=36, n_head=20, n_positions=1024, vocab_size=50257, attn_pdrop=0.0),
                       "causal"),
    "t5-email": ("T5ForConditionalGeneration", "T5Config",
                 dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12,
                      vocab_size=32128, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1), "seq2seq"),
}


# --quick: the same code path on tiny widths and short rows, so the benchmark is tested and never rots.
QUICK_SIZES = {"distilbert-sst2": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64),
               "bart-large-mnli": dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                       decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64),
               "dialogpt-large": dict(n_embd=32, n_layer=2, n_head=2),
               "t5-email": dict(d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2)}
QUICK_SHAPES = {"source": 32, "target": 8}


def shapes(model_name: str, quick: bool = False) -> dict[str, int]:
    """The manifest's training sizes: batch, input length and (generators) answer length of a full row."""
    from adapters.core.manifest import model_entry

    if quick:
        return {**shapes(model_name), **QUICK_SHAPES}
    configuration = model_entry(model_name)["configuration"]
    task = ARCHITECTURES[model_name][3]
    if task == "causal":  # the history fills the context window; the loss is on the answer budget
        return {"batch": configuration["train_batch_size"], "source": 1024,
                "target": configuration["max_new_tokens"]}
    return {"batch": configuration["train_batch_size"], "source": configuration["max_source_length"],
            "target": configuration.get("max_target_length", 0)}


# ----- the child: one measurement -----

def rows(task: str, count: int, source: int, target: int, vocab: int, eos: int | None) -> list[dict[str, Any]]:
    """Random full-length rows; a row ends in the end-of-sequence token (BART's classifier reads its state)."""
    import torch

    generator = torch.Generator().manual_seed(count * 1000 + source)
    made = []
    for _ in range(count):
        ids = torch.randint(5, vocab, (source,), generator=generator).tolist()
        if eos is not None:
            ids[-1] = eos
        row: dict[str, Any] = {"input_ids": ids, "attention_mask": [1] * source}
        if task == "classification":
            row["labels"] = 0
        elif task == "causal":
            row["labels"] = [-100] * (source - target) + ids[source - target:]
        else:
            row["labels"] = torch.randint(5, vocab, (target,), generator=generator).tolist()
        made.append(row)
    return made


def _memory_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")  # VmHWM := VmRSS


def measure(model_name: str, config: str, batch: int, precision: str, max_gib: float,
            quick: bool = False) -> dict[str, Any]:
    """Build, prepare and train two steps: the first (8-token rows) peaks at weights + gradients + optimizer
    state, the second (full rows) adds the activations of `batch` rows. Both peaks are above the memory the
    process had before the model was built."""
    import torch
    import transformers

    from adapters.training.loop import Collator, LoopSettings, ValidatingTrainer, training_arguments
    from adapters.training.trainer import trainable_model

    limit = int(max_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    model_class, config_class, sizes, task = ARCHITECTURES[model_name]
    sizes = {**sizes, **QUICK_SIZES[model_name]} if quick else sizes
    size = shapes(model_name, quick)
    lora_r, checkpointing = CONFIGS[config]
    configuration = {"epochs": 1, "learning_rate": 1e-5, "train_batch_size": batch,
                     "gradient_accumulation_steps": 1, "gradient_checkpointing": checkpointing,
                     "mixed_precision": precision if precision != "fp32" else "no", "weight_decay": 0.01,
                     "warmup_ratio": 0.0, "max_grad_norm": 1.0, "early_stopping_patience": 0,
                     "lora_r": lora_r, "lora_alpha": 2 * lora_r, "lora_dropout": 0.05}
    result: dict[str, Any] = {"model": model_name, "config": config, "precision": precision, "batch": batch,
                              "source": size["source"], "target": size["target"]}
    baseline = _memory_mib("VmRSS")
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**sizes))
    trained = trainable_model(model, configuration, classifier=task == "classification")
    result.update(parameters=sum(p.numel() for p in model.parameters()),
                  trainable=sum(p.numel() for p in trained.parameters() if p.requires_grad),
                  weights_mib=round(_memory_mib("VmRSS") - baseline))
    eos = model.config.eos_token_id
    data = rows(task, batch, 8, min(4, size["target"]), sizes["vocab_size"], eos) \
        + rows(task, batch, size["source"], size["target"], sizes["vocab_size"], eos)
    started: list[float] = []

    class Probe(transformers.TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            started.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 1:  # weights, gradients and optimizer state all exist by now
                result["fixed_mib"] = round(_memory_mib("VmHWM") - baseline)
                _reset_peak()
            else:
                result["full_step_seconds"] = round(time.perf_counter() - started[-1], 1)

    with tempfile.TemporaryDirectory() as folder:
        arguments = training_arguments(LoopSettings(configuration, 0, Path(folder), None), torch.device("cpu"))
        arguments = dataclasses.replace(arguments, max_steps=2, save_strategy="no", logging_strategy="no",
                                        train_sampling_strategy="sequential")
        decoder_inputs = model.prepare_decoder_input_ids_from_labels if task == "seq2seq" else None
        trainer = ValidatingTrainer(trained, arguments, data, [], Collator(0, decoder_inputs), callbacks=[Probe()])
        _reset_peak()
        try:
            trainer.train()
            result["peak_mib"] = round(_memory_mib("VmHWM") - baseline)
        except RuntimeError as error:  # the allocator hit --max-gib: the fixed part may still be known
            result["error"] = str(error).splitlines()[0][-200:]
    return result


# ----- the parent: a fresh process per measurement, then the table -----

def run_child(model: str, config: str, batch: int, precision: str, max_gib: float,
              quick: bool = False) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.training_memory", "--child", json.dumps(
        [model, config, batch, precision, max_gib, quick])]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
                          env={**os.environ, **EXACT_MALLOC})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": model, "config": config, "precision": precision, "batch": batch, "error": last[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_bound(points: list[dict[str, Any]]) -> Callable[[int], float] | None:
    """An upper bound of the peak at any number of rows, from the measured points (None without a peak).

    A step peaks at one of two moments. Late in the backward pass every gradient exists but few activations:
    fixed + r * rows. At its start every activation exists but no gradient yet: (fixed - gradients) + a * rows.
    One measured peak p at b rows bounds both slopes, r <= (p - fixed) / b and a <= (p - fixed + gradients) / b,
    and two measurements give the slope of whichever moment dominates between them; the bound is the largest.
    """
    fixed = max((p["fixed_mib"] for p in points if "fixed_mib" in p), default=None)
    measured = sorted((p["batch"], p["peak_mib"]) for p in points if "peak_mib" in p)
    if fixed is None or not measured:
        return None
    gradients = next(p["trainable"] for p in points if "trainable" in p) * 4 / 2**20
    (smallest, smallest_peak), (largest, largest_peak) = measured[0], measured[-1]

    def bound(rows: int) -> float:
        candidates = [fixed + (smallest_peak - fixed) / smallest * rows,
                      fixed - gradients + (largest_peak - fixed + gradients) / largest * rows]
        if len(measured) > 1 and rows > largest:
            low, low_peak = measured[-2]
            candidates.append(largest_peak + (largest_peak - low_peak) / (largest - low) * (rows - largest))
        return max(candidates)
    return bound


def estimate(points: list[dict[str, Any]], batch: int) -> dict[str, Any] | None:
    """The fixed part, and the peak at `batch` rows: measured when a run at `batch` was made, and its bound."""
    fixed = max((p["fixed_mib"] for p in points if "fixed_mib" in p), default=None)
    if fixed is None:
        return None
    line: dict[str, Any] = {"fixed_mib": fixed}
    direct = [p["peak_mib"] for p in points if p.get("batch") == batch and "peak_mib" in p]
    if direct:
        line["measured_at_batch_mib"] = direct[0]
    bound = peak_bound(points)
    if bound is not None:
        line["bound_at_batch_mib"] = round(bound(batch))
    return line


def largest_batch(points: list[dict[str, Any]], budget_mib: float) -> int:
    """The most rows whose peak bound stays within `budget_mib` (0 if even one row may not)."""
    bound = peak_bound(points)
    return max((rows for rows in range(1, 1025) if bound and bound(rows) <= budget_mib), default=0)


def merged(files: list[Path]) -> list[dict[str, Any]]:
    """The results of several runs, points of the same model, configuration and precision together."""
    by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
    for file in files:
        for result in json.loads(file.read_text(encoding="utf-8"))["results"]:
            key = (result["model"], result["config"], result["precision"])
            if key in by_key:
                by_key[key]["points"] += result["points"]
            else:
                by_key[key] = dict(result)
    for result in by_key.values():
        result["line"] = estimate(result["points"], result["batch"])
    return list(by_key.values())


# A T4 shows a process 15,109 MiB; CUDA's context and cuBLAS workspace take about 500 MiB of it, and PyTorch's
# caching allocator loses up to ~10% to fragmentation: a configuration "fits" when its live peak is below this.
T4_VISIBLE_MIB, CUDA_CONTEXT_MIB, FRAGMENTATION = 15109, 500, 0.10
T4_BUDGET_MIB = int(T4_VISIBLE_MIB * (1 - FRAGMENTATION) - CUDA_CONTEXT_MIB)


def t4_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and configuration: the T4 peak (fp16 autocast) at the manifest batch, and the largest batch
    within the T4 budget. A bf16-autocast CPU measurement stands for the T4's fp16 one (same autocast rules,
    same 2-byte activations); without one, the float32 figure plus a 2-byte copy of every weight bounds it."""
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results:
        if result.get("line"):
            by_key.setdefault((result["model"], result["config"]), {})[result["precision"]] = result
    rows_out = []
    for (model, config), found in by_key.items():
        source = found.get("bf16") or found["fp32"]
        line = source["line"]
        if "bound_at_batch_mib" not in line:
            continue
        parameters = next(p["parameters"] for p in source["points"] if "parameters" in p)
        extra = 0 if "bf16" in found else round(2 * parameters / 2**20)
        measured = "measured_at_batch_mib" in line
        peak = (line["measured_at_batch_mib"] if measured else line["bound_at_batch_mib"]) + extra
        rows_out.append({"model": model, "config": config, "from": "bf16" if "bf16" in found else "fp32 + 2 B/param",
                         "batch": source["batch"], "t4_peak_mib": peak, "measured": measured,
                         "fits": peak <= T4_BUDGET_MIB,
                         "largest_batch": largest_batch(source["points"], T4_BUDGET_MIB - extra)})
    return rows_out


def report(files: list[Path]) -> None:
    """Print the measured table and the T4 table from saved result files."""
    results = merged(files)
    print("| model | configuration | precision | trained parameters | fixed MiB | peak MiB at 1 row | peak MiB at "
          "the manifest batch |\n|---|---|---|---|---|---|---|")
    for result in results:
        line = result["line"] or {}
        trainable = next((f"{p['trainable']:,}" for p in result["points"] if "trainable" in p), "n/a")
        one_row = next((f"{p['peak_mib']:,}" for p in result["points"] if p.get("batch") == 1 and "peak_mib" in p),
                       f"over the {result.get('max_gib', 14):g} GiB limit")
        if "measured_at_batch_mib" in line:
            at_batch = f"{line['measured_at_batch_mib']:,}"
        elif "bound_at_batch_mib" in line:
            at_batch = f"≤ {line['bound_at_batch_mib']:,} (bound)"
        else:
            at_batch = "n/a"
        print(f"| {result['model']} | {result['config']} | {result['precision']} | {trainable} | "
              f"{line.get('fixed_mib', 0):,} | {one_row} | {at_batch} at {result['batch']} |")
    print(f"\n| model | configuration | figure from | T4 peak MiB at the manifest batch | fits {T4_BUDGET_MIB:,} MiB | "
          "largest batch within it |\n|---|---|---|---|---|---|")
    for row in t4_rows(results):
        peak = f"{row['t4_peak_mib']:,}" if row["measured"] else f"≤ {row['t4_peak_mib']:,}"
        print(f"| {row['model']} | {row['config']} | {row['from']} | {peak} at {row['batch']} | "
              f"{'yes' if row['fits'] else 'no'} | ≥ {row['largest_batch']} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 0],
                        help="rows per step to measure; 0 = the manifest's train_batch_size, run only when the "
                             "earlier measurements predict that it fits (default: 1 0)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--max-gib", type=float, default=18.0, help="refuse a measurement above this (default 18)")
    parser.add_argument("--out", type=Path, help="JSON results (default: benchmarks/results/training_memory-*.json)")
    parser.add_argument("--report", nargs="+", type=Path, metavar="FILE",
                        help="print the tables (measured, and T4) from saved result files instead of measuring")
    parser.add_argument("--quick", action="store_true", help="tiny widths and short rows: checks the code path only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return 0
    if args.report:
        report(args.report)
        return 0
    results = []
    for model in args.models:
        for config in args.configs:
            points = []
            default_batch = shapes(model, args.quick)["batch"]
            for batch in args.batches:
                if batch == 0:  # the manifest's batch, when the smaller batches predict that it fits
                    line = estimate(points, default_batch) or {}
                    if line.get("bound_at_batch_mib", float("inf")) > 0.9 * args.max_gib * 1024:
                        continue
                    batch = default_batch
                point = run_child(model, config, batch, args.precision, args.max_gib, args.quick)
                print(json.dumps(point), file=sys.stderr, flush=True)
                points.append(point)
            results.append({"model": model, "config": config, "precision": args.precision, "points": points,
                            "line": estimate(points, default_batch), "max_gib": args.max_gib,
                            **shapes(model, args.quick)})
    out = args.out or RESULTS / f"training_memory-{args.precision}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"load": os.getloadavg(), "results": results}, indent=2) + "\n", encoding="utf-8")
    report([out])
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
