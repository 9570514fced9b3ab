"""The README stays true: configuration tables match the manifest, and CI runs the README's test command."""
import json
import re
from pathlib import Path

import pytest

from adapters.core.manifest import model_entries
from adapters.core.settings import BASE_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BASE_KEYS = {s.name for s in BASE_SETTINGS}


def table_after(heading: str) -> dict[str, str]:
    """`key -> default` from the first markdown table after `heading` (backticks around a default dropped)."""
    start = README.index(heading)
    rows = {}
    for line in README[start:].splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        match = re.match(r"\| `([^`]+)` \| ([^|]+) \|", line)
        if match:
            rows[match.group(1)] = re.sub(r"^`(.*)`$", r"\1", match.group(2).strip())
    return rows


@pytest.mark.parametrize("entry", model_entries(), ids=lambda e: e["name"])
def test_each_models_table_lists_its_keys_with_the_manifest_defaults(entry):
    documented = table_after(f"#### `{entry['name']}` configuration")
    expected = {k: json.dumps(v) for k, v in entry["configuration"].items() if k not in BASE_KEYS}
    assert documented == expected


def test_shared_keys_table_matches_every_model():
    documented = table_after("Keys every model reads:")
    for entry in model_entries():
        for key in ("device", "batch_size", "max_batch_tokens"):
            assert documented[key] == json.dumps(entry["configuration"][key]), (entry["name"], key)
    assert set(documented) == BASE_KEYS
    for entry in model_entries():
        assert f"`{entry['configuration']['model_path']}`" in README


def test_ci_runs_the_readme_test_command():
    command = re.search(r"## Test\n\n```bash\n(.+)\n```", README).group(1)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == command
    assert any("pip install" in line and "requirements-dev.txt" in line for line in ci)


# ----- every command of README.md and docs/ runs from a fresh clone -----
DOCUMENTS = {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
             for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$|<")  # DATA_DIR, OUTPUT_DIR, <PROJECT_ID>: the reader's own


def shell_lines(text: str) -> list[str]:
    """The command lines of a document's ```bash blocks, continuations joined."""
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
            for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def cli_commands() -> list[tuple[str, list[str]]]:
    """(document, arguments) of every `python -m adapters` / `hf-adapters` line, globs expanded from the root."""
    import glob
    import shlex
    found = []
    for name, text in DOCUMENTS.items():
        for line in shell_lines(text):
            for start in ("python -m adapters ", "hf-adapters "):
                if line.startswith(start):
                    words = shlex.split(line, comments=True)
                    prefix = start.split()
                    args = []
                    for word in words[len(prefix):]:
                        matches = sorted(glob.glob(word, root_dir=ROOT)) if "*" in word else []
                        args.extend(matches or [word])
                    found.append((name, args))
    return found


def created_by(text: str) -> set[str]:
    """Folders a document's own code writes before its commands read them ('data/train', 'tiny-distilbert')."""
    return {quoted.split("/")[0] for block in re.findall(r"```(?:python|bash)\n(.*?)```", text, re.S)
            for quoted in re.findall(r"""['"]([\w.-]+(?:/[\w.-]+)*)['"]""", block)}


COMMANDS = cli_commands()


def test_the_documents_have_commands_to_check():
    documents = {name for name, _ in COMMANDS}
    assert {"README.md", "docs/app.md", "docs/server.md", "docs/training.md", "docs/performance.md"} <= documents
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("document, args", COMMANDS, ids=[" ".join(a)[:60] for _, a in COMMANDS])
def test_every_documented_command_parses_and_names_files_that_exist(document, args):
    """Each line is read by the real argument parser (a renamed option or command fails here), and each input it
    names (predict's files, train's and evaluate's DATA_DIR) is in a fresh clone or written by the same document."""
    from adapters.cli import build_parser
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{document}: `python -m adapters {' '.join(args)}` does not parse")
    inputs = [*getattr(parsed, "files", []), *([parsed.data_dir] if hasattr(parsed, "data_dir") else [])]
    own = created_by(DOCUMENTS[document])
    for path in inputs:
        if path == "-" or PLACEHOLDER.search(path) or Path(path).parts[0] in own:
            continue
        assert (ROOT / path).exists(), f"{document}: {' '.join(args)} names {path}, which a fresh clone lacks"
    out = getattr(parsed, "out", None)
    assert out is None or (ROOT / out).parent.is_dir()


def test_the_cheap_documented_commands_run(capsys):
    """`list` and every command's --help run as documented (the others need weights the hub would give)."""
    from adapters.cli import build_parser, main
    cheap = [args for _, args in COMMANDS if args[:1] == ["list"]]
    assert cheap
    for args in cheap:
        assert main(args) == 0, args
    assert "distilbert-sst2" in capsys.readouterr().out
    for command in build_parser()._subparsers._group_actions[0].choices:
        with pytest.raises(SystemExit) as helped:
            main([command, "--help"])
        assert helped.value.code == 0 and "usage:" in capsys.readouterr().out
