"""`python -m adapters list` and `predict` as a user runs them: subprocesses on the bundled examples and tiny models.

Each subprocess imports torch and dtlpy (seconds), so there is one predict run per model, each on several files.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.core.manifest import MANIFEST_PATH, model_entries
from tests.prompt_factory import legacy_item, own_and_best_score

ROOT = MANIFEST_PATH.parent
EXAMPLES = ROOT / "examples"
TINY = {"distilbert-sst2": "distilbert", "bart-large-mnli": "bart", "dialogpt-large": "gpt2", "t5-email": "t5"}
# Small answer budgets keep generation inside the tiny models' 128-token window; t5 writes two emails per question.
FAST = {"dialogpt-large": ["--set", "max_new_tokens=8"], "t5-email": ["--set", "token_count=8", "--set", "n_gen=2"]}
GENERATIONS = {"t5-email": 2}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Run `python -m adapters ARGS` from the repo root, offline, with dtlpy and HF state in a temp folder."""
    state = tmp_path_factory.mktemp("cli-state")
    # A user's shell has none of the library switches that in-process CLI calls of other tests set for themselves.
    inherited = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env = {**inherited, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(state / "hf"),
           "DATALOOP_PATH": str(state / "dataloop"), "HOME": str(state / "home")}
    for folder in ("hf", "dataloop", "home"):
        (state / folder).mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "adapters", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
    run.env = env
    return run


def expected_answers(path: Path) -> dict[str, int]:
    """Answers per prompt key of an example, counted independently of the adapter's parser: one per text question
    of a legacy prompt, one per current-format prompt (a user message, however many text elements it has)."""
    prompts = json.loads(path.read_text(encoding="utf-8"))["prompts"]
    expected = {}
    for key, elements in prompts.items():
        texts = sum(1 for e in (elements if isinstance(elements, list) else elements.values())
                    if e["mimetype"] != "metadata")
        expected[key] = min(texts, 1) if isinstance(elements, list) else texts
    return expected


def check_answers(model: str, entry: dict, path: Path) -> None:
    got: dict[str, int] = {}
    for annotation in entry["annotations"]:
        assert annotation["type"] == "text" and isinstance(annotation["coordinates"], str)
        assert annotation["metadata"]["user"]["model"]["name"] == model
        own, best = own_and_best_score(annotation["coordinates"], annotation["metadata"]["user"]["model_output"])
        assert annotation["metadata"]["user"]["model"]["confidence"] == own == best
        if model in GENERATIONS:
            assert len(annotation["metadata"]["user"]["model_output"]["generations"]) == GENERATIONS[model]
        prompt = annotation["metadata"]["system"]["promptId"]
        got[prompt] = got.get(prompt, 0) + 1
    assert got == expected_answers(path), entry["file"]
    assert entry["skipped"] == [] and entry["error"] is None


def test_list_prints_the_manifest_models(cli):
    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    models = json.loads(listed.stdout)
    entries = model_entries()
    assert [m["name"] for m in models] == [e["name"] for e in entries]
    for model, entry in zip(models, entries):
        assert model["module_name"] == entry["configuration"]["module_name"]
        assert {"module_name": model["module_name"], **model["configuration"]} == entry["configuration"]
    text = cli("list")
    assert text.returncode == 0
    for entry in entries:
        assert f"{entry['name']}  ({entry['configuration']['module_name']})" in text.stdout


@pytest.mark.parametrize("model", ["bart-large-mnli", "dialogpt-large", "t5-email"])
def test_predict_answers_every_example(cli, tiny_models, tmp_path, model):
    examples = sorted((EXAMPLES / model).glob("*.json"))
    assert {p.stem.rsplit("-", 1)[-1] for p in examples} == {"legacy", "current"}
    out = tmp_path / "answers.json"
    run = cli("predict", model, *map(str, examples), "--model-path", str(tiny_models[TINY[model]]),
              *FAST.get(model, []), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and f"written to {out}" in run.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["answers.json"]  # the partial file was renamed
    entries = json.loads(out.read_text(encoding="utf-8"))
    assert [e["file"] for e in entries] == [str(p) for p in examples]
    for entry, path in zip(entries, examples):
        check_answers(model, entry, path)


def test_predict_reports_bad_files_and_answers_the_others(cli, tiny_models, tmp_path):
    """One item per predict call (--batch-size 1), so every file's report comes from its own call."""
    model = "distilbert-sst2"
    examples = sorted((EXAMPLES / model).glob("*.json"))
    malformed = tmp_path / "malformed.json"
    malformed.write_text("{not json", encoding="utf-8")
    no_prompts = tmp_path / "no-prompts.json"
    no_prompts.write_text('{"shebang": "dataloop"}', encoding="utf-8")
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"prompts": {"1": {"q1": {"mimetype": "application/text", "value": "I love it"},
                                                   "q2": {"mimetype": "image/png", "value": "http://x/y.png"}}}}),
                     encoding="utf-8")
    missing = tmp_path / "missing.json"
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # opening it would block forever: no writer ever comes
    files = [examples[0], malformed, missing, mixed, no_prompts, examples[1], fifo, tmp_path]
    run = cli("predict", model, *map(str, files), "--model-path", str(tiny_models["distilbert"]), "--batch-size", "1",
              "--json", "-v")  # -v after the command
    assert run.returncode == 1, run.stderr
    assert "DEBUG" in run.stderr or "INFO" in run.stderr
    entries = json.loads(run.stdout)  # stdout carries only the JSON: dtlpy's progress bars are kept off it
    assert [e["file"] for e in entries] == [str(f) for f in files]
    check_answers(model, entries[0], examples[0])
    check_answers(model, entries[5], examples[1])
    assert "could not read the item" in entries[1]["error"] and entries[1]["annotations"] == []
    assert "No such file" in entries[2]["error"] and entries[2]["annotations"] == []
    assert "'prompts'" in entries[4]["error"] and entries[4]["annotations"] == []
    assert entries[3]["error"] is None and len(entries[3]["annotations"]) == 1
    assert [(s["prompt"], s["element"]) for s in entries[3]["skipped"]] == [("1", "q2")]
    assert "non-text" in entries[3]["skipped"][0]["reason"]
    assert "not a regular file" in entries[6]["error"] and "folder" in entries[7]["error"]
    for failed in (malformed, missing, no_prompts, fifo, tmp_path):
        assert f"error: {failed}" in run.stderr


@pytest.mark.parametrize("args, message", [
    (["predict", "no-such-model", "x.json"], "unknown model 'no-such-model'"),
    (["predict", "distilbert-sst2", "x.json", "--set", "batch_size"], "expected KEY=VALUE"),
    (["predict", "distilbert-sst2", "x.json", "--set", "batch_size=0"], "'batch_size' must be >= 1"),
    (["predict", "distilbert-sst2", "x.json", "--out", "/no/such/folder/out.json"], "does not exist"),
    (["predict", "distilbert-sst2", "x.json", "--out", str(EXAMPLES)], "is a folder"),
    (["predict", "distilbert-sst2", "x.json", "--out", str(EXAMPLES / "distilbert-sst2" / "reviews-legacy.json" / "o")],
     "does not exist"),
    (["predict", "distilbert-sst2", "x.json", "--out", "/sys/answers.json"], "cannot write in '/sys'"),
    (["predict", "distilbert-sst2", "x.json", "--out", "/dev/null"], "not a regular file"),
    (["predict", "distilbert-sst2", "x.json", "--set", "batch_size=0", "-v"], "'batch_size' must be >= 1"),
    (["predict", "distilbert-sst2"], "FILE"),
])
def test_usage_errors_exit_2_before_loading_anything(cli, args, message):
    """Configuration errors in depth are covered through the same validation in test_creation.py."""
    run = cli(*args)
    assert run.returncode == 2
    assert message in run.stderr and run.stdout == ""


@pytest.mark.parametrize("value, message", [
    ("9" * 5000, "'seed': its value is a number of more than 4300 digits"),
    ("[" * 100_000, "'seed': its value nests too deeply"),
    ("-" + "9" * 5000, "more than 4300 digits"),
], ids=["digits", "deep", "negative"])
def test_set_values_json_cannot_read_are_one_line_errors(capsys, tiny_models, value, message):
    """`--set` caught only JSONDecodeError: a 5000-digit number (a ValueError) or a deep `[[[` (a RecursionError)
    gave a traceback or a misleading "could not load model"; `serve --set` parses the same way."""
    from adapters.cli import main
    from adapters.cli.serve import configurations
    from adapters.core.errors import ConfigurationError

    assert main(["predict", "distilbert-sst2", "x.json", "--set", f"seed={value}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and len(err) < 300
    with pytest.raises(ConfigurationError, match=message.split(": ", 1)[-1]):
        configurations(["distilbert-sst2"], [], [f"distilbert-sst2.seed={value}"])


def test_progress_moves_with_every_micro_batch_not_once_per_file(tiny_models, tmp_path):
    """One file of 40 questions is one predict call: the progress reported must move inside it."""
    from adapters.dataloop.local_runner import LocalRunner
    runner = LocalRunner("distilbert-sst2", {"model_path": str(tiny_models["distilbert"]), "batch_size": 4})
    path = tmp_path / "many.json"
    path.write_text(json.dumps(legacy_item({"p": [f"question {i} " * (1 + i % 5) for i in range(40)]})))
    seen: list[tuple[float, int]] = []
    (result,) = runner.predict_files([path], on_progress=lambda done, total: seen.append((done, total)))
    assert len(result.annotations) == 40 and seen[-1] == (40, 40)
    done = [d for d, _ in seen]
    assert done == sorted(done) and len({d for d in done if 0 < d < 40}) >= 5


def test_progress_over_many_files_has_its_total_from_the_start_and_fills_once(tiny_models, tmp_path):
    """The total grew as predict calls started (over 2,000 questions the bar reached 100% five times): every file
    is parsed first, so the total is known before the first answer and 100% comes once, at the end."""
    from adapters.dataloop.local_runner import LocalRunner
    runner = LocalRunner("distilbert-sst2", {"model_path": str(tiny_models["distilbert"]), "batch_size": 2})
    files = []
    for index in range(5):
        files.append(tmp_path / f"{index}.json")
        files[-1].write_text(json.dumps(legacy_item({"p": [f"question {index} {i}" for i in range(8)]})))
    files.insert(2, tmp_path / "missing.json")  # counts nothing
    seen: list[tuple[float, int]] = []
    results = runner.predict_files(files, on_progress=lambda done, total: seen.append((done, total)))
    assert sum(len(r.annotations) for r in results) == 40
    assert {total for _, total in seen} == {40}
    done = [d for d, _ in seen]
    assert done == sorted(done) and done.index(40) > len(done) - 3  # full only at the very end


def test_a_wrong_checkpoint_is_one_line_ours_without_the_librarys_report(cli, tiny_models):
    # transformers logs a LOAD REPORT table for a checkpoint of another architecture; our error says it in one line.
    quiet = cli("predict", "distilbert-sst2", str(EXAMPLES / "distilbert-sst2" / "reviews-current.json"),
                "--model-path", str(tiny_models["gpt2"]))
    assert quiet.returncode == 2
    assert quiet.stderr.splitlines() == [quiet.stderr.strip()] and quiet.stderr.startswith("error: the weights at")
    verbose = cli("-v", "predict", "distilbert-sst2", str(EXAMPLES / "distilbert-sst2" / "reviews-current.json"),
                  "--model-path", str(tiny_models["gpt2"]))
    assert verbose.returncode == 2 and "LOAD REPORT" in verbose.stderr  # -v shows the library's own account


# ----- finished work is never lost at the last step -----
class FullDisk:
    """A file on a disk with `capacity` bytes free: a write past it writes what fits, then fails with ENOSPC."""

    def __init__(self, path: Path, capacity: int):
        self.file = open(path, "wb", buffering=0)
        self.capacity = capacity

    def write(self, data) -> int:
        room = self.capacity - self.file.tell()
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.file.write(bytes(data[:room]))

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def predict_in_process(args: list[str], capsys) -> tuple[int, str, str]:
    from adapters.cli import main
    code = main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_full_disk_keeps_the_answers_finished_before_it_and_stops_the_run(tiny_models, tmp_path, capsys,
                                                                             monkeypatch):
    """A full disk under --out lost the whole run's answers with a traceback: they were written at the very end."""
    from adapters.cli import predict
    from adapters.dataloop.local_runner import LocalRunner
    files = [str(p) for p in sorted((EXAMPLES / "distilbert-sst2").glob("*.json"))] * 2
    args = ["distilbert-sst2", *files, "--model-path", str(tiny_models["distilbert"]), "--batch-size", "1"]
    whole = tmp_path / "whole.json"
    assert predict_in_process([*args, "--out", str(whole)], capsys)[0] == 0
    entries = json.loads(whole.read_text(encoding="utf-8"))
    two_entries = len(json.dumps(entries[:2], indent=2, ensure_ascii=False).encode()) - 2  # without "\n]"
    runs = []
    real_predict = LocalRunner._predict
    monkeypatch.setattr(LocalRunner, "_predict", lambda self, *a: runs.append(a) or real_predict(self, *a))
    monkeypatch.setattr(predict, "open_output", lambda path: FullDisk(path, two_entries + 40))
    out = tmp_path / "answers.json"
    code, stdout, stderr = predict_in_process([*args, "--out", str(out)], capsys)
    assert code == 1 and stdout == "" and "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "No space left on device" in line and "after 2 of 4 input(s)" in line
    assert f"{str(out)!r} holds the answers for the first 2 of 4 input(s)" in line
    assert json.loads(out.read_text(encoding="utf-8")) == entries[:2]  # valid JSON: the finished answers
    assert len(runs) == 3  # the run stopped at the write that failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.json", "whole.json"]


def test_text_that_cannot_be_encoded_is_escaped_not_a_traceback(tiny_models, tmp_path, capsys):
    """A lone surrogate in a prompt key or a file name that is not UTF-8 died with UnicodeEncodeError at the final
    write, and nothing was written for any file."""
    odd_key = tmp_path / "odd-key.json"
    odd_key.write_text(json.dumps(legacy_item({"\ud800": ["I love it"]})), encoding="utf-8")
    not_utf8 = tmp_path / os.fsdecode(b"caf\xe9.json")
    not_utf8.write_text(json.dumps(legacy_item({"1": ["I hate it"]})), encoding="utf-8")
    files = [str(odd_key), str(not_utf8)]
    for out in (["--out", str(tmp_path / "answers.json")], ["--json"]):
        code, stdout, stderr = predict_in_process(["distilbert-sst2", *files, "--model-path",
                                                   str(tiny_models["distilbert"]), *out], capsys)
        assert code == 0, stderr
        text = (tmp_path / "answers.json").read_text(encoding="utf-8") if out else stdout
        entries = json.loads(text)
        assert [e["file"] for e in entries] == files  # the escapes read back as the very same strings
        assert entries[0]["annotations"][0]["metadata"]["system"]["promptId"] == "\ud800"
        assert "\\udce9" in text and "\\ud800" in text


def test_stdout_on_a_full_disk_is_one_line_and_no_traceback(cli, tiny_models):
    examples = sorted((EXAMPLES / "distilbert-sst2").glob("*.json"))
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "-m", "adapters", "predict", "distilbert-sst2", *map(str, examples),
                              "--model-path", str(tiny_models["distilbert"])], cwd=ROOT, env=cli.env, stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: writing the answers to stdout failed "
                                                                  "(No space left on device)"), run.stderr


# ----- reading the answer: compact rows by default, questions without prompt-item JSON -----
def test_text_and_stdin_lines_are_answered_as_compact_rows(tiny_models, tmp_path, capsys, monkeypatch):
    """A question on the command line (--text, repeatable) or one per line of stdin (-): no prompt item to write;
    piped, each answer is one JSON line with its item, question, answer and confidence."""
    import io
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"I love it\n\n  \nwhat a bad day\n")))
    code, stdout, stderr = predict_in_process(["distilbert-sst2", "-", "--text", "great", "--text", "awful",
                                               "--model-path", str(tiny_models["distilbert"])], capsys)
    assert code == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [(r["item"], r["question"]) for r in rows] == [("stdin:1", "I love it"), ("stdin:4", "what a bad day"),
                                                          ("text:1", "great"), ("text:2", "awful")]
    for row in rows:
        assert set(row) == {"item", "prompt", "question", "answer", "confidence"}
        assert row["answer"] in ("POSITIVE", "NEGATIVE") and 0 < row["confidence"] <= 1
    assert "2 empty line(s) of stdin skipped" in stderr


def test_compact_rows_of_a_file_name_each_question_skip_and_error(tiny_models, tmp_path, capsys):
    examples = sorted((EXAMPLES / "distilbert-sst2").glob("*.json"))
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"prompts": {"1": {"q1": {"mimetype": "application/text", "value": "I love it"},
                                                   "q2": {"mimetype": "image/png", "value": "http://x/y.png"}}}}))
    files = [str(examples[1]), str(mixed), str(tmp_path / "missing.json")]
    code, stdout, stderr = predict_in_process(["distilbert-sst2", *files, "--model-path",
                                               str(tiny_models["distilbert"])], capsys)
    assert code == 1
    rows = [json.loads(line) for line in stdout.splitlines()]
    legacy = json.loads(examples[1].read_text(encoding="utf-8"))["prompts"]
    expected = [(key, element["value"]) for key, elements in legacy.items() for element in elements.values()]
    assert [(r["prompt"], r["question"]) for r in rows[:len(expected)]] == expected  # each answer with its question
    assert rows[len(expected):] == [
        {"item": files[1], "prompt": "1", "question": "I love it", "answer": rows[len(expected)]["answer"],
         "confidence": rows[len(expected)]["confidence"]},
        {"item": files[1], "prompt": "1", "skipped": rows[-2]["skipped"]},
        {"item": files[2], "error": f"cannot read {files[2]!r}: No such file or directory"}]
    assert "non-text" in rows[-2]["skipped"]


def test_a_terminal_gets_a_table_with_the_answer_and_confidence(tiny_models, capsys, monkeypatch):
    from adapters.cli import predict
    from adapters.cli._output import TableWriter
    chosen = []
    real = predict.choose_writer
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr(predict, "choose_writer", lambda *a: chosen.append(real(*a)) or chosen[-1])
    code, stdout, _ = predict_in_process(["distilbert-sst2", "--text", "I love it", "--text", "meh", "--model-path",
                                          str(tiny_models["distilbert"])], capsys)
    assert code == 0 and isinstance(chosen[0], TableWriter)
    lines = stdout.splitlines()
    assert lines[0].split() == ["item", "prompt", "answer", "confidence"] and set(lines[1]) == {"─"}
    assert lines[2].split()[:4] == ["text:1", "I", "love", "it"] and lines[3].split()[:2] == ["text:2", "meh"]
    for line in lines[2:]:
        assert line.split()[-2] in ("POSITIVE", "NEGATIVE") and 0 < float(line.split()[-1]) <= 1


def test_the_table_keeps_its_columns_file_after_file_and_folds_long_answers():
    import io

    from adapters.cli._output import TableWriter

    def result(name, answer):
        return {"file": name, "annotations": [{"coordinates": answer, "metadata": {
            "system": {"promptId": "1"}, "user": {"model": {"confidence": 0.25},
                                                  "model_output": {"answered": {"element": "0"}}}}}],
            "skipped": [], "kept": [], "error": None}
    stream = io.BytesIO()
    writer = TableWriter(stream, lambda name: {("1", "0"): "question of " + name}, width=60, color=False)
    writer.write(result("a.json", "short"))
    writer.write(result("/a/very/long/folder/name/of/b.json", "word " * 30))
    lines = stream.getvalue().decode().splitlines()
    assert len(lines[0]) <= 60 and lines[0].split() == ["item", "prompt", "answer", "confidence"]
    confidence_column = lines[2].rindex("0.250")
    assert lines[3].rindex("0.250") == confidence_column  # the second file's table has the first's columns
    assert lines[3].startswith("…") and "b.json" in lines[3]  # a long path keeps its end
    assert sum("word" in line for line in lines[3:]) > 1 and stream.getvalue().decode().count("word") == 30


# ----- fast feedback: every input checked before torch, transformers or dtlpy is imported -----
def test_input_mistakes_are_reported_before_any_heavy_import(tmp_path):
    """Each mistake exits 2 (or 1: no file could be read) with one line, and torch, transformers and dtlpy are
    still not imported afterwards: the answer comes in a fraction of a second, not after seconds of imports."""
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    no_prompts = tmp_path / "no-prompts.json"
    no_prompts.write_text("{}")
    example = str(EXAMPLES / "distilbert-sst2" / "reviews-current.json")
    cases = [
        (["predict", "distilbert", example], 2, "unknown model 'distilbert' (did you mean 'distilbert-sst2'?)"),
        (["predict", "distilbert-sst2", example, "--set", "batch_sise=2"], 2,
         "'batch_sise' (did you mean 'batch_size'?)"),
        (["predict", "distilbert-sst2", example, "--set", "learning_rate=7"], 2, "'learning_rate' must be <= 1.0"),
        (["predict", "distilbert-sst2", example, "--model-path", str(tmp_path / "nope")], 2, "does not exist"),
        (["predict", "distilbert-sst2", example, "--out", str(tmp_path / "no" / "a.json")], 2, "does not exist"),
        (["predict", "distilbert-sst2", str(tmp_path / "missing.json"), str(bad_json), str(no_prompts)], 1,
         "missing.json: cannot read"),
        (["train", "distilbert-sst2", str(tmp_path / "no-data"), str(tmp_path / "out")], 1,
         "does not exist"),
        (["evaluate", "t5-emial", str(tmp_path)], 2, "(did you mean 't5-email'?)"),
    ]
    script = ("import json, sys\nfrom adapters.cli import main\ncodes = [main(a) for a in json.loads(sys.argv[1])]\n"
              "print(json.dumps([codes, sorted(m for m in ('torch', 'transformers', 'dtlpy') if m in sys.modules)]))")
    run = subprocess.run([sys.executable, "-c", script, json.dumps([args for args, _, _ in cases])], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    codes, imported = json.loads(run.stdout.splitlines()[-1])
    assert codes == [code for _, code, _ in cases], run.stderr
    assert imported == []
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    for _, _, message in cases:
        assert any(message in line for line in errors), (message, run.stderr)
    assert any("bad.json: could not read the item" in line for line in errors)
    assert any("no-prompts.json: a prompt item needs a 'prompts' object" in line for line in errors)


@pytest.mark.parametrize("args, message", [
    (["predict", "dialogpt", "x.json"], "unknown model 'dialogpt' (did you mean 'dialogpt-large'?); the models"),
    (["predict", "t5-email", "x.json", "--set", "tokn_count=8", "--set", "n-gen=2"],
     "'n-gen' (did you mean 'n_gen'?), 'tokn_count' (did you mean 'token_count'?); valid keys: "),
    (["predict", "t5-email", "x.json", "--set", "zzz=1"], "does not read the configuration key 'zzz'; valid keys:"),
])
def test_unknown_models_and_keys_suggest_the_closest_name(capsys, args, message):
    from adapters.cli import main
    assert main(args) == 2
    assert message in capsys.readouterr().err
