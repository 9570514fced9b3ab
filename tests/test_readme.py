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
