"""creation.py and register_model.py, offline up to the first network call: what they would send is checked, and
the dtlpy calls that would reach the platform are replaced by fakes that record what they received."""
from __future__ import annotations

import inspect
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import dtlpy as dl
import pytest

import creation
import register_model
from adapters.core.manifest import load_manifest, model_entry
from adapters.dataloop.model_adapter import ModelAdapter
from tests.fake_platform import FakePlatform, answer_json, prompt_file_item
from tests.prompt_factory import current_item


class Recorder:
    """Stands in for a dtlpy repository: records each call and answers with a canned value (or raises it)."""

    def __init__(self, **answers):
        self.calls: list[tuple[str, dict]] = []
        self.answers = answers

    def __getattr__(self, name):
        def call(*args, **kwargs):
            assert not args, f"{name} called positionally: {args}"
            self.calls.append((name, kwargs))
            answer = self.answers.get(name)
            if isinstance(answer, Exception):
                raise answer
            return answer(**kwargs) if callable(answer) else answer
        return call


def pruned(value):
    """JSON without None and empty containers: dtlpy fills in such defaults when it reads a manifest."""
    if isinstance(value, dict):
        value = {k: pruned(v) for k, v in value.items()}
        return {k: v for k, v in value.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [pruned(v) for v in value]
    return value


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to reach the platform fails the test unless `platform()` installs a fake project."""
    def refuse(*args, **kwargs):
        raise AssertionError("the network was called")
    for name in ("setenv", "login", "token_expired"):
        monkeypatch.setattr(dl, name, refuse)
    monkeypatch.setattr(dl.projects, "get", refuse)

    def platform(project, token_expired=True):
        seen = SimpleNamespace(env=None, login=0, project_id=None)
        monkeypatch.setattr(dl, "setenv", lambda env: setattr(seen, "env", env))
        monkeypatch.setattr(dl, "token_expired", lambda: token_expired)
        monkeypatch.setattr(dl, "login", lambda: setattr(seen, "login", seen.login + 1))
        monkeypatch.setattr(dl.projects, "get", lambda project_id: setattr(seen, "project_id", project_id) or project)
        return seen
    return platform


EXISTING_IMAGES = ["--runner-image-repository", creation.RUNNER_IMAGE_PREFIX]  # as if someone had pushed them


def test_creation_dry_run_prints_the_app_and_its_codebase_without_logging_in(offline, capsys):
    assert creation.main(["--dry-run", *EXISTING_IMAGES]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert pruned(plan["dpk"]) == pruned(load_manifest())
    files = plan["codebase"]["files"]
    for needed in ("dataloop.json", "requirements.txt", "adapters/dataloop/model_adapter.py", "models/t5_email.py"):
        assert needed in files
    assert not [f for f in files if f.startswith(("tests/", ".git/", "examples/")) or "__pycache__" in f]


def git_checkout(folder: Path, tracked: dict[str, str]) -> Path:
    """A git repository in `folder` whose commit holds `tracked` (path -> text)."""
    for name, text in tracked.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    for command in (["init", "-q"], ["add", "-A"],
                    ["-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "source"]):
        subprocess.run(["git", *command], cwd=folder, check=True, capture_output=True)
    return folder


def test_the_codebase_is_the_tracked_source_and_nothing_a_user_left_in_the_checkout(tmp_path):
    root = git_checkout(tmp_path, {"dataloop.json": "{}", "requirements.txt": "torch==2.13.0\n",
                                   "adapters/dataloop/model_adapter.py": "", "models/t5_email.py": "", "tests/test_x.py": "",
                                   "benchmarks/run.py": "", "docs/app.md": "", "Dockerfile": "", "cog.yaml": "",
                                   ".gitignore": "benchmarks/results/\n"})
    left_behind = ["benchmarks/results/run.json", "trained/model.safetensors", "trained/config.json",
                   "data/train/items/a.json", "emails.json", "weights.safetensors", "models/scratch.py"]
    for name in left_behind:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}")
    assert creation.codebase_files(root) == ["adapters/dataloop/model_adapter.py", "dataloop.json", "models/t5_email.py",
                                             "requirements.txt"]


def test_publishing_from_outside_a_git_checkout_is_refused_with_the_reason(tmp_path):
    with pytest.raises(creation.PublishError, match="not a git checkout"):
        creation.codebase_files(tmp_path)


def test_runner_images_can_come_from_another_repository():
    dpk = creation.build_dpk(runner_image_repository="registry.example.com/me/hf-runner")
    images = {config.runtime["runnerImage"] for config in dpk.components.compute_configs}
    version = load_manifest()["version"]
    assert images == {f"registry.example.com/me/hf-runner:{kind}-{version}" for kind in ("cpu", "gpu")}


def test_creation_publishes_the_manifest_and_installs_it(offline, capsys):
    codebase = dl.ItemCodebase(item_id="codebase-1", client_api=dl.client_api)
    published = dl.Dpk.from_json(_json={**load_manifest(), "id": "dpk-1"}, client_api=dl.client_api)
    packed: list[str] = []

    def pack(directory, name, extension):
        packed.extend(str(p.relative_to(directory)) for p in Path(directory).rglob("*") if p.is_file())
        return codebase
    project = SimpleNamespace(
        codebases=Recorder(pack=pack), dpks=Recorder(publish=published),
        apps=Recorder(get=dl.exceptions.NotFound("404", "app not found"), install=SimpleNamespace(name="installed")))
    seen = offline(project)
    assert creation.main(["--project-id", "project-1", "--env", "rc", *EXISTING_IMAGES]) == 0
    assert (seen.env, seen.login, seen.project_id) == ("rc", 1, "project-1")
    assert sorted(packed) == creation.tracked_files(creation.ROOT)
    assert "adapters/dataloop/model_adapter.py" in packed and not [f for f in packed if f.startswith("tests/")]
    # Test-only files stay out (docs/app.md): the mutation script and its configuration, setup.cfg.
    assert not [f for f in packed if f.startswith("scripts/") or f in ("setup.cfg", "pytest.ini")]
    (_, publish), = project.dpks.calls
    sent = publish["dpk"].to_json()
    assert sent["codebase"] == codebase.to_json()
    assert pruned({k: v for k, v in sent.items() if k != "codebase"}) == pruned(load_manifest())
    assert [name for name, _ in project.apps.calls] == ["get", "install"]
    assert project.apps.calls[1][1] == {"dpk": published, "app_name": published.name}
    assert "installed" in capsys.readouterr().out


def test_creation_moves_an_existing_install_to_the_new_version(offline):
    published = dl.Dpk.from_json(_json={**load_manifest(), "version": "9.9.9"}, client_api=dl.client_api)
    app = Recorder()
    app.name, app.dpk_version = "installed", "0.0.1"
    project = SimpleNamespace(codebases=Recorder(pack=None), dpks=Recorder(publish=published),
                              apps=Recorder(get=app))
    offline(project, token_expired=False)
    assert creation.main(["--project-id", "project-1", *EXISTING_IMAGES]) == 0
    assert app.dpk_version == "9.9.9" and [name for name, _ in app.calls] == ["update"]


# ----- runner images: built and pushed by creation.py, or named; never an image nothing built -----
FAKE_DOCKER = """#!{python}
import json, os, sys
from pathlib import Path
call = {{"argv": sys.argv[1:]}}
if sys.argv[1] == "build":  # the build context is the last argument: record what the daemon would receive
    call["context"] = sorted(p.name for p in Path(sys.argv[-1]).iterdir())
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(call) + "\\n")
print("fake docker output:", sys.argv[1])
sys.exit(1 if sys.argv[1] == os.environ.get("FAKE_DOCKER_FAILS") else 0)
"""


@pytest.fixture
def docker(tmp_path, monkeypatch):
    """A fake `docker` first on PATH that records its calls (and fails the subcommand FAKE_DOCKER_FAILS names)."""
    import sys
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "docker").write_text(FAKE_DOCKER.format(python=sys.executable))
    (bin_folder / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_folder}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return calls


def publishing_project() -> SimpleNamespace:
    published = dl.Dpk.from_json(_json={**load_manifest(), "id": "dpk-1"}, client_api=dl.client_api)
    return SimpleNamespace(codebases=Recorder(pack=None), dpks=Recorder(publish=published),
                           apps=Recorder(get=dl.exceptions.NotFound("404", "app not found"),
                                         install=SimpleNamespace(name="installed")))


def test_creation_builds_and_pushes_the_runner_images_and_publishes_the_app_with_their_tags(offline, docker, capsys):
    project = publishing_project()
    offline(project)
    repository = "registry.example.com/me/hf-runner"
    assert creation.main(["--project-id", "project-1", "--registry", repository]) == 0
    version = load_manifest()["version"]
    cpu, gpu = f"{repository}:cpu-{version}", f"{repository}:gpu-{version}"
    calls = docker()
    assert [call["argv"][:3] for call in calls] == [["build", "-t", cpu], ["build", "-t", gpu], ["push", cpu],
                                                   ["push", gpu]]
    assert calls[0]["argv"][3:7] == ["--build-arg", "RUNNER=cpu:python3.11_pytorch2", "--build-arg",
                                     "TORCH_INDEX=https://download.pytorch.org/whl/cpu"]
    assert calls[1]["argv"][3] == "-f"  # the GPU image is the Dockerfile's default
    assert calls[0]["context"] == calls[1]["context"] == ["Dockerfile", "requirements.txt"]
    (_, publish), = project.dpks.calls
    images = {config.runtime["runnerImage"] for config in publish["dpk"].components.compute_configs}
    assert images == {cpu, gpu}
    captured = capsys.readouterr()
    assert f"runner image pushed: {cpu}" in captured.out and "fake docker output: build" in captured.err


@pytest.mark.parametrize("failing", ["build", "push"])
def test_a_failed_build_or_push_publishes_nothing(offline, docker, capsys, failing, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_FAILS", failing)
    project = publishing_project()
    offline(project)
    assert creation.main(["--project-id", "project-1", "--registry", "registry.example.com/me/hf-runner"]) == 1
    assert project.dpks.calls == [] and project.codebases.calls == []
    assert [call["argv"][0] for call in docker()] == (["build"] if failing == "build" else ["build", "build", "push"])
    assert f"`docker {failing}" in capsys.readouterr().err


def test_without_a_registry_nothing_is_published_that_names_an_image_nothing_built(offline, docker, capsys):
    """No --registry: refused before logging in (the offline fixture fails any network call), unless told which
    existing images to use."""
    assert creation.main(["--project-id", "project-1"]) == 2
    assert "pass --registry REPOSITORY" in capsys.readouterr().err
    project = publishing_project()
    offline(project)
    assert creation.main(["--project-id", "project-1", "--runner-image-repository", "registry.example.com/me/r"]) == 0
    (_, publish), = project.dpks.calls
    version = load_manifest()["version"]
    assert {config.runtime["runnerImage"] for config in publish["dpk"].components.compute_configs} == {
        f"registry.example.com/me/r:{kind}-{version}" for kind in ("cpu", "gpu")}
    assert docker() == []


def test_a_dry_run_with_a_registry_prints_the_docker_commands_and_runs_none(offline, docker, capsys):
    assert creation.main(["--dry-run", "--registry", "registry.example.com/me/r"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [command[1:4] for command in plan["images"]["build"]] == [
        ["build", "-t", f"registry.example.com/me/r:{kind}-{load_manifest()['version']}"] for kind in ("cpu", "gpu")]
    assert plan["images"]["context"] == ["Dockerfile", "requirements.txt"] and docker() == []


def test_the_image_context_holds_every_file_the_dockerfile_copies():
    dockerfile = (creation.ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith(("COPY ", "ADD "))}
    assert copied and copied <= set(creation.IMAGE_CONTEXT)


def test_register_builds_the_request_and_sends_it_to_the_installed_app(offline, tiny_models, capsys):
    created = SimpleNamespace(name="my-t5", id="model-1", artifacts=Recorder())
    project = SimpleNamespace(id="project-1", apps=Recorder(get="the-app"),
                              models=Recorder(get=dl.exceptions.NotFound("404", "no such model"), create=created))
    offline(project)
    code = register_model.main(["t5-email", "--project-id", "project-1", "--name", "my-t5", "--set", "n_gen=3",
                                "--set", "prefix=write a reply: ", "--artifacts", str(tiny_models["t5"])])
    assert code == 0, capsys.readouterr().err
    assert project.apps.calls == [("get", {"app_name": load_manifest()["name"]})]
    (_, lookup), (_, request) = project.models.calls
    assert lookup == {"model_name": "my-t5"}  # the name is checked before anything is created
    template = model_entry("t5-email")
    assert request.pop("configuration") == {**template["configuration"], "n_gen": 3, "prefix": "write a reply: "}
    assert request == {"app": "the-app", "project_id": "project-1", "model_name": "my-t5",
                       "dpk_model_name": "t5-email", "description": template["description"],
                       "tags": template["tags"], "status": "trained", "input_type": "text",
                       "output_type": "text", "dataset_id": None,
                       "train_filter": dl.Filters(field="filename", values="/train").prepare(),
                       "validation_filter": None}  # no dataset: no validation subset that could be empty
    assert created.artifacts.calls == [("upload", {"filepath": str(tiny_models["t5"] / "*")})]
    out = capsys.readouterr().out
    assert "model-1" in out and "validation subset: none (no --dataset-id)" in out


def test_register_dry_run_of_a_custom_model_takes_its_module_defaults(offline, capsys):
    assert register_model.main(["t5-email", "--dry-run", "--name", "sentiment", "--module-name",
                                "models.distilbert_sst2", "--set", "batch_size=4"]) == 0
    request = json.loads(capsys.readouterr().out)["create"]
    assert request["configuration"] == {**model_entry("distilbert-sst2")["configuration"], "batch_size": 4}
    assert request["model_name"] == "sentiment" and request["dpk_model_name"] == "t5-email"
    assert "models.distilbert_sst2" in request["description"]


@pytest.mark.parametrize("args, labels", [
    (["distilbert-sst2", "--set", "output_type=class"], ["NEGATIVE", "POSITIVE"]),
    (["bart-large-mnli", "--set", "output_type=class", "--set", 'candidate_labels=["bug", "billing"]'], ["bug", "billing"]),
    (["bart-large-mnli"], None),
])
def test_a_model_registered_with_class_output_carries_its_labels(offline, capsys, tiny_models, args, labels):
    weights = ["--artifacts", str(tiny_models["distilbert"])] if args[0] == "distilbert-sst2" else []
    assert register_model.main([*args, *weights, "--dry-run", "--name", "classes"]) == 0
    request = json.loads(capsys.readouterr().out)["create"]
    assert (request["output_type"], request.get("labels")) == (("class", labels) if labels else ("text", None))


@pytest.mark.parametrize("args, message", [
    (["no-such-model"], "unknown model 'no-such-model'"),
    (["t5-email", "--set", "ngen=3"], "does not read the configuration key 'ngen' (did you mean 'n_gen'?)"),
    (["t5-email", "--set", "n_gen=99"], "'n_gen' must be <= 16"),
    (["t5-email", "--set", "do_sample=false", "--set", "n_gen=2"], "num_beams >= n_gen"),
    (["t5-email", "--set", "trust_remote_code=true"], "refused"),
    (["t5-email", "--module-name", "os"], "not a module of this package's models/ folder"),
    (["t5-email", "--artifacts", "/no/such/folder"], "is not a folder"),
    (["t5-email", "--set", "novalue"], "expected KEY=VALUE"),
])
def test_register_refuses_unknown_models_and_bad_configuration_before_connecting(offline, capsys, args, message):
    assert register_model.main([*args, "--project-id", "p"]) == 2
    assert message in capsys.readouterr().err


def test_register_refuses_pickle_artifacts(offline, capsys, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    assert register_model.main(["t5-email", "--project-id", "p", "--artifacts", str(tmp_path)]) == 2
    assert "pickle" in capsys.readouterr().err


def test_register_names_a_new_model_apart_from_the_apps_own(offline, capsys):
    assert register_model.main(["t5-email", "--dry-run"]) == 0
    name = json.loads(capsys.readouterr().out)["create"]["model_name"]
    assert name.startswith("t5-email-") and name not in {e["name"] for e in load_manifest()["components"]["models"]}
    assert register_model.main(["t5-email", "--dry-run", "--name", "distilbert-sst2"]) == 2
    assert "already created" in capsys.readouterr().err


def test_register_refuses_a_name_the_project_already_has_before_creating(offline, capsys):
    project = SimpleNamespace(id="project-1", apps=Recorder(get="the-app"),
                              models=Recorder(get=SimpleNamespace(name="taken"), create=None))
    offline(project)
    assert register_model.main(["t5-email", "--project-id", "project-1", "--name", "taken"]) == 2
    assert "already has a model named 'taken'" in capsys.readouterr().err
    assert [name for name, _ in project.models.calls] == ["get"]


@pytest.mark.parametrize("options, train, validation", [
    ([], "/train/**", "/validation/**"),
    (["--train-folder", "/data/2026/train", "--validation-folder", "/data/2026/val"],
     "/data/2026/train/**", "/data/2026/val/**"),
])
def test_a_registered_model_is_trainable_by_dtlpy(offline, capsys, tiny_models, tmp_path, monkeypatch, options,
                                                  train, validation):
    """What `models.create` stores from the request is what dtlpy's `prepare_data` (called by `train_model`) needs."""
    from adapters.dataloop.model_adapter import ModelAdapter
    assert register_model.main(["distilbert-sst2", "--dry-run", "--dataset-id", "dataset-1", *options]) == 0
    request = json.loads(capsys.readouterr().out)["create"]
    metadata = dl.repositories.Models._build_model_metadata(train_filter=request["train_filter"],
                                                            validation_filter=request["validation_filter"])
    dataset = dl.Dataset.from_json(_json={"id": "dataset-1", "name": "prompts"}, client_api=dl.client_api,
                                   project=None)
    model = dl.Model.from_json(_json={
        "id": "model-1", "name": request["model_name"], "datasetId": "dataset-1", "metadata": metadata,
        "configuration": {**request["configuration"], "model_path": str(tiny_models["distilbert"])},
        "inputType": "text", "outputType": "text", "status": "pre-trained"},
        client_api=dl.client_api, project=None, package=dl.Package())
    model._dataset = dataset
    queried = []

    def query(repository, filters):  # the HTTP request behind dataset.items.list: an empty dataset answers
        queried.append(filters.prepare()["filter"])
        return {"items": [], "totalItemsCount": 0, "totalPagesCount": 0, "hasNextPage": False}
    monkeypatch.setattr(dl.repositories.Items, "_list", query)
    monkeypatch.setattr(dl.repositories.Models, "update", lambda repository, model, *args, **kwargs: model)
    adapter = ModelAdapter(model_entity=model)
    # dtlpy reads the subsets and queries the dataset for each one; this fake dataset is empty, which is where it stops
    with pytest.raises(ValueError, match="No items downloaded for subset train"):
        adapter.prepare_data(dataset, root_path=str(tmp_path))
    assert {part["filename"] for query in queried for part in query.get("$and", []) if "filename" in part} == {train}
    model.metadata = {"system": {}}  # as register_model.py created models before: no subsets
    with pytest.raises(ValueError, match="must have subsets in metadata.system.subsets"):
        adapter.prepare_data(dataset, root_path=str(tmp_path / "again"))
    assert metadata["system"]["subsets"]["validation"]["filter"]["$and"][-1] == {"filename": validation}


def test_register_takes_subset_filters_as_dql(offline, capsys):
    query = {"filter": {"$and": [{"metadata.system.tags.train": True}]}, "resource": "items"}
    assert register_model.main(["t5-email", "--dry-run", "--train-filter", json.dumps(query)]) == 0
    assert json.loads(capsys.readouterr().out)["create"]["train_filter"]["filter"] == query["filter"]
    assert register_model.main(["t5-email", "--dry-run", "--train-filter", "{not json"]) == 2
    assert "--train-filter must be a JSON DQL object" in capsys.readouterr().err


# ----- a dataset without a validation folder: registered without that subset, trained through dtlpy -----
class RecordingProgress(dl.Progress):
    """The execution's progress as the platform's runner hands it over; every update is recorded."""

    def __init__(self):
        self.updates: list[tuple[int, str]] = []

    def update(self, status=None, progress=0, message=None, output=None, duration=None, action=None):
        self.updates.append((progress, message))


def dataset_platform(monkeypatch, tmp_path, folders: dict[str, int]) -> tuple[FakePlatform, dl.Dataset]:
    """A dataset of sentiment prompt items with reference answers: `folders` maps a folder to its item count."""
    platform = FakePlatform()
    dataset = platform.install_dataset(monkeypatch, tmp_path / "artifacts")
    number = 0
    for folder, count in folders.items():
        for i in range(count):
            number += 1
            label = ("POSITIVE", "NEGATIVE")[i % 2]
            item_id = f"{number:024x}"
            platform.add_item(prompt_file_item(tmp_path / "data", f"{folder}/{item_id}.json",
                                               current_item({"1": [f"a {label.lower()} film, number {i}"]}), item_id),
                              [answer_json("1", label, None)])
    return platform, dataset


def project_creating_models(dataset: dl.Dataset, created: dict) -> SimpleNamespace:
    """A project whose `models.create` builds the model entity the platform would, from dtlpy's own metadata."""
    def create(**request):
        metadata = dl.repositories.Models._build_model_metadata(train_filter=request["train_filter"],
                                                                validation_filter=request["validation_filter"])
        model = dl.Model.from_json(_json={
            "id": "model-1", "name": request["model_name"], "datasetId": request["dataset_id"], "metadata": metadata,
            "configuration": request["configuration"], "inputType": request["input_type"],
            "outputType": request["output_type"], "status": request["status"]},
            client_api=dl.client_api, project=None, package=dl.Package())
        model._dataset = dataset
        created["model"] = model
        return model
    return SimpleNamespace(id="project-1", apps=Recorder(get="the-app"), datasets=Recorder(get=dataset),
                           models=Recorder(get=dl.exceptions.NotFound("404", "no such model"), create=create))


def test_a_dataset_without_validation_items_registers_without_that_subset_and_trains_with_progress(
        offline, capsys, tiny_models, tmp_path, monkeypatch):
    platform, dataset = dataset_platform(monkeypatch, tmp_path, {"/train": 12})
    created: dict = {}
    offline(project_creating_models(dataset, created))
    assert register_model.main(["distilbert-sst2", "--project-id", "project-1", "--dataset-id", "dataset-1",
                                "--name", "reviews", "--set", f"model_path={tiny_models['distilbert']}",
                                "--set", "epochs=2", "--set", "train_batch_size=2"]) == 0
    out = capsys.readouterr().out
    assert "validation subset: none (/validation holds no item of dataset dataset-1)" in out
    model = created["model"]
    assert set(model.metadata["system"]["subsets"]) == {"train"}

    monkeypatch.chdir(tmp_path)  # dtlpy's train_model prepares its data under ./tmp/<model id>
    adapter = ModelAdapter(model_entity=model)
    progress = RecordingProgress()
    # the platform's runner passes `progress` and `context` only to a function whose signature names them
    offered = {"progress": progress, "context": None}
    named = inspect.signature(adapter.train_model).parameters
    passed = {name: value for name, value in offered.items() if name in named}
    assert adapter.train_model(model, **passed) is model
    assert model.status == "trained" and (platform.artifacts / "model.safetensors").is_file()
    messages = [message for _, message in progress.updates]
    assert [m for m in messages if m.startswith("finished epoch")] == ["finished epoch: 0/2", "finished epoch: 1/2"]
    steps = [(percent, m) for percent, m in progress.updates if m.startswith("training: ")]
    assert [m.split(", loss ")[0] for _, m in steps] == [f"training: epoch {1 + (s - 1) // 6}/2, step {s}/12"
                                                         for s in range(1, 13)]
    assert all(float(m.split(", loss ")[1]) > 0 for _, m in steps)  # each with the epoch's loss so far
    assert [percent for percent, _ in steps] == [100 * s // 12 for s in range(1, 13)]


def test_a_validation_folder_that_holds_items_is_the_validation_subset(offline, capsys, tmp_path, monkeypatch):
    _, dataset = dataset_platform(monkeypatch, tmp_path, {"/train": 2, "/validation/2026": 3})
    created: dict = {}
    offline(project_creating_models(dataset, created))
    assert register_model.main(["distilbert-sst2", "--project-id", "project-1", "--dataset-id", "dataset-1",
                                "--name", "reviews"]) == 0
    assert "validation subset: 3 items" in capsys.readouterr().out
    assert set(created["model"].metadata["system"]["subsets"]) == {"train", "validation"}


@pytest.mark.parametrize("options, message", [
    (["--dataset-id", "dataset-1", "--validation-folder", "/val"], "the validation subset selects no item of dataset"),
    (["--validation-folder", "/val"], "a validation subset needs --dataset-id"),
])
def test_a_validation_subset_asked_for_that_selects_nothing_is_refused(offline, capsys, tmp_path, monkeypatch,
                                                                       options, message):
    _, dataset = dataset_platform(monkeypatch, tmp_path, {"/train": 2})
    created: dict = {}
    offline(project_creating_models(dataset, created))
    assert register_model.main(["distilbert-sst2", "--project-id", "project-1", "--name", "reviews", *options]) == 2
    assert message in capsys.readouterr().err and not created
def platform_error(code: str, message: str) -> Exception:
    """What dtlpy raises when the platform answers `code`: `PlatformException(...)` raises a subclass of
    `ExceptionMain` (BadRequest, InternalServerError, ...), which is not a PlatformException."""
    try:
        dl.exceptions.PlatformException(code, message)
    except Exception as error:  # noqa: BLE001 - the error dtlpy would raise
        return error
    raise AssertionError("dtlpy raised nothing")


def test_a_refusal_by_the_platform_is_one_line_and_exit_1(offline, capsys):
    project = SimpleNamespace(codebases=Recorder(pack=None),
                              dpks=Recorder(publish=platform_error("400", "version 1.0.0 already exists")))
    offline(project, token_expired=False)
    assert creation.main(["--project-id", "project-1", *EXISTING_IMAGES]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and "Traceback" not in err


@pytest.mark.parametrize("delete_fails", [False, True])
def test_a_model_whose_artifacts_fail_to_upload_is_not_left_to_pass_for_a_trained_one(offline, tiny_models, capsys,
                                                                                     delete_fails):
    """The model is created "trained" before its weights are uploaded: if the upload fails, a model left behind
    would load the template's hub weights instead of the user's. It is deleted, and the failure reported."""
    deleted = []

    def delete():
        deleted.append(True)
        if delete_fails:
            raise platform_error("500", "delete failed")
    created = SimpleNamespace(name="my-t5", id="model-1", delete=delete,
                              artifacts=Recorder(upload=platform_error("500", "upload failed")))
    project = SimpleNamespace(id="project-1", apps=Recorder(get="the-app"),
                              models=Recorder(get=dl.exceptions.NotFound("404", "no such model"), create=created))
    offline(project)
    code = register_model.main(["t5-email", "--project-id", "project-1", "--name", "my-t5", "--artifacts",
                                str(tiny_models["t5"])])
    err = capsys.readouterr().err
    assert code == 1 and "upload failed" in err
    assert deleted == [True]
    assert ("could not be deleted" in err and "model-1" in err) is delete_fails
