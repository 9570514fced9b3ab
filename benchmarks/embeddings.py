"""`python -m benchmarks.embeddings [--quick] [--only NAME ...] [--texts N] [--out FILE]`: embedding throughput
against a plain AutoModel loop.

For each model (random weights of real architecture sizes, or tiny ones with --quick) and the texts of its
benchmark workload (mixed lengths): this package's `embed_texts`, `batch_size` texts per call as dtlpy's
`embed_items` calls `embed` (length-sorted micro-batches with dynamic padding, the micro-batch planner of
`predict`), against the plain loop a user would write: the same weights through `AutoModel`, one text at a time,
the mean of the last hidden states (the encoder's for BART and T5). Both run in one process on one machine, in
turns, each keeping its best of `--rounds`; the ratio is the result, not the absolute speed. The largest
difference between the two sets of vectors is reported too, absolute and relative to the vector's length: float32
rounding (another summation order in a padded batch, oneDNN's kernels), which deep random-weight models amplify
(T5 scales no attention logits; docs/performance.md).
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from .run import RESULTS, best_of_interleaved, default_kernels, machine, model_folder, quiet_process_logs  # noqa: E402
from .suites import Suite, all_suites  # noqa: E402
from .workload import build_workload  # noqa: E402


@torch.no_grad()
def plain_loop(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> list[list[float]]:
    """One text at a time through `AutoModel`: the mean of the last hidden states (an encoder-decoder's encoder)."""
    encoder = model.get_encoder() if model.config.is_encoder_decoder else model
    vectors = []
    for text in texts:
        encoded = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)
        vectors.append(encoder(**encoded).last_hidden_state[0].mean(dim=0).tolist())
    return vectors


def ours(adapter: Any, texts: list[str]) -> list[list[float]]:
    """`embed_texts`, `batch_size` texts per call, as dtlpy's embed_items gives `embed` `batch_size` items."""
    size = adapter.configuration["batch_size"]
    return [vector for start in range(0, len(texts), size) for vector in adapter.embed_texts(texts[start:start + size])]


def run_suite(suite: Suite, models_dir: Path, texts_wanted: int | None, rounds: int) -> dict[str, Any]:
    folder = model_folder(suite, models_dir)
    workload = build_workload(suite.items, suite.prompts_per_item, suite.min_words, suite.max_words)
    texts = [text for _, _, text, _ in workload.questions()]
    texts = (texts * (texts_wanted // len(texts) + 1))[:texts_wanted] if texts_wanted else texts
    adapter = importlib.import_module(suite.module_name).HuggingAdapter({"model_path": str(folder),
                                                                        **suite.configuration})
    with default_kernels():  # the plain loop: the model as from_pretrained gives it, torch's default kernels
        model = AutoModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    print(f"\n== {suite.name}: {len(texts)} texts, embedding size {adapter.embedding_size}", flush=True)
    best = best_of_interleaved(
        {"ours (embed_texts)": lambda: ours(adapter, texts),
         "plain AutoModel loop": lambda: plain_loop(model, tokenizer, texts, adapter.max_input_tokens)},
        warm_up={"ours": lambda: adapter.embed_texts(texts[:1]),
                 "plain": lambda: plain_loop(model, tokenizer, texts[:1], adapter.max_input_tokens)}, rounds=rounds)
    (_, reference), (_, plain) = best["ours (embed_texts)"], best["plain AutoModel loop"]
    ours_vectors, plain_vectors = torch.tensor(reference), torch.tensor(plain)
    difference = float((ours_vectors - plain_vectors).abs().max())
    relative = float(((ours_vectors - plain_vectors).norm(dim=1) / plain_vectors.norm(dim=1)).max())
    methods = []
    for name, (measurement, _) in best.items():
        methods.append({"method": name, "seconds": round(measurement.seconds, 3),
                        "texts_per_s": round(len(texts) / measurement.seconds, 2),
                        "peak_rss_mb": measurement.peak_rss_mb, "timed_rounds": rounds})
        print(f"  {name:<22} {methods[-1]['texts_per_s']:>9.2f} texts/s  {measurement.seconds:>8.2f} s", flush=True)
    ratio = round(methods[0]["texts_per_s"] / methods[1]["texts_per_s"], 2)
    print(f"  ours/plain = {ratio}x, max vector difference {difference:.1e} (relative {relative:.1e})", flush=True)
    return {"module": suite.module_name, "sizes": suite.sizes, "texts": len(texts),
            "words_per_text": [suite.min_words, suite.max_words], "embedding_size": adapter.embedding_size,
            "batch_size": adapter.configuration["batch_size"], "methods": methods, "ours_over_plain": ratio,
            "max_vector_difference": difference, "max_relative_difference": relative}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embeddings", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models: a smoke test, not a measurement")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these suites (default: all)")
    parser.add_argument("--texts", type=int, help="texts per suite (default: the questions of its workload)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per method; the best counts")
    parser.add_argument("--models-dir", type=Path, default=RESULTS / "models",
                        help="where the random-weight models are built once and reused")
    parser.add_argument("--out", type=Path, default=RESULTS / "embeddings.json", help="JSON results file")
    args = parser.parse_args(argv)

    known = all_suites(args.quick, new_tokens=4)
    suites = [s for s in known if not args.only or s.name in args.only]
    if args.only and len(suites) != len(args.only):
        parser.error(f"--only: known suites are {[s.name for s in known]}")
    args.models_dir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
                              "machine": machine(), "suites": {}}
    for suite in suites:
        report["suites"][suite.name] = run_suite(suite, args.models_dir, args.texts, args.rounds)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    quiet_process_logs()
    sys.exit(main())
