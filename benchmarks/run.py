"""`python -m benchmarks.run [--quick] [--only NAME ...] [--out FILE]`: throughput against the alternatives.

For each model (random weights, real architecture sizes) and one workload, in one process: this package's
`predict` (torch, and ONNX Runtime fp32 / int8 for the classifiers), the reference adapters' naive loop, and
`transformers`' pipeline at its best batch size. Prints items/s, ratios, output agreement, peak memory and the
achieved model FLOP/s as a fraction of the dense matmul FLOP/s measured in the same run; writes JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import hashlib
import importlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from adapters.runtimes.cpu_kernels import DISABLE_VARIABLE  # noqa: E402
from adapters.runtimes.torch_runtime import native_cpu_bfloat16  # noqa: E402

from .baselines import best_batch_size  # noqa: E402
from .measure import classifier_flops, generation_flops, matmul_peak_flops, matmul_rates, measured  # noqa: E402
from .projection import suite_projection  # noqa: E402
from .suites import Suite, all_suites  # noqa: E402
from .workload import Workload, build_workload  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BFLOAT16 = "ours (torch, dtype bfloat16)"  # the method row of `dtype: bfloat16`


# ----- this package's predict -----

def extract_answers(collections: list, kind: str) -> list[tuple[str, Any]]:
    """(text, {label: score}) per classifier answer, (text, confidence) per generated one, in question order."""
    answers = []
    for collection in collections:
        for annotation in collection.annotations:
            output = annotation.metadata["user"]["model_output"]
            if kind == "generator":
                answers.append((annotation.coordinates, annotation.metadata["user"]["model"]["confidence"]))
            elif isinstance(output["scores"], dict):
                answers.append((annotation.coordinates, output["scores"]))
            else:
                answers.append((annotation.coordinates, dict(zip(output["labels"], output["scores"]))))
    return answers


class TokenCounter:
    """Wraps an adapter's `forward` to record the real (unpadded) prompt lengths and generated token counts."""

    def __init__(self, adapter: Any):
        self.prompt_lengths: list[int] = []
        self.new_tokens: list[int] = []
        self._forward = adapter.forward
        self._budget = getattr(adapter, "answer_budget", 0)
        adapter.forward = self

    def __call__(self, inputs: dict[str, torch.Tensor]) -> list:
        outputs = self._forward(inputs)
        self.prompt_lengths += inputs["attention_mask"].sum(1).tolist()
        for output in outputs:
            for generated in output if isinstance(output, list) else []:
                ended = len(generated.token_ids) < self._budget
                self.new_tokens.append(len(generated.token_ids) + int(ended))
        return outputs


def run_predict(adapter: Any, workload: Workload, kind: str) -> tuple[Any, list, TokenCounter]:
    """Predict as dtlpy does: `batch_size` items per call. Returns (measurement, answers, token counts)."""
    adapter.predict(workload.items[:1])  # warm-up: first-call allocations and lazy inits
    counter = TokenCounter(adapter)
    with measured() as measurement:
        answers = predict_all(adapter, workload, kind)
    adapter.forward = counter._forward
    return measurement, answers, counter


def predict_all(adapter: Any, workload: Workload, kind: str) -> list:
    """The answers to the whole workload, `batch_size` items per `predict` call; every question must be answered."""
    size = adapter.configuration["batch_size"]
    collections = []
    for start in range(0, len(workload.items), size):
        collections += adapter.predict(workload.items[start:start + size])
        if adapter.last_report.skipped or adapter.last_report.failed_items:
            raise RuntimeError(f"the benchmark workload was not fully answered: {adapter.last_report}")
    return extract_answers(collections, kind)


# ----- comparison and reporting -----

def agreement(reference: list, answers: list, kind: str) -> dict[str, Any]:
    """How closely `answers` match `reference`: same labels and max score difference, or same generated text."""
    same = sum(a[0] == b[0] for a, b in zip(reference, answers))
    result: dict[str, Any] = {"answers": len(answers), "same_text": same, "all_same_text": same == len(reference)
                              and len(answers) == len(reference)}
    if kind == "classifier":
        result["max_score_diff"] = max((abs(a[1][label] - b[1][label]) for a, b in zip(reference, answers)
                                        for label in a[1]), default=0.0)
    return result


def method_result(name: str, measurement: Any, workload: Workload, flops: float, peak: float,
                  questions: int, **extra: Any) -> dict[str, Any]:
    seconds = measurement.seconds
    return {"method": name, "seconds": round(seconds, 3), "items_per_s": round(len(workload.items) / seconds, 3),
            "questions_per_s": round(questions / seconds, 3), "peak_rss_mb": measurement.peak_rss_mb,
            "added_rss_mb": measurement.added_rss_mb,
            "model_gflop_per_s": round(flops / seconds / 1e9, 2), "fraction_of_matmul_peak": flops / seconds / peak,
            **extra}


def model_folder(suite: Suite, models_dir: Path) -> Path:
    """Build the suite's random-weight model once; later runs reuse it (keyed by builder and sizes)."""
    key = hashlib.sha256(json.dumps([suite.build.__name__, suite.sizes], sort_keys=True).encode()).hexdigest()[:12]
    folder = models_dir / f"{suite.name if suite.sizes else 'tiny-' + suite.build.__name__}-{key}"
    if not (folder / "config.json").is_file():
        print(f"  building {folder.name} ...", flush=True)
        staging = Path(tempfile.mkdtemp(dir=models_dir))
        suite.build(staging / "model", config_overrides=suite.sizes or None)
        (staging / "model").rename(folder)
        shutil.rmtree(staging)
    return folder


def run_suite(suite: Suite, models_dir: Path, peak: float, onnx_dir: Path) -> dict[str, Any]:
    folder = model_folder(suite, models_dir)
    workload = build_workload(suite.items, suite.prompts_per_item, suite.min_words, suite.max_words,
                              zero_shot=suite.module_name == "models.bart_large_mnli",
                              labels_per_question=suite.labels_per_question)
    module = importlib.import_module(suite.module_name)
    adapter = module.HuggingAdapter({"model_path": str(folder), **suite.configuration})
    # The baselines get the model as `from_pretrained` gives it, with torch's default CPU kernels; this package
    # routes its dense layers through oneDNN (adapters/runtimes/cpu_kernels.py), measured below with and without that.
    with default_kernels():
        plain = module.HuggingAdapter({"model_path": str(folder), **suite.configuration})
    model, tokenizer = plain.model, plain.tokenizer
    parameters = sum(p.numel() for p in model.parameters())
    print(f"\n== {suite.name}: {parameters / 1e6:.0f}M parameters, {len(workload.items)} items", flush=True)

    ours, ours_answers, tokens = run_predict(adapter, workload, suite.kind)
    questions = len(ours_answers)
    if suite.kind == "classifier":
        flops = classifier_flops(model, tokens.prompt_lengths)
    else:
        flops = generation_flops(model, tokens.prompt_lengths, tokens.new_tokens)
    summary: dict[str, Any] = {
        "module": suite.module_name, "parameters": parameters, "parameters_m": round(parameters / 1e6, 1),
        "sizes": suite.sizes,
        "items": len(workload.items), "questions": questions, "model_rows": len(tokens.prompt_lengths),
        "prompt_tokens": sum(tokens.prompt_lengths), "generated_tokens": sum(tokens.new_tokens),
        "words_per_text": [workload.min_words, workload.max_words], "configuration": suite.configuration,
        "model_gflop": round(flops / 1e9, 4), "note": suite.note, "methods": []}
    methods = summary["methods"]
    methods.append(method_result("ours (torch)", ours, workload, flops, peak, questions))
    print_method(methods[-1])
    default, default_answers, _ = run_predict(plain, workload, suite.kind)
    methods.append(method_result("ours (torch, default kernels)", default, workload, flops, peak, questions,
                                 agreement_with_ours=agreement(ours_answers, default_answers, suite.kind)))
    print_method(methods[-1])
    methods.append(run_bfloat16(suite, module, folder, workload, ours_answers, flops, peak, questions))
    print_method(methods[-1])

    suite.naive(model, tokenizer, Workload(workload.items[:1], 0, 0), plain.configuration)  # warm-up
    with measured() as naive:
        naive_answers = suite.naive(model, tokenizer, workload, plain.configuration)
    methods.append(method_result("naive loop", naive, workload, flops, peak, questions,
                                 agreement_with_ours=agreement(ours_answers, naive_answers, suite.kind)))
    print_method(methods[-1])

    run_pipeline = suite.pipeline(model, tokenizer)
    if run_pipeline is not None:
        sample = Workload(workload.items[:max(2, len(workload.items) // 4)], 0, 0)
        best, sweep = best_batch_size(run_pipeline, sample, suite.pipeline_batch_sizes)
        with measured() as piped:
            pipeline_answers = run_pipeline(workload, best)
        methods.append(method_result(f"pipeline (batch_size={best})", piped, workload, flops, peak, questions,
                                     batch_size_sweep_seconds=sweep,
                                     agreement_with_ours=agreement(ours_answers, pipeline_answers, suite.kind)))
        print_method(methods[-1])

    if suite.onnx:
        methods += run_onnx(suite, module, folder, workload, ours_answers, flops, peak, questions, onnx_dir)
    if suite.kind == "generator":
        methods += run_ctranslate2(suite, module, folder, workload, ours_answers, flops, peak, questions)
        summary.update(ctranslate2_ratios(methods))
    if model.config.is_encoder_decoder and suite.kind == "generator":
        summary["encoder_share_of_predict"] = encoder_share(adapter, workload)

    summary["t4_projection"] = suite_projection(summary)
    rate = {m["method"]: m["items_per_s"] for m in methods}
    ours_rate = rate["ours (torch)"]
    summary["ours_over_naive"] = round(ours_rate / rate["naive loop"], 2)
    pipeline_name = next((name for name in rate if name.startswith("pipeline")), None)
    summary["bfloat16_over_naive"] = round(rate[BFLOAT16] / rate["naive loop"], 2)
    if pipeline_name:
        summary["ours_over_pipeline"] = round(ours_rate / rate[pipeline_name], 2)
        summary["bfloat16_over_pipeline"] = round(rate[BFLOAT16] / rate[pipeline_name], 2)
        summary["pipeline_over_naive"] = round(rate[pipeline_name] / rate["naive loop"], 2)
    print(f"  ours/naive = {summary['ours_over_naive']}x" +
          (f", ours/pipeline = {summary['ours_over_pipeline']}x" if pipeline_name else ""), flush=True)
    return summary


@contextlib.contextmanager
def default_kernels() -> Iterator[None]:
    """Load models with torch's default CPU kernels (no oneDNN routing) inside this block."""
    saved = os.environ.get(DISABLE_VARIABLE)
    os.environ[DISABLE_VARIABLE] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[DISABLE_VARIABLE]
        else:
            os.environ[DISABLE_VARIABLE] = saved


def run_bfloat16(suite: Suite, module: Any, folder: Path, workload: Workload, ours_answers: list, flops: float,
                 peak: float, questions: int) -> dict[str, Any]:
    """Ours with `dtype: bfloat16`: fast where the CPU computes bfloat16 natively (AMX, AVX512-BF16), emulated
    (and slow) elsewhere; the report's `machine.native_bfloat16` says which."""
    adapter = module.HuggingAdapter({"model_path": str(folder), **suite.configuration, "dtype": "bfloat16"})
    measurement, answers, _ = run_predict(adapter, workload, suite.kind)
    return method_result(BFLOAT16, measurement, workload, flops, peak, questions,
                         agreement_with_ours=agreement(ours_answers, answers, suite.kind))


def run_onnx(suite: Suite, module: Any, folder: Path, workload: Workload, ours_answers: list, flops: float,
             peak: float, questions: int, onnx_dir: Path) -> list[dict[str, Any]]:
    from adapters.runtimes.onnx_runtime import export_onnx

    results = []
    for quantize in (None, "int8"):
        with measured() as export:
            exported = export_onnx(str(folder), onnx_dir / f"{suite.name}-{quantize or 'fp32'}", quantize=quantize)
        adapter = module.HuggingAdapter({"model_path": str(exported), "runtime": "onnx", **suite.configuration})
        measurement, answers, _ = run_predict(adapter, workload, suite.kind)
        results.append(method_result(f"ours (onnx {quantize or 'fp32'})", measurement, workload, flops, peak,
                                     questions, export_seconds=round(export.seconds, 1),
                                     agreement_with_ours=agreement(ours_answers, answers, suite.kind)))
        print_method(results[-1])
        del adapter
    return results


def run_ctranslate2(suite: Suite, module: Any, folder: Path, workload: Workload, ours_answers: list, flops: float,
                    peak: float, questions: int, rounds: int = 3) -> list[dict[str, Any]]:
    """Ours with runtime 'ctranslate2' (float32, int8), and CTranslate2 called directly on the same conversion:
    on the whole workload at once (its best case: one length sort over every question), and on the same items
    per call as dtlpy gives `predict` (`batch_size` items).

    Ours and the direct calls are timed in turns, `rounds` times each, and each keeps its best time: they are
    compared to within 10%, which one busy moment on a shared machine would otherwise decide.
    """
    import ctranslate2

    from .baselines import ctranslate2_chat, ctranslate2_template_chat, ctranslate2_text2text

    results = []
    for compute_type in ("float32", "int8"):
        with measured() as load:  # the first load converts (cached in $HF_HOME); later loads reuse it
            adapter = module.HuggingAdapter({"model_path": str(folder), **suite.configuration,
                                             "runtime": "ctranslate2", "compute_type": compute_type})
        configuration, tokenizer = adapter.configuration, adapter.tokenizer
        engine_kind = ctranslate2.Translator if suite.module_name == "models.t5_email" else ctranslate2.Generator
        engine = engine_kind(str(adapter.model.folder / "ctranslate2"), compute_type=compute_type,
                             intra_threads=torch.get_num_threads())
        if suite.module_name == "models.t5_email":
            raw = functools.partial(ctranslate2_text2text, engine, tokenizer, prefix=configuration["prefix"],
                                    max_new_tokens=configuration["token_count"],
                                    batch_size=configuration["batch_size"])
        elif tokenizer.chat_template:
            raw = functools.partial(ctranslate2_template_chat, engine, tokenizer,
                                    max_new_tokens=configuration["max_new_tokens"],
                                    batch_size=configuration["batch_size"], end_ids=adapter.chat.end_ids)
        else:
            raw = functools.partial(ctranslate2_chat, engine, tokenizer, max_new_tokens=configuration["max_new_tokens"],
                                    batch_size=configuration["batch_size"], context=adapter.max_input_tokens)
        size = configuration["batch_size"]
        chunks = [Workload(workload.items[i:i + size], 0, 0) for i in range(0, len(workload.items), size)]
        best = best_of_interleaved({"ours": lambda: predict_all(adapter, workload, suite.kind),
                                    "raw": lambda: raw(workload),
                                    "raw per call": lambda: [a for chunk in chunks for a in raw(chunk)]},
                                   warm_up={"ours": lambda: adapter.predict(workload.items[:1]),
                                            "raw": lambda: raw(Workload(workload.items[:1], 0, 0))}, rounds=rounds)
        ours, answers = best.pop("ours")
        results.append(method_result(f"ours (ctranslate2 {compute_type})", ours, workload, flops, peak, questions,
                                     load_seconds=round(load.seconds, 1), timed_rounds=rounds,
                                     agreement_with_ours=agreement(ours_answers, answers, suite.kind)))
        print_method(results[-1])
        for name, (direct, raw_answers) in best.items():
            label = f"raw CTranslate2 {compute_type}" + (", per predict call" if name == "raw per call" else "")
            results.append(method_result(label, direct, workload, flops, peak, questions, timed_rounds=rounds,
                                         agreement_with_ours=agreement(ours_answers, raw_answers, suite.kind),
                                         agreement_with_ours_ctranslate2=agreement(answers, raw_answers, suite.kind)))
            print_method(results[-1])
        del adapter, engine, raw, best
    return results


def best_of_interleaved(runs: dict[str, Any], warm_up: dict[str, Any], rounds: int) -> dict[str, tuple[Any, Any]]:
    """Each run's fastest `(measurement, result)` over `rounds` rounds that time every run once, in turn."""
    for run in warm_up.values():
        run()
    best: dict[str, tuple[Any, Any]] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            with measured() as measurement:
                result = run()
            if name not in best or measurement.seconds < best[name][0].seconds:
                best[name] = (measurement, result)
    return best


def ctranslate2_ratios(methods: list[dict[str, Any]]) -> dict[str, float]:
    """Ours on CTranslate2 against raw CTranslate2 (target >= 0.9) and against ours on torch (int8 target >= 2)."""
    rate = {m["method"]: m["items_per_s"] for m in methods}
    ratios = {}
    for compute_type in ("float32", "int8"):
        ours = rate[f"ours (ctranslate2 {compute_type})"]
        ratios[f"ctranslate2_{compute_type}_over_raw"] = round(ours / rate[f"raw CTranslate2 {compute_type}"], 3)
        ratios[f"ctranslate2_{compute_type}_over_raw_per_call"] = round(
            ours / rate[f"raw CTranslate2 {compute_type}, per predict call"], 3)
        ratios[f"ctranslate2_{compute_type}_over_torch"] = round(ours / rate["ours (torch)"], 2)
    print("  ours on ctranslate2 / raw CTranslate2 (whole workload; per predict call): float32 "
          "{ctranslate2_float32_over_raw}x; {ctranslate2_float32_over_raw_per_call}x, int8 {ctranslate2_int8_over_raw}x; "
          "{ctranslate2_int8_over_raw_per_call}x; / ours on torch: float32 {ctranslate2_float32_over_torch}x, int8 "
          "{ctranslate2_int8_over_torch}x".format(**ratios), flush=True)
    return ratios


def encoder_share(adapter: Any, workload: Workload) -> float:
    """Fraction of an encoder-decoder's predict time spent in its encoder: the most an ONNX encoder could save."""
    import time
    encoder = adapter.model.get_encoder()
    spent = [0.0]
    started: list[float] = []
    handles = [encoder.register_forward_pre_hook(lambda *_: started.append(time.perf_counter())),
               encoder.register_forward_hook(lambda *_: spent.__setitem__(0, spent[0] + time.perf_counter() - started.pop()))]
    try:
        sample = workload.items[:max(1, len(workload.items) // 4)]
        start = time.perf_counter()
        adapter.predict(sample)
        return round(spent[0] / (time.perf_counter() - start), 3)
    finally:
        for handle in handles:
            handle.remove()


def print_method(result: dict[str, Any]) -> None:
    agree = result.get("agreement_with_ours")
    detail = ""
    if agree:
        detail = f"  same answers {agree['same_text']}/{agree['answers']}"
        if "max_score_diff" in agree:
            detail += f", max score diff {agree['max_score_diff']:.1e}"
    same_engine = result.get("agreement_with_ours_ctranslate2")
    if same_engine:
        detail += f"; as ours on ctranslate2 {same_engine['same_text']}/{same_engine['answers']}"
    print(f"  {result['method']:<28} {result['items_per_s']:>9.2f} items/s  {result['seconds']:>8.1f} s  "
          f"peak {result['peak_rss_mb'] or float('nan'):>7.0f} MB  {result['model_gflop_per_s']:>7.1f} GFLOP/s "
          f"({100 * result['fraction_of_matmul_peak']:.0f}% of matmul peak){detail}", flush=True)


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": importlib.import_module("transformers").__version__,
            "onnxruntime": importlib.import_module("onnxruntime").__version__,
            "ctranslate2": importlib.import_module("ctranslate2").__version__,
            "native_bfloat16": native_cpu_bfloat16(),
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


# Suites that measure serving rather than one model's predict: concurrent clients of the REST server, and the
# platform's concurrent executions on one replica (they run after the model suites).
SERVING_SUITES = ("concurrent-clients", "platform-concurrency")


def serving_texts(count: int) -> list[str]:
    """`count` one-question texts of the DistilBERT suite's workload (4 to 120 words, log-uniform)."""
    workload = build_workload(-(-count // 3), 3, 4, 120)
    return [text for _, _, text, _ in workload.questions()][:count]


def run_serving_suite(name: str, quick: bool, new_tokens: int, models_dir: Path) -> dict[str, Any]:
    from .concurrent_clients import concurrent_clients_suite
    from .platform_concurrency import run_platform_concurrency

    by_name = {s.name: s for s in all_suites(quick, new_tokens)}
    print(f"\n== {name}", flush=True)
    if name == "concurrent-clients":
        return concurrent_clients_suite(model_folder(by_name["distilbert-base-sst2"], models_dir), serving_texts(256),
                                        quick)
    concurrencies, latencies = ((1, 4), (0.0,)) if quick else ((1, 2, 4, 8, 16, 32), (0.0, 0.05))
    executions = 8 if quick else 64
    report = {}
    for suite_name in ("distilbert-base-sst2", "t5-small-email"):
        suite = by_name[suite_name]
        report[suite_name] = run_platform_concurrency(suite.module_name, model_folder(suite, models_dir),
                                                      serving_texts(executions), suite.configuration, concurrencies,
                                                      latencies)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models and a few items: a smoke test, not a measurement")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these suites (default: all)")
    parser.add_argument("--items", type=int, help="override every suite's number of prompt items")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every suite's number of items (at least 2)")
    parser.add_argument("--new-tokens", type=int, default=32, help="max_new_tokens of the generators (default 32)")
    parser.add_argument("--models-dir", type=Path, default=RESULTS / "models",
                        help="where the random-weight models are built once and reused")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="JSON results file")
    args = parser.parse_args(argv)

    suites = [s for s in all_suites(args.quick, args.new_tokens) if not args.only or s.name in args.only]
    serving = [name for name in SERVING_SUITES if not args.only or name in args.only]
    if args.only and len(suites) + len(serving) != len(set(args.only)):
        parser.error(f"--only: known suites are {[s.name for s in all_suites(args.quick, args.new_tokens)]} and "
                     f"{list(SERVING_SUITES)}")
    for suite in suites:
        suite.items = args.items or max(2, round(suite.items * args.scale))
    args.models_dir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    report: dict[str, Any] = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
                              "machine": machine()}
    rates = matmul_rates(512 if args.quick else 2048)
    peak = max(rates.values())
    report["matmul_gflop_per_s_by_kernel"] = {name: round(rate / 1e9, 1) for name, rate in rates.items()}
    print("dense float32 matmul: " + ", ".join(f"{name} {rate / 1e9:.1f}" for name, rate in rates.items())
          + f" GFLOP/s on {torch.get_num_threads()} threads; peak = the best", flush=True)
    report["suites"] = {}
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as onnx_dir:
        for suite in suites:
            report["suites"][suite.name] = run_suite(suite, args.models_dir, peak, Path(onnx_dir))
            args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for name in serving:
        report["suites"][name] = run_serving_suite(name, args.quick, args.new_tokens, args.models_dir)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    peak_after = matmul_peak_flops(512 if args.quick else 2048)
    report["matmul_peak_gflop_per_s"] = {"start": round(peak / 1e9, 1), "end": round(peak_after / 1e9, 1)}
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\ndense matmul at the end: {peak_after / 1e9:.1f} GFLOP/s; results in {args.out}", flush=True)
    return 0


def quiet_process_logs() -> None:
    """Errors only, for a command-line run (not for callers such as the smoke test, whose logging is their own)."""
    from adapters.dataloop.local_runner import quiet_platform_logs

    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")
    quiet_platform_logs()
    importlib.import_module("transformers").utils.logging.disable_progress_bar()
    logging.getLogger("adapters").setLevel(logging.ERROR)  # truncation notices: long texts are part of the workload


if __name__ == "__main__":
    quiet_process_logs()
    sys.exit(main())
