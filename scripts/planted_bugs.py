"""Re-plant issue 15's seven hand-made bugs, one at a time in a copy of the package, and check a test catches each.

    python scripts/planted_bugs.py            # every bug; exit 1 if any is not caught by its named tests
    python scripts/planted_bugs.py seed leak  # only bugs whose key contains one of these words

Each bug is a (file, text, replacement) edit and the tests named for the behaviour it breaks; the copy lives in a
temporary folder, so the working tree is never touched. mutmut (scripts/mutation.py) plants its own small bugs
everywhere; these are the realistic ones a reviewer planted, kept so they stay caught.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("adapters", "models", "tests", "docs", "dataloop.json", "pytest.ini", "README.md")


@dataclass(frozen=True)
class Bug:
    key: str
    file: str
    text: str
    replacement: str
    tests: tuple[str, ...]


BUGS = (
    Bug("eos left out of generation confidence", "adapters/generation.py",
        "    return ~ended_before\n", "    return ~ended_before & ~is_eos\n",
        ("tests/test_generators.py::test_confidence_of_an_answer_that_ends_early_includes_its_end_of_sequence_token",)),
    Bug("n_gen answers copies of the first", "adapters/generative_adapter.py",
        "return [generated[i:i + n] for i in range(0, len(generated), n)]",
        "return [[generated[i]] * n for i in range(0, len(generated), n)]",
        ("tests/test_generators.py::test_t5_n_gen_answers_are_the_distinct_sequences_generate_returns",)),
    Bug("sigmoid branch of classifiers removed", "models/distilbert_sst2.py",
        'self.use_sigmoid = config.problem_type == "multi_label_classification" or config.num_labels == 1',
        "self.use_sigmoid = False",
        ("tests/test_classifiers.py::"
         "test_multi_label_and_one_label_classifiers_score_each_label_with_a_sigmoid_like_the_pipeline",)),
    Bug("zero-shot multi-label and one-label branch removed", "models/bart_large_mnli.py",
        "if multi_label or len(labels) == 1:", "if False:",
        ("tests/test_classifiers.py::test_zero_shot_equals_pipeline",
         "tests/test_classifiers.py::test_single_label_is_scored_independently_like_the_pipeline")),
    Bug("outputs not put back in input order", "adapters/hugging_adapter.py",
        "for i, result in zip(indices, results):", "for i, result in zip(sorted(indices), results):",
        ("tests/test_base_adapter.py::test_batched_answers_come_back_in_input_order_and_ignore_padding",)),
    Bug("attention mask dropped", "adapters/hugging_adapter.py",
        "inputs = {k: v.to(self.device) for k, v in inputs.items()}",
        'inputs = {k: v.to(self.device) for k, v in inputs.items() if k != "attention_mask"}',
        ("tests/test_base_adapter.py::test_batched_answers_come_back_in_input_order_and_ignore_padding",)),
    Bug("sampling seed ignored", "adapters/generative_adapter.py",
        'self.generation_config, self.configuration["seed"])', "self.generation_config, None)",
        ("tests/test_server.py::test_generate_replays_a_seed_and_other_seeds_write_other_emails",
         "tests/test_generators.py::test_seed_makes_sampling_reproducible")),
    Bug("per-request configuration not restored", "adapters/hugging_adapter.py",
        "            self.configuration = saved\n            self.setup()", "            pass",
        ("tests/test_server.py::test_per_request_overrides_do_not_leak",)),
)


def caught(bug: Bug, work: Path) -> bool:
    """Plant `bug` in the copy at `work`, run its tests, restore the file; True when a test failed."""
    path = work / bug.file
    original = path.read_text()
    if original.count(bug.text) != 1:
        raise SystemExit(f"{bug.key}: the text to replace is not in {bug.file} exactly once; update this script")
    path.write_text(original.replace(bug.text, bug.replacement))
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", *bug.tests], cwd=work,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True)
    finally:
        path.write_text(original)
    return result.returncode == 1


def main(argv: list[str]) -> int:
    bugs = [b for b in BUGS if not argv or any(word in b.key for word in argv)]
    missed = []
    with tempfile.TemporaryDirectory(prefix="planted-bugs-") as folder:
        work = Path(folder)
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, work / name)
        for bug in bugs:
            ok = caught(bug, work)
            print(f"{'caught' if ok else 'MISSED'}: {bug.key} ({', '.join(t.split('::')[-1] for t in bug.tests)})",
                  flush=True)
            if not ok:
                missed.append(bug.key)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
