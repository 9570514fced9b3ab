"""The training memory benchmark runs end to end on tiny widths (`--quick`), and its estimate follows its model."""
import json

from benchmarks.training_memory import T4_BUDGET_MIB, estimate, main, t4_rows


def test_quick_training_memory_benchmark_measures_fixed_and_peak(tmp_path, capsys):
    out = tmp_path / "memory.json"
    # One measurement (a fresh process): the seq2seq path with LoRA and gradient checkpointing.
    assert main(["--quick", "--models", "t5-email", "--configs", "lora+gc", "--batches", "2", "--out", str(out)]) == 0
    [result] = json.loads(out.read_text())["results"]
    [point] = result["points"]
    assert "error" not in point and point["batch"] == 2 and point["peak_mib"] >= point["fixed_mib"] > 0
    assert 0 < point["trainable"] < point["parameters"]
    assert result["line"]["peak_at_batch_mib"] >= point["peak_mib"]  # extrapolated to the manifest batch (8)
    assert "| t5-email | lora+gc | fp32 |" in capsys.readouterr().out


def test_the_estimate_takes_the_larger_of_the_two_phases():
    # 1000 MiB fixed, of which 400 MiB gradients (100 M trainable float32 parameters ~ 381 MiB).
    gradients_dominate = [{"batch": 1, "fixed_mib": 1000, "peak_mib": 1050, "trainable": 100_000_000},
                          {"batch": 2, "fixed_mib": 1000, "peak_mib": 1100, "trainable": 100_000_000}]
    assert estimate(gradients_dominate, 4)["peak_at_batch_mib"] == 1200  # late phase: fixed + 50 per row
    activations_dominate = [{"batch": 1, "fixed_mib": 1000, "peak_mib": 1500, "trainable": 100_000_000},
                            {"batch": 2, "fixed_mib": 1000, "peak_mib": 2400, "trainable": 100_000_000}]
    line = estimate(activations_dominate, 4)
    assert line["peak_at_batch_mib"] == 4200 and "measured_at_batch_mib" not in line  # early phase: +900 per row
    assert estimate(activations_dominate, 2)["measured_at_batch_mib"] == 2400


def test_a_bf16_measurement_decides_the_t4_row_and_fp32_alone_adds_half_precision_weights():
    def result(precision, peak):
        points = [{"batch": 4, "fixed_mib": 3000, "peak_mib": peak, "trainable": 1_000_000,
                   "parameters": 512 * 2**20}]
        return {"model": "m", "config": "lora+gc", "precision": precision, "batch": 4, "points": points,
                "line": estimate(points, 4)}

    fp32_only = t4_rows([result("fp32", 7000)])[0]
    assert fp32_only["t4_peak_mib"] == 7000 + 1024 and fp32_only["from"] == "fp32 + 2 B/param"
    both = t4_rows([result("fp32", 7000), result("bf16", 5000)])[0]
    assert both["t4_peak_mib"] == 5000 and both["fits"] == (5000 <= T4_BUDGET_MIB)
