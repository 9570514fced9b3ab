"""The benchmark runs end to end on tiny models (`--quick`), so it never rots. No timing is asserted."""
import json

import pytest

from benchmarks.run import main
from tests.tolerances import BFLOAT16_PROBABILITY_ATOL, INT8_PROBABILITY_ATOL, PROBABILITY_ATOL


def rate_matches(items: int, method: dict) -> bool:
    """items_per_s is items / seconds, both rounded to 3 decimals in the report."""
    seconds, rate = method["seconds"], method["items_per_s"]
    return seconds > 0.0005 and items / (seconds + 0.0005) - 0.0005 <= rate <= items / (seconds - 0.0005) + 0.0005


def test_quick_benchmark_runs_every_suite_with_rates_that_add_up_and_equal_answers(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["--quick", "--out", str(out), "--models-dir", str(tmp_path / "models")]) == 0
    report = json.loads(out.read_text())
    assert set(report["suites"]) == {"distilbert-base-sst2", "bart-large-mnli", "gpt2-medium-dialogpt",
                                     "qwen2-0.5b-instruct", "t5-small-email", "concurrent-clients",
                                     "platform-concurrency"}
    assert report["matmul_peak_gflop_per_s"]["start"] > 0 and report["machine"]["torch_threads"] >= 1
    serving = {name: report["suites"].pop(name) for name in ("concurrent-clients", "platform-concurrency")}
    clients = serving["concurrent-clients"]
    for count in ("1", "8"):
        measured = clients["by_clients"][count]
        assert measured["ours_concurrent"]["statuses_over_rounds"] == {"200": int(count)}  # every client answered
        assert measured["plain_concurrent"]["statuses_over_rounds"] == {"200": int(count)}
        assert measured["ours_one_request"]["statuses_over_rounds"] == {"200": 1}
        assert measured["concurrent_over_one_request"] == pytest.approx(
            measured["ours_concurrent"]["seconds"] / measured["ours_one_request"]["seconds"], abs=0.06)
    assert set(clients["lone_latency_ms"]) == {"ours", "ours_max_batch_wait_ms_0", "plain"}
    assert set(clients["targets"]) == {"all_answered", "concurrent_within_1.3x_one_request",
                                       "at_least_2x_plain_throughput", "lone_latency_within_wait"}
    for model in ("distilbert-base-sst2", "t5-small-email"):
        rates = serving["platform-concurrency"][model]["items_per_s"]["latency_0ms"]
        assert set(rates) == {"1", "4"} and all(rate > 0 for rate in rates.values())
    for name, suite in report["suites"].items():
        assert suite["t4_projection"]["t4_float32_questions_per_s"] > 0, name
        methods = {m["method"].split(" (batch_size")[0]: m for m in suite["methods"]}
        assert {"ours (torch)", "ours (torch, dtype bfloat16)", "naive loop"} <= set(methods), name
        # rates and ratios are rounded to 3 decimals in the report: a ratio of rounded rates is within 0.006
        assert suite["bfloat16_over_naive"] == pytest.approx(
            methods["ours (torch, dtype bfloat16)"]["items_per_s"] / methods["naive loop"]["items_per_s"], abs=0.006)
        assert suite["model_gflop"] > 0
        for method in methods.values():
            assert rate_matches(suite["items"], method), (name, method)
        assert suite["ours_over_naive"] == pytest.approx(
            methods["ours (torch)"]["items_per_s"] / methods["naive loop"]["items_per_s"], abs=0.006)
        if suite["module"] in ("models.distilbert_sst2", "models.bart_large_mnli"):
            assert {"pipeline", "ours (onnx fp32)", "ours (onnx int8)"} <= set(methods), name
            for exact in ("naive loop", "pipeline", "ours (onnx fp32)"):
                agreement = methods[exact]["agreement_with_ours"]
                # float32 elsewhere: rounding only; int8 and bfloat16 drift as tests/tolerances.py derives
                assert agreement["all_same_text"] and agreement["max_score_diff"] < PROBABILITY_ATOL, (name, exact)
            assert methods["ours (onnx int8)"]["agreement_with_ours"]["max_score_diff"] < INT8_PROBABILITY_ATOL
            bfloat16 = methods["ours (torch, dtype bfloat16)"]["agreement_with_ours"]["max_score_diff"]
            assert bfloat16 < BFLOAT16_PROBABILITY_ATOL
        else:
            assert suite["generated_tokens"] > 0 and "pipeline" not in methods
            for compute_type in ("float32", "int8"):  # the same engine and inputs give the same answers
                for raw in (methods[f"raw CTranslate2 {compute_type}"],
                            methods[f"raw CTranslate2 {compute_type}, per predict call"]):
                    assert raw["agreement_with_ours_ctranslate2"]["all_same_text"], (name, raw)
                assert suite[f"ctranslate2_{compute_type}_over_raw"] > 0
            assert methods["ours (ctranslate2 float32)"]["agreement_with_ours"]["all_same_text"], name
    assert "ours/naive" in capsys.readouterr().out


def test_quick_embedding_benchmark_compares_with_a_plain_automodel_loop(tmp_path):
    from benchmarks.embeddings import main as embeddings_main
    out = tmp_path / "embeddings.json"
    assert embeddings_main(["--quick", "--only", "distilbert-base-sst2", "--texts", "8", "--rounds", "1",
                            "--out", str(out), "--models-dir", str(tmp_path / "models")]) == 0
    suite = json.loads(out.read_text())["suites"]["distilbert-base-sst2"]
    assert suite["texts"] == 8 and suite["embedding_size"] > 0
    rates = {m["method"]: m["texts_per_s"] for m in suite["methods"]}
    assert set(rates) == {"ours (embed_texts)", "plain AutoModel loop"}
    assert suite["ours_over_plain"] == pytest.approx(rates["ours (embed_texts)"] / rates["plain AutoModel loop"],
                                                     abs=0.006)
    assert suite["max_vector_difference"] < 1e-4  # the same vectors, float32 rounding apart
