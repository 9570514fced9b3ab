"""`python -m benchmarks.cli_latency [--baseline REF] [--repeats N] [--out FILE]`: how soon the CLI answers.

A newcomer's first feedback comes from a process that starts, imports and answers: an input mistake (an unknown
model, a mistyped key, a missing file) and a `predict` on a small model run again (the second run: the kernel
choice cached, the files in the page cache). Each command runs as a user runs it, a fresh `python -m adapters`
process, in this tree and in the tree of git revision REF (default: where this branch left main), with the same
tiny model, inputs and environment; the best of `--repeats` wall and CPU times (after one warm-up round) is
reported, and the ratio of this tree's time to the baseline's. No absolute time is a verdict: the same run
measures both, and on a shared machine the CPU time (the process's own work) is the steadier of the two.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "examples/distilbert-sst2/reviews-current.json"


def commands(model: Path, out: Path) -> dict[str, list[str]]:
    """What is timed: three input mistakes and a small model's predict, as a user types them (options that the
    baseline has too)."""
    return {
        "unknown model": ["predict", "distilbert", EXAMPLE],
        "mistyped key": ["predict", "distilbert-sst2", EXAMPLE, "--set", "batch_sise=2"],
        "missing file": ["predict", "distilbert-sst2", "no-such-file.json", "--model-path", str(model)],
        "second predict, tiny model": ["predict", "distilbert-sst2", EXAMPLE, "--model-path", str(model), "--out",
                                       str(out)],
    }


def export_tree(revision: str, target: Path) -> Path:
    """The files of git `revision` in `target` (git archive: the tree as committed, nothing untracked)."""
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def best_seconds(trees: dict[str, Path], args: list[str], envs: dict[str, dict[str, str]],
                 repeats: int) -> dict[str, dict]:
    """Per tree, the best wall time and the best CPU time (user + system, the process's own work, which other
    processes on a shared machine disturb far less) of `python -m adapters ARGS`, and its exit code. The trees
    take turns, run after run (one warm-up round first), so that a change in the machine's load falls on both."""
    walls: dict[str, list[float]] = {name: [] for name in trees}
    cpus: dict[str, list[float]] = {name: [] for name in trees}
    codes: dict[str, int] = {}
    for round_ in range(repeats + 1):
        for name, tree in trees.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "adapters", *args], cwd=tree, env=envs[name],
                                  capture_output=True)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if round_:
                walls[name].append(wall)
                cpus[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            codes[name] = done.returncode
    return {name: {"seconds": round(min(walls[name]), 3), "cpu_seconds": round(min(cpus[name]), 3),
                   "exit_code": codes[name]} for name in trees}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=None, help="git revision to compare with (default: merge-base with "
                                                         "main)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per command and tree (default: 3)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    baseline = args.baseline or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True,
                                               text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="hf-adapters-cli-latency-") as scratch:
        scratch = Path(scratch)
        sys.path.insert(0, str(ROOT))
        from tests.model_factory import build_distilbert_classifier

        model = build_distilbert_classifier(scratch / "tiny-distilbert")
        trees = {"baseline": export_tree(baseline, scratch / "baseline"), "this tree": ROOT}
        results: dict[str, dict] = {}
        envs = {name: {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(scratch / "hf"),
                       "DATALOOP_PATH": str(scratch / f"dataloop-{index}"),
                       "HF_ADAPTERS_CACHE": str(scratch / f"cache-{index}")} for index, name in enumerate(trees)}
        for name, args_ in commands(model, scratch / "answers.json").items():
            row = best_seconds(trees, args_, envs, args.repeats)
            row["ratio"] = round(row["this tree"]["seconds"] / row["baseline"]["seconds"], 3)
            row["cpu_ratio"] = round(row["this tree"]["cpu_seconds"] / max(row["baseline"]["cpu_seconds"], 1e-3), 3)
            results[name] = row
            print(f"{name:28s} wall: baseline {row['baseline']['seconds']:6.2f} s, this tree "
                  f"{row['this tree']['seconds']:6.2f} s, ratio {row['ratio']:.2f}   cpu: baseline "
                  f"{row['baseline']['cpu_seconds']:6.2f} s, this tree {row['this tree']['cpu_seconds']:6.2f} s, "
                  f"ratio {row['cpu_ratio']:.2f}", flush=True)
    report = {"baseline": baseline, "repeats": args.repeats, "commands": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
