"""Peak memory of `predict` as the batch grows: token-capped micro-batches keep it flat.

Each batch size runs in a fresh process (peak RSS only ever grows within one), on a randomly initialised
classifier of DistilBERT-base width built offline, and reports the process's peak RSS above the loaded model, the
largest padded micro-batch `forward` saw, the number of micro-batches, and the RSS still held once glibc is asked
to return freed memory (`malloc_trim`). Peak RSS is noisy: it includes freed blocks of differently shaped
micro-batches that glibc keeps. What stays flat is the largest tensor; what the process still holds grows only by
the per-question results (annotations), a few KB each. A measurement, not a test:

    python benchmarks/memory_flat.py                 # 100, 1000 and 3000 questions
    python benchmarks/memory_flat.py --sizes 100 3000 --max-batch-tokens 4096
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# DistilBERT-base widths (what sets activation memory), 2 of its 6 layers to keep the run short on a CPU.
BASE_SIZE = {"dim": 768, "n_layers": 2, "n_heads": 12, "hidden_dim": 3072, "max_position_embeddings": 512}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def held_rss_mb() -> float:
    """RSS after glibc returns the freed memory it keeps: what the process really still holds."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure(model_path: str, count: int, max_batch_tokens: int) -> dict:
    """Answer `count` questions of 1 to 60 words; runs in the child process."""
    from models.distilbert_sst2 import HuggingAdapter
    from tests.prompt_factory import legacy_item

    adapter = HuggingAdapter({"model_path": model_path, "device": "cpu", "batch_size": 1024,
                              "max_batch_tokens": max_batch_tokens})
    shapes = []
    forward = adapter.forward
    adapter.forward = lambda inputs: (shapes.append(tuple(inputs["input_ids"].shape)), forward(inputs))[1]
    texts = [" ".join(["wonderful"] * (1 + i * 7 % 60)) for i in range(count)]
    items = [legacy_item({"p": texts[start:start + 500]}) for start in range(0, count, 500)]
    loaded, held = peak_rss_mb(), held_rss_mb()
    collections = adapter.predict(items)
    assert sum(len(c.annotations) for c in collections) == count
    return {"questions": count, "peak_rss_above_model_mb": round(peak_rss_mb() - loaded, 1),
            "held_after_trim_mb": round(held_rss_mb() - held, 1),
            "largest_micro_batch_tokens": max(rows * length for rows, length in shapes), "micro_batches": len(shapes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--max-batch-tokens", type=int, default=16384, help="the manifest's default")
    parser.add_argument("--child", nargs=2, metavar=("MODEL_PATH", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT))
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.max_batch_tokens)))
        return 0
    from tests.model_factory import build_distilbert_classifier

    with tempfile.TemporaryDirectory() as folder:
        model_path = str(build_distilbert_classifier(Path(folder) / "distilbert", config_overrides=BASE_SIZE))
        print(f"max_batch_tokens={args.max_batch_tokens}, batch_size=1024, DistilBERT-base width, CPU")
        for count in args.sizes:
            child = subprocess.run([sys.executable, __file__, "--child", model_path, str(count),
                                    "--max-batch-tokens", str(args.max_batch_tokens)],
                                   capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            print(child.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
