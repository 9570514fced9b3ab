"""Mutation testing of the core modules with mutmut: mutate, run the tests that cover each mutant, list survivors.

    python scripts/mutation.py                      # every core module in setup.cfg [mutmut], 2 test processes
    python scripts/mutation.py adapters.core.batching    # only these modules (dotted names, as mutmut names mutants)
    python scripts/mutation.py --max-children 4 --report-only
    python scripts/mutation.py adapters.dataloop.model_adapter --recheck tests/test_platform_classes.py ...

mutmut copies `adapters/` and `models/` to `mutants/`, mutates the files listed in `only_mutate` and, for each
mutant, runs only the tests (from `pytest_add_cli_args_test_selection`) that call the mutated function. Results
are kept in `mutants/`: a second run only tries mutants whose function changed. `--recheck FILES` runs each mutant
the selection did not catch against other test files (ones that run in subprocesses, or that the selection leaves
out to stay fast), one mutant at a time, and records which of them those files catch in `mutants/recheck.json`.
Not part of CI: a whole run took 1 h 28 min on 2 cores (docs/testing.md has the last score and the survivors
accepted on purpose).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# mutmut's exit codes per mutant (mutmut/stats.py): 1 and 3 mean a test failed, 0 that every test passed.
KILLED, SURVIVED, NO_TESTS, TIMEOUT = {1, 3}, {0}, {5, 33}, {24, -24, 36, 152, 255}


def outcome(exit_code: int | None) -> str:
    if exit_code in KILLED:
        return "killed"
    if exit_code in SURVIVED:
        return "survived"
    if exit_code in NO_TESTS:
        return "no tests"
    if exit_code in TIMEOUT:
        return "timeout"  # the tests ran far past their usual time: counted as caught, as mutmut does
    return "not checked" if exit_code is None else f"exit {exit_code}"


def rechecks_file() -> Path:
    return ROOT / "mutants" / "recheck.json"


def read_rechecks() -> dict[str, dict]:
    """The verdicts `--recheck` recorded, by mutant name: {"verdict": ..., "files": [...]}."""
    store = rechecks_file()
    return json.loads(store.read_text()) if store.exists() else {}


def caught_on_recheck(rechecked: dict[str, dict]) -> set[str]:
    """The mutants a recheck caught, among the recorded verdicts `rechecked`."""
    return {name for name, record in rechecked.items() if record.get("verdict", "").startswith("caught")}


def read_results(modules: list[str]) -> dict[str, dict[str, str]]:
    """Outcome of every mutant, by source file, from mutmut's `mutants/<file>.meta` records."""
    results: dict[str, dict[str, str]] = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        source = str(meta.relative_to(ROOT / "mutants"))[:-len(".meta")]
        dotted = source[:-len(".py")].replace("/", ".")
        if modules and dotted not in modules:
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        results[source] = {name: outcome(code) for name, code in sorted(codes.items())}
    return results


def report(results: dict[str, dict[str, str]]) -> str:
    """A Markdown table per module (score = caught / checked), then every checked mutant that was not caught."""
    lines = ["| module | checked / mutants | killed | timeout | survived | no tests | score |",
             "|---|---|---|---|---|---|---|"]
    rows = [(source, Counter(outcomes.values()), len(outcomes)) for source, outcomes in results.items()]
    rows.append(("**all**", sum((counts for _, counts, _ in rows), Counter()), sum(n for _, _, n in rows)))
    for source, counts, total in rows:
        checked = total - counts["not checked"]
        caught = counts["killed"] + counts["timeout"]
        lines.append(f"| {source} | {checked} / {total} | {counts['killed']} | {counts['timeout']} | "
                     f"{counts['survived']} | {counts['no tests']} | "
                     f"{f'{caught / checked:.0%}' if checked else '-'} |")
    rechecked = read_rechecks()
    uncaught = [(name, state) for outcomes in results.values() for name, state in outcomes.items()
                if state not in ("killed", "timeout", "not checked")]
    by_recheck = caught_on_recheck(rechecked)
    caught_later = [name for name, _ in uncaught if name in by_recheck]
    lines += ["", f"Not caught (see one with `mutmut show <name>`); {len(caught_later)} of {len(uncaught)} caught "
                  f"under --recheck:"]
    lines += [f"- {name}: {state}" + (f"; {rechecked[name]['verdict']} under --recheck" if name in rechecked else "")
              for name, state in uncaught]
    return "\n".join(lines)


def to_recheck(modules: list[str], functions: list[str]) -> list[str]:
    """The mutants mutmut did not catch (of functions whose names contain one of `functions`, if any), less those
    an earlier recheck caught: a recheck against other files must not overwrite that verdict with "survived"."""
    caught = caught_on_recheck(read_rechecks())
    return [name for outcomes in read_results(modules).values() for name, state in outcomes.items()
            if state in ("survived", "no tests") and name not in caught
            and (not functions or any(part in name for part in functions))]


def recheck(names: list[str], test_files: list[str], timeout: float) -> dict[str, str]:
    """Each mutant in `names`, switched on in `mutants/` as mutmut does (`MUTANT_UNDER_TEST`), against `test_files`
    (stopping at the first failure): "caught by <test>" or "survived"; saved in mutants/recheck.json as it goes."""
    verdicts = read_rechecks()
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "--hypothesis-seed=0",
               f"--timeout={int(timeout)}", "--timeout-method=thread", *test_files]

    def run_with(mutant: str) -> subprocess.CompletedProcess:
        """The test files with `mutant` switched on ("" for none), as mutmut runs them, in `mutants/`."""
        return subprocess.run(command, cwd=ROOT / "mutants", capture_output=True, text=True, timeout=timeout * 10,
                              env={**os.environ, "MUTANT_UNDER_TEST": mutant, "HF_HUB_OFFLINE": "1"})

    clean = run_with("")
    if clean.returncode != 0:  # a failure with no mutant on would be counted as every mutant caught
        raise SystemExit(f"{' '.join(test_files)} fail in mutants/ with no mutant switched on:\n"
                         + "\n".join(clean.stdout.splitlines()[-15:]))
    for number, name in enumerate(names, 1):
        try:
            done = run_with(name)
            failed = [line.split()[1] for line in done.stdout.splitlines()  # pytest's summary lines, not logs
                      if line.startswith(("FAILED tests/", "ERROR tests/"))]
            verdict = (f"caught by {failed[0] if failed else 'pytest exit ' + str(done.returncode)}"
                       if done.returncode not in (0, 5) else "survived")
        except subprocess.TimeoutExpired:
            verdict = "caught (timeout)"
        verdicts[name] = {"verdict": verdict, "files": test_files}
        rechecks_file().write_text(json.dumps(verdicts, indent=1))
        print(f"[{number}/{len(names)}] {name}: {verdict}", flush=True)
    return {name: verdicts[name]["verdict"] for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="dotted module names, e.g. adapters.core.batching (default: all)")
    parser.add_argument("--max-children", type=int, default=2, help="test processes at once (default 2)")
    parser.add_argument("--report-only", action="store_true", help="summarise the last run without running")
    parser.add_argument("--recheck", nargs="+", metavar="TEST_FILE",
                        help="run the mutants the last run did not catch against these test files instead")
    parser.add_argument("--functions", nargs="+", default=[], metavar="NAME",
                        help="under --recheck, only the mutants of functions whose names contain one of these")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per test under --recheck (default 120)")
    args = parser.parse_args(argv)
    if args.recheck:
        verdicts = recheck(to_recheck(args.modules, args.functions), args.recheck, args.timeout)
        print(f"{sum(v.startswith('caught') for v in verdicts.values())} of {len(verdicts)} caught by "
              f"{' '.join(args.recheck)}")
        return 0
    if not args.report_only:
        try:
            import mutmut  # noqa: F401
        except ImportError:
            print("mutmut is not installed: pip install -r requirements-dev.txt", file=sys.stderr)
            return 2
        patterns = [f"{module}.*" for module in args.modules]
        command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *patterns]
        code = subprocess.call(command, cwd=ROOT)
        if code != 0:
            print(f"mutmut exited with {code}", file=sys.stderr)
    results = read_results(args.modules)
    if not results:
        print("no mutation results in mutants/: run without --report-only first", file=sys.stderr)
        return 1
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
