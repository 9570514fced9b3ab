"""`python -m benchmarks.training_memory`: peak memory of fine-tuning each model at its real size, per configuration.

For every model of the manifest, a randomly initialised model of the real architecture (DistilBERT-base,
BART-large, GPT-2 large = DialoGPT-large, T5-base) takes training steps through this package's own training
path (`trainable_model`, `training_arguments`, `ValidatingTrainer`) on CPU, for four configurations: full
fine-tuning, + gradient checkpointing, LoRA, LoRA + gradient checkpointing; in float32, and with `--precision
bf16` under bf16 autocast (the CPU twin of the fp16 autocast a T4 runs, see docs/training.md).

Each measurement runs in a fresh process, whose peak resident memory (VmHWM) above its memory before the
model was built is the figure. The first step runs on 8-token rows so that the optimizer state exists; the
second runs full-length rows (the manifest's `max_source_length` / context window / `max_target_length`) at
the measured batch size, so its peak is the steady-state peak of training: weights, gradients, optimizer state
and the activations of one batch. Memory grows linearly in the batch, so two batch sizes (1 and 2 by default)
give the fixed part and the cost per row; the table extrapolates to the manifest's `train_batch_size`. A run
that would not fit in `--max-gib` is refused by the child (RLIMIT_DATA) instead of swapping the machine.

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
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = {"full": (0, False), "full+gc": (0, True), "lora": (16, False), "lora+gc": (16, True)}

# model -> (transformers class, config class, real-size configuration, task)
ARCHITECTURES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "distilbert-sst2": ("DistilBertForSequenceClassification", "DistilBertConfig",
                        dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072, vocab_size=30522,
                             max_position_embeddings=512, num_labels=2), "classification"),
    "bart-large-mnli": ("BartForSequenceClassification", "BartConfig",
                        dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                             decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                             vocab_size=50265, max_position_embeddings=1024, num_labels=3), "classification"),
    "dialogpt-large": ("GPT2LMHeadModel", "GPT2Config",
                       dict(n_embd=1280, n_layer=36, n_head=20, n_positions=1024, vocab_size=50257), "causal"),
    "t5-email": ("T5ForConditionalGeneration", "T5Config",
                 dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12,
                      vocab_size=32128, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1), "seq2seq"),
}


def shapes(model_name: str) -> dict[str, int]:
    """The manifest's training sizes: batch, input length and (generators) answer length of a full row."""
    from adapters.manifest import model_entry

    configuration = model_entry(model_name)["configuration"]
    task = ARCHITECTURES[model_name][3]
    if task == "causal":  # the history fills the context window; the loss is on the answer budget
        return {"batch": configuration["train_batch_size"], "source": 1024,
                "target": configuration["max_new_tokens"]}
    return {"batch": configuration["train_batch_size"], "source": configuration["max_source_length"],
            "target": configuration.get("max_target_length", 0)}


# ----- the child: one measurement -----

def rows(task: str, count: int, source: int, target: int, vocab: int) -> list[dict[str, Any]]:
    import torch

    generator = torch.Generator().manual_seed(count * 1000 + source)
    made = []
    for _ in range(count):
        ids = torch.randint(5, vocab, (source,), generator=generator).tolist()
        row: dict[str, Any] = {"input_ids": ids, "attention_mask": [1] * source}
        if task == "classification":
            row["labels"] = 0
        elif task == "causal":
            row["labels"] = [-100] * (source - target) + ids[source - target:]
        else:
            row["labels"] = torch.randint(5, vocab, (target,), generator=generator).tolist()
        made.append(row)
    return made


def measure(model_name: str, config: str, batch: int, precision: str, max_gib: float) -> dict[str, Any]:
    """Build, prepare and train for two steps; the peak of the second (full-size) step is the result."""
    import torch
    import transformers

    from adapters.training.loop import Collator, LoopSettings, ValidatingTrainer, training_arguments
    from adapters.training.trainer import trainable_model
    from benchmarks.measure import measured

    limit = int(max_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    model_class, config_class, sizes, task = ARCHITECTURES[model_name]
    size = shapes(model_name)
    lora_r, checkpointing = CONFIGS[config]
    configuration = {"epochs": 1, "learning_rate": 1e-5, "train_batch_size": batch,
                     "gradient_accumulation_steps": 1, "gradient_checkpointing": checkpointing,
                     "mixed_precision": precision if precision != "fp32" else "no", "weight_decay": 0.01,
                     "warmup_ratio": 0.0, "max_grad_norm": 1.0, "early_stopping_patience": 0,
                     "lora_r": lora_r, "lora_alpha": 2 * lora_r, "lora_dropout": 0.05}
    with measured() as built:
        torch.manual_seed(0)
        model = getattr(transformers, model_class)(getattr(transformers, config_class)(**sizes))
        trained = trainable_model(model, configuration, classifier=task == "classification")
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    data = rows(task, batch, 8, min(4, size["target"]), sizes["vocab_size"]) \
        + rows(task, batch, size["source"], size["target"], sizes["vocab_size"])
    with tempfile.TemporaryDirectory() as folder:
        arguments = training_arguments(LoopSettings(configuration, 0, Path(folder), None), torch.device("cpu"))
        arguments = dataclasses.replace(arguments, max_steps=2, save_strategy="no", logging_strategy="no",
                                        train_sampling_strategy="sequential")
        decoder_inputs = model.prepare_decoder_input_ids_from_labels if task == "seq2seq" else None
        trainer = ValidatingTrainer(trained, arguments, data, [], Collator(0, decoder_inputs))
        step_times: list[float] = []

        class Timer(transformers.TrainerCallback):
            def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
                step_times.append(time.perf_counter())

            def on_step_end(self, *args: Any, **kwargs: Any) -> None:
                step_times[-1] = time.perf_counter() - step_times[-1]

        trainer.add_callback(Timer())
        with measured() as steps:
            trainer.train()
    return {"model": model_name, "config": config, "precision": precision, "batch": batch,
            "source": size["source"], "target": size["target"], "parameters": parameters, "trainable": trainable,
            "weights_mib": built.added_rss_mb, "peak_mib": round(built.added_rss_mb + steps.added_rss_mb, 1),
            "full_step_seconds": round(step_times[-1], 1)}


# ----- the parent: a fresh process per measurement, then the table -----

def run_child(model: str, config: str, batch: int, precision: str, max_gib: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.training_memory", "--child", json.dumps(
        [model, config, batch, precision, max_gib])]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": model, "config": config, "precision": precision, "batch": batch,
                "error": last[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit_line(points: list[dict[str, Any]], batch: int) -> dict[str, Any] | None:
    """Fixed MiB + MiB per row from two batch sizes, and the extrapolated peak at `batch`."""
    ok = sorted((p for p in points if "peak_mib" in p), key=lambda p: p["batch"])
    if len(ok) < 2:
        return None
    low, high = ok[0], ok[-1]
    per_row = (high["peak_mib"] - low["peak_mib"]) / (high["batch"] - low["batch"])
    fixed = low["peak_mib"] - per_row * low["batch"]
    return {"fixed_mib": round(fixed), "per_row_mib": round(per_row), "at_batch": batch,
            "peak_at_batch_mib": round(fixed + per_row * batch)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--max-gib", type=float, default=18.0, help="refuse a measurement above this (default 18)")
    parser.add_argument("--out", type=Path, help="JSON results (default: benchmarks/results/training_memory-*.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return 0
    results = []
    for model in args.models:
        for config in args.configs:
            points = []
            for batch in args.batches:
                point = run_child(model, config, batch, args.precision, args.max_gib)
                print(json.dumps(point), file=sys.stderr, flush=True)
                points.append(point)
            results.append({"model": model, "config": config, "precision": args.precision, "points": points,
                            "line": fit_line(points, shapes(model)["batch"]), **shapes(model)})
    out = args.out or RESULTS / f"training_memory-{args.precision}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"load": os.getloadavg(), "results": results}, indent=2) + "\n", encoding="utf-8")
    print(f"| model | configuration | trainable | peak MiB at batch {args.batches} | fixed MiB | MiB per row | "
          f"peak at the manifest batch |\n|---|---|---|---|---|---|---|")
    for result in results:
        line = result["line"] or {}
        peaks = ", ".join(str(p.get("peak_mib", "n/a")) for p in result["points"])
        trainable = next((f"{p['trainable']:,}" for p in result["points"] if "trainable" in p), "n/a")
        print(f"| {result['model']} | {result['config']} | {trainable} | {peaks} | {line.get('fixed_mib', 'n/a')} "
              f"| {line.get('per_row_mib', 'n/a')} | {line.get('peak_at_batch_mib', 'n/a')} (batch {result['batch']}) |")
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
