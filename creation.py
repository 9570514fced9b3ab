"""Publish this repository as a Dataloop app (DPK) to a project, and install it there (or update the install).

    python creation.py --project-id PROJECT_ID --registry REPOSITORY [--env prod]
    python creation.py --project-id PROJECT_ID --runner-image-repository REPOSITORY
    python creation.py --dry-run --registry REPOSITORY    # print what would run and be published; nothing runs

The services run on runner images the `Dockerfile` builds (see docs/app.md). With --registry, this command builds
them (`docker build`, one image per kind of pod: cpu, gpu) and pushes them (`docker push`) to REPOSITORY, tagged
`<kind>-<version>`, then publishes the app naming exactly those images. With --runner-image-repository it builds
nothing and publishes the app with images you already pushed to REPOSITORY under those tags. With neither it
refuses: the manifest names images that nothing has built, and an app that names them cannot start.

The app is `dataloop.json` as it stands; the codebase is the files git tracks in this checkout (as they are in the
working tree), less what the service does not run (tests, benchmarks, examples, docs, Cog files): untracked
files such as trained weights, benchmark results, data or an `--out` file are never published. Publishing the same
version twice is refused by the platform: raise `version` in dataloop.json first.
Exit codes: 0 published, 1 the platform or docker refused (nothing is published after a failed build or push),
2 usage error (no image choice, not a git checkout).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import dtlpy as dl

from adapters.core.errors import ConfigurationError
from adapters.core.manifest import MANIFEST_PATH, load_manifest

ROOT = Path(__file__).resolve().parent
# Tracked, but not what the service runs: folders, then single files (the image is built from the Dockerfile; Cog
# builds its own image from cog.yaml).
PACK_IGNORE = ("tests", "benchmarks", "examples", "docs", ".ci", "scripts")
PACK_IGNORE_FILES = ("Dockerfile", ".dockerignore", "cog.yaml", "cog_predictors.py", "requirements-dev.txt",
                     ".gitignore", "pytest.ini", "setup.cfg")
RUNNER_IMAGE_PREFIX = "ghcr.io/huggingface-nlp-adapters/runner"
# The files the Dockerfile reads: the whole build context (so untracked weights or data never reach the daemon).
IMAGE_CONTEXT = ("Dockerfile", "requirements.txt")
# Build arguments per kind of runner image; the Dockerfile's defaults build the GPU one.
IMAGE_BUILD_ARGS = {
    "gpu": {},
    "cpu": {"RUNNER": "cpu:python3.11_pytorch2", "TORCH_INDEX": "https://download.pytorch.org/whl/cpu"},
}


class PublishError(RuntimeError):
    """What to publish cannot be worked out (e.g. not a git checkout); the message says what to do."""


class ImageError(RuntimeError):
    """docker could not build or push a runner image; nothing was published."""


def build_dpk(manifest_path: Path | str = MANIFEST_PATH, runner_image_repository: str | None = None) -> dl.Dpk:
    """The app entity as the manifest describes it, its runner images moved to another repository if asked."""
    manifest = load_manifest(manifest_path)
    if runner_image_repository:
        for config in manifest["components"]["computeConfigs"]:
            image = config["runtime"]["runnerImage"]
            config["runtime"]["runnerImage"] = runner_image_repository + image[len(RUNNER_IMAGE_PREFIX):]
    return dl.Dpk.from_json(_json=manifest, client_api=dl.client_api)


def image_kinds(manifest_path: Path | str = MANIFEST_PATH) -> list[str]:
    """The kinds of runner image the manifest's compute configs name (`...runner:<kind>-<version>`), in order."""
    kinds: list[str] = []
    for config in load_manifest(manifest_path)["components"]["computeConfigs"]:
        tag = config["runtime"]["runnerImage"].rsplit(":", 1)[-1]
        kind = tag.split("-", 1)[0]
        if kind not in IMAGE_BUILD_ARGS:
            raise PublishError(f"compute config {config['name']!r} names image tag {tag!r}: expected <kind>-<version> "
                               f"with kind one of {sorted(IMAGE_BUILD_ARGS)}")
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def image_commands(repository: str, context: Path | str, manifest_path: Path | str = MANIFEST_PATH
                   ) -> tuple[list[list[str]], list[list[str]]]:
    """The `docker build` and `docker push` commands that make the images `build_dpk(.., repository)` names."""
    version = load_manifest(manifest_path)["version"]
    builds, pushes = [], []
    for kind in image_kinds(manifest_path):
        image = f"{repository}:{kind}-{version}"
        arguments = [part for name, value in IMAGE_BUILD_ARGS[kind].items()
                     for part in ("--build-arg", f"{name}={value}")]
        dockerfile = str(Path(context) / "Dockerfile")
        builds.append(["docker", "build", "-t", image, *arguments, "-f", dockerfile, str(context)])
        pushes.append(["docker", "push", image])
    return builds, pushes


def run_docker(command: list[str]) -> None:
    """Run one docker command, its output streamed to stderr (stdout carries this script's result)."""
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace") as process:
            for line in process.stdout:
                sys.stderr.write(line)
    except FileNotFoundError:
        raise ImageError("docker is not on PATH: install it, or publish with --runner-image-repository and images "
                         "built elsewhere") from None
    if process.returncode:
        hint = " (is `docker login` done for that registry?)" if command[1] == "push" else ""
        raise ImageError(f"`{' '.join(command[:4])}` failed with exit code {process.returncode}{hint}; nothing "
                         "was published")


def build_and_push_images(repository: str, root: Path = ROOT) -> list[str]:
    """Build every runner image from the Dockerfile (its context: IMAGE_CONTEXT only), then push them; the tags."""
    with tempfile.TemporaryDirectory(prefix="hf-adapters-image-") as context:
        for name in IMAGE_CONTEXT:
            shutil.copy2(root / name, Path(context) / name)
        builds, pushes = image_commands(repository, context)
        for command in builds + pushes:  # every build before any push: a failed build leaves nothing pushed
            run_docker(command)
    return [command[2] for command in pushes]


def tracked_files(root: Path = ROOT) -> list[str]:
    """Files git tracks under `root`, that exist in the working tree, less PACK_IGNORE(_FILES); sorted."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--", "."], cwd=root, capture_output=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise PublishError(f"{root} is not a git checkout (git ls-files failed: {error}); the codebase is the "
                           "files git tracks, so publish from a clone of the repository") from None
    files = sorted(name for name in listed.decode("utf-8").split("\0") if name)
    return [name for name in files if (root / name).is_file() and name.split("/", 1)[0] not in PACK_IGNORE
            and name not in PACK_IGNORE_FILES]


@contextlib.contextmanager
def staged_codebase(root: Path = ROOT) -> Iterator[Path]:
    """A temporary folder holding exactly `tracked_files(root)`, for dtlpy's packer to pack whole."""
    with tempfile.TemporaryDirectory(prefix="hf-adapters-codebase-") as folder:
        for name in tracked_files(root):
            target = Path(folder) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, target)
        yield Path(folder)


def codebase_files(root: Path = ROOT) -> list[str]:
    """The files the codebase would hold: dtlpy's packer run on the staged folder into a temporary zip, read back."""
    with staged_codebase(root) as staged, tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "codebase.zip"
        dl.miscellaneous.Zipping.zip_directory(zip_filename=str(archive), directory=str(staged))
        with zipfile.ZipFile(archive) as packed:
            return sorted(packed.namelist())


def connect(env: str, project_id: str) -> dl.Project:
    """Log in to `env` when the stored token has expired, and fetch the project: the first network call."""
    dl.setenv(env)
    if dl.token_expired():
        dl.login()
    return dl.projects.get(project_id=project_id)


def publish_and_install(project: dl.Project, dpk: dl.Dpk, root: Path = ROOT) -> dl.App:
    """Pack and publish the app, then install it under its name, or move an existing install to this version."""
    with staged_codebase(root) as staged:
        dpk.codebase = project.codebases.pack(directory=str(staged), name=dpk.name, extension="dpk")
    published = project.dpks.publish(dpk=dpk)
    try:
        app = project.apps.get(app_name=published.name)
    except dl.exceptions.NotFound:
        return project.apps.install(dpk=published, app_name=published.name)
    app.dpk_version = published.version
    app.update()
    return app


def platform_parser(description: str, dry_run_help: str) -> argparse.ArgumentParser:
    """The options every platform script shares: where to go, and a dry run that goes nowhere."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-id", help="the Dataloop project (required unless --dry-run)")
    parser.add_argument("--env", default="prod", help="Dataloop environment (default: prod)")
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    return parser


def parse_platform_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if not args.dry_run and not args.project_id:
        parser.error("--project-id is required (or use --dry-run)")
    return args


def run_on_platform(args: argparse.Namespace, action: Callable[[dl.Project], str]) -> int:
    """Connect, run `action` on the project and print what it did; a refusal by the platform exits 1, a request
    the project's state makes invalid (e.g. a name in use) exits 2."""
    try:
        done = action(connect(args.env, args.project_id))
    except (dl.exceptions.PlatformException, dl.exceptions.ExceptionMain) as error:  # what dtlpy raises is the latter
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(done)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = platform_parser(__doc__, "print the docker commands, the app and the codebase files; no login, "
                                      "nothing built")
    images = parser.add_mutually_exclusive_group()
    images.add_argument("--registry", metavar="REPOSITORY",
                        help="build the runner images from the Dockerfile, push them to REPOSITORY (e.g. "
                             "ghcr.io/my-org/hf-nlp-runner; Dataloop must be able to pull from it) and publish the app "
                             "with them")
    images.add_argument("--runner-image-repository", metavar="REPOSITORY",
                        help="publish with runner images already pushed to REPOSITORY as <kind>-<version> (cpu, gpu); "
                             "nothing is built")
    args = parse_platform_args(parser, argv)
    repository = args.registry or args.runner_image_repository
    if repository is None:
        print(f"error: the manifest names runner images ({RUNNER_IMAGE_PREFIX}:<kind>-<version>) that this command did "
              "not build, and an app whose image cannot be pulled never starts: pass --registry REPOSITORY to build "
              "and push them, or --runner-image-repository REPOSITORY to use images already there", file=sys.stderr)
        return 2
    try:
        files = codebase_files()
        commands = image_commands(repository, "<context>") if args.registry else ([], [])
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dpk = build_dpk(runner_image_repository=repository)
    if args.dry_run:
        plan: dict[str, Any] = {"env": args.env, "project_id": args.project_id, "app_name": dpk.name,
                                "images": {"build": commands[0], "push": commands[1], "context": list(IMAGE_CONTEXT)},
                                "dpk": dpk.to_json(), "codebase": {"directory": str(ROOT), "files": files}}
        print(json.dumps(plan, indent=2, ensure_ascii=False))
        return 0

    def install(project: dl.Project) -> str:
        pushed = build_and_push_images(repository) if args.registry else []
        app = publish_and_install(project, dpk)
        done = f"app {app.name!r} installed with {dpk.name} {dpk.version} in project {args.project_id}"
        return "\n".join([*(f"runner image pushed: {image}" for image in pushed), done])
    try:
        return run_on_platform(args, install)
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
