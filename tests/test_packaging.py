"""The repository is an installable distribution: `pip install .` gives `hf-adapters`, which works from any folder
(the manifest travels inside the package), while the Dataloop layout (top-level adapters/, models/,
requirements.txt, dataloop.json) stays what the app runs."""
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_distribution_version_is_the_apps():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == json.loads((ROOT / "dataloop.json").read_text(encoding="utf-8"))["version"]
    assert project["scripts"] == {"hf-adapters": "adapters.cli:main"}


def tracked_copy(target: Path) -> Path:
    """The files a fresh clone has (git's index), copied: building must not write into the working tree."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def test_an_installed_copy_runs_hf_adapters_from_any_folder(tmp_path):
    source = tracked_copy(tmp_path / "clone")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # Dependencies are this environment's own (pinned by requirements.txt); only the package itself is built.
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    listed = subprocess.run([str(tmp_path / "site" / "bin" / "hf-adapters"), "list"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    for name in ("dialogpt-large", "bart-large-mnli", "distilbert-sst2", "t5-email"):
        assert name in listed.stdout
    helped = subprocess.run([sys.executable, "-m", "adapters", "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "predict" in helped.stdout
    installed = subprocess.run([sys.executable, "-c", "import adapters, models; print(adapters.__file__)"],
                               cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert installed.stdout.startswith(str(tmp_path / "site"))


def test_readme_requirements_and_dockerfile_agree_on_where_cpu_torch_comes_from():
    import re
    torch_pin = re.search(r"^torch==([\d.]+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    cpu_line = f"pip install torch=={torch_pin} --index-url https://download.pytorch.org/whl/cpu"
    for document in ("README.md", "requirements.txt"):
        assert cpu_line in (ROOT / document).read_text(encoding="utf-8"), document
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile and f"torch=={torch_pin}" in dockerfile
