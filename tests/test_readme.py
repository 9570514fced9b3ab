"""README.md and docs/ stay true: configuration tables match the manifest, CI runs the README's test command,
every documented command parses and names files a fresh clone has, and every link lands on a file and heading."""
import json
import re
from pathlib import Path

import pytest

from adapters.core.manifest import model_entries
from adapters.core.settings import BASE_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
BASE_KEYS = {s.name for s in BASE_SETTINGS}


def table_after(heading: str, text: str = CONFIGURATION) -> dict[str, str]:
    """`key -> default` from the first markdown table after `heading` (backticks around a default dropped)."""
    start = text.index(heading)
    rows = {}
    for line in text[start:].splitlines()[1:]:
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
    """The command lines of a document's ```bash blocks, continuations and quotes spanning lines joined."""
    import shlex
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # a quote still open: the command goes on
                continue
            if pending.strip():
                found.append(pending.strip())
            pending = ""
        assert not pending, f"an unclosed quote in a bash block: {pending[:80]}"
    return found


SHELL_SEPARATORS = {"|", "||", "&&", ";", "&"}
REDIRECTIONS = {">", ">>", "<", "2>", "&>"}


def command_words(line: str) -> list[list[str]]:
    """The words of each command of a shell line (split at pipes, `&&` and `;`), without redirections and their
    targets or leading `VAR=value` assignments: `printf ... | VAR=1 python -m adapters predict M - > out.json`
    gives `[["printf", ...], ["python", "-m", "adapters", "predict", "M", "-"]]`."""
    import shlex
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    commands, words, skip = [], [], False
    for token in lexer:
        if skip:
            skip = False
        elif token in SHELL_SEPARATORS:
            commands.append(words)
            words = []
        elif token in REDIRECTIONS:
            skip = True
        elif words or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", token):
            words.append(token)
    return [words for words in [*commands, words] if words]


def adapters_arguments(words: list[str]) -> list[str] | None:
    """The arguments given to the CLI by `hf-adapters ...`, `python -m adapters ...` or `torchrun ... -m adapters
    ...`, else None."""
    if words[0] == "hf-adapters":
        return words[1:]
    if words[0] in ("python", "torchrun"):
        for index in range(1, len(words) - 1):
            if words[index:index + 2] == ["-m", "adapters"]:
                return words[index + 2:]
    return None


def cli_commands() -> list[tuple[str, list[str]]]:
    """(document, arguments) of every CLI command of the documents' bash blocks, globs expanded from the root."""
    import glob
    found = []
    for name, text in DOCUMENTS.items():
        for line in shell_lines(text):
            for words in command_words(line):
                given = adapters_arguments(words)
                if given is not None:
                    args = []
                    for word in given:
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
    assert {"README.md", "docs/app.md", "docs/server.md", "docs/training.md", "docs/performance.md", "docs/cli.md",
            "docs/runtimes.md", "docs/outputs.md"} <= documents
    assert len(COMMANDS) >= 25


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


# ----- every link lands, every document is reachable from the README, every variable is documented -----
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as hyphens,
    repeated headings numbered."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


def test_anchors_follow_githubs_rules():
    text = "# Quick start: run a model\n```\n# not a heading\n```\n## `predict`\n## Speed\n## Speed\n"
    assert anchors(text) == {"quick-start-run-a-model", "predict", "speed", "speed-1"}


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_link_lands_on_a_file_and_heading(document):
    """Moved sections keep working links: a relative link names a file of the clone, and its #anchor a heading
    of that file (or of the same document)."""
    text = re.sub(r"```.*?```", "", DOCUMENTS[document], flags=re.S)
    links = [link for link in LINK.findall(text) if not re.match(r"^[a-z]+:", link)]
    for link in links:
        path, _, anchor = link.partition("#")
        target = ((ROOT / document).parent / path).resolve() if path else ROOT / document
        assert target.exists(), f"{document}: {link} names a file the clone lacks"
        if anchor:
            assert anchor in anchors(target.read_text(encoding="utf-8")), f"{document}: {link} names no heading"


def test_the_readme_leads_to_every_document():
    """Depth lives in docs/: each document there is linked from the README, so none is found only by chance."""
    linked = {link.partition("#")[0] for link in LINK.findall(README)}
    for document in DOCUMENTS:
        if document != "README.md":
            assert document in linked, f"README.md does not link {document}"


def test_every_environment_variable_the_package_reads_is_documented_with_its_default():
    read = set()
    for source in [*ROOT.glob("adapters/**/*.py"), *ROOT.glob("models/*.py"), ROOT / "cog_predictors.py"]:
        read |= set(re.findall(r"\bHF_ADAPTERS_[A-Z0-9_]+", source.read_text(encoding="utf-8")))
    documented = table_after("### Environment variables")
    assert read and set(documented) == read
    assert all(default for default in documented.values())
