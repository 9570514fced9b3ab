"""The training memory benchmark runs end to end on tiny widths (`--quick`), and its estimate follows its model."""
import json

from benchmarks.training_memory import T4_BUDGET_MIB, estimate, largest_batch, main, t4_rows


def test_quick_training_memory_benchmark_measures_fixed_and_peak(tmp_path, capsys):
    out = tmp_path / "memory.json"
    # One measurement (a fresh process): the seq2seq path with LoRA and gradient checkpointing.
    assert main(["--quick", "--models", "t5-email", "--configs", "lora+gc", "--batches", "2", "--out", str(out)]) == 0
    [result] = json.loads(out.read_text())["results"]
    [point] = result["points"]
    assert "error" not in point and point["batch"] == 2 and point["peak_mib"] >= point["fixed_mib"] > 0
    assert 0 < point["trainable"] < point["parameters"]
    assert result["line"]["bound_at_batch_mib"] >= point["peak_mib"]  # bounded at the manifest batch (8)
    assert "| t5-email | lora+gc | fp32 |" in capsys.readouterr().out


def test_the_bound_covers_both_moments_a_step_can_peak_at():
    # 1000 MiB fixed, of which 381 MiB are the gradients of 100 M trained float32 parameters.
    one = {"fixed_mib": 1000, "trainable": 100_000_000}
    late = [{**one, "batch": 1, "peak_mib": 1050}, {**one, "batch": 2, "peak_mib": 1100}]
    # Measured late in the backward pass, the activations alone (early in it) could still reach
    # (fixed - gradients) + (1100 - fixed + gradients) / 2 per row: a bound above the late line's 1200.
    gradients = 100_000_000 * 4 / 2**20
    assert estimate(late, 4)["bound_at_batch_mib"] == round(1000 - gradients + (1100 - 1000 + gradients) / 2 * 4)
    early = [{**one, "batch": 1, "peak_mib": 1500}, {**one, "batch": 2, "peak_mib": 2400}]
    assert estimate(early, 4)["bound_at_batch_mib"] == 4200  # the measured 900 MiB per row continues
    assert estimate(early, 2) == {"fixed_mib": 1000, "measured_at_batch_mib": 2400, "bound_at_batch_mib": 2400}
    assert largest_batch(early, 4200) == 4 and largest_batch(early, 1400) == 0


def test_a_bf16_measurement_decides_the_t4_row_and_fp32_alone_adds_half_precision_weights():
    def result(precision, peak):
        points = [{"batch": 4, "fixed_mib": 3000, "peak_mib": peak, "trainable": 1_000_000,
                   "parameters": 512 * 2**20}]
        return {"model": "m", "config": "lora+gc", "precision": precision, "batch": 4, "points": points,
                "line": estimate(points, 4)}

    fp32_only = t4_rows([result("fp32", 7000)])[0]
    assert fp32_only["t4_peak_mib"] == 7000 + 1024 and fp32_only["from"] == "fp32 + 2 B/param"
    both = t4_rows([result("fp32", 7000), result("bf16", 5000)])[0]
    assert both["t4_peak_mib"] == 5000 and both["measured"] and both["fits"] == (5000 <= T4_BUDGET_MIB)
