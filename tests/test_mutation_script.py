"""scripts/mutation.py's report and `--recheck`, on a made-up `mutants/` folder (no mutmut run needed)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mutation.py"


@pytest.fixture
def mutation(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("mutation_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    meta = tmp_path / "mutants" / "pkg" / "mod.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": {"pkg.mod.x_f__mutmut_1": 1, "pkg.mod.x_f__mutmut_2": 0,
                                                     "pkg.mod.x_g__mutmut_1": 33, "pkg.mod.x_g__mutmut_2": None}}))
    return module


def test_the_report_scores_what_mutmut_checked_and_shows_what_a_recheck_caught(mutation, tmp_path):
    (tmp_path / "mutants" / "recheck.json").write_text(json.dumps(
        {"pkg.mod.x_g__mutmut_1": {"verdict": "caught by tests/test_g.py::test_it", "files": ["tests/test_g.py"]}}))
    text = mutation.report(mutation.read_results([]))
    assert "| pkg/mod.py | 3 / 4 | 1 | 0 | 1 | 1 | 33% |" in text
    assert "1 of 2 caught under --recheck" in text
    assert "- pkg.mod.x_g__mutmut_1: no tests; caught by tests/test_g.py::test_it under --recheck" in text
    assert "- pkg.mod.x_f__mutmut_2: survived\n" in text + "\n"


def test_a_recheck_refuses_test_files_that_fail_with_no_mutant_on(mutation, tmp_path):
    """A test that fails for another reason would 'catch' every mutant: the recheck stops before the first."""
    tests = tmp_path / "mutants" / "tests"
    tests.mkdir()
    (tests / "test_broken.py").write_text("def test_broken():\n    assert False\n")
    with pytest.raises(SystemExit, match="fail in mutants/ with no mutant switched on"):
        mutation.recheck(["pkg.mod.x_f__mutmut_2"], ["tests/test_broken.py"], timeout=60)
    assert not (tmp_path / "mutants" / "recheck.json").exists()
    (tests / "test_broken.py").write_text("import os\n\ndef test_sees_the_mutant():\n"
                                          "    assert os.environ['MUTANT_UNDER_TEST'] != 'pkg.mod.x_f__mutmut_2'\n")
    verdicts = mutation.recheck(["pkg.mod.x_f__mutmut_2"], ["tests/test_broken.py"], timeout=60)
    assert verdicts == {"pkg.mod.x_f__mutmut_2": "caught by tests/test_broken.py::test_sees_the_mutant"}
    assert json.loads((tmp_path / "mutants" / "recheck.json").read_text())["pkg.mod.x_f__mutmut_2"]["files"] == [
        "tests/test_broken.py"]


def test_a_recheck_takes_the_uncaught_mutants_of_the_named_functions_not_those_caught_before(mutation, tmp_path):
    assert mutation.to_recheck([], []) == ["pkg.mod.x_f__mutmut_2", "pkg.mod.x_g__mutmut_1"]
    assert mutation.to_recheck([], ["x_g"]) == ["pkg.mod.x_g__mutmut_1"]
    assert mutation.to_recheck(["other.mod"], []) == []
    (tmp_path / "mutants" / "recheck.json").write_text(json.dumps(
        {"pkg.mod.x_g__mutmut_1": {"verdict": "caught by tests/test_g.py::test_it", "files": ["tests/test_g.py"]},
         "pkg.mod.x_f__mutmut_2": {"verdict": "survived", "files": ["tests/test_g.py"]}}))
    assert mutation.to_recheck([], []) == ["pkg.mod.x_f__mutmut_2"]
