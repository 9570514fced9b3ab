"""Publish this repository as a Dataloop app (DPK) to a project, and install it there (or update the install).

    python creation.py --project-id PROJECT_ID [--env prod] [--runner-image-repository REPOSITORY]
    python creation.py --dry-run            # print what would be published; no login, nothing written

The app is `dataloop.json` as it stands; the codebase is the files git tracks in this checkout (as they are in the
working tree), less what the service does not run (tests, benchmarks, examples, docs, Cog files): untracked
files such as trained weights, benchmark results, data or an `--out` file are never published. The services run
on the runner images the `Dockerfile` builds (see docs/app.md); `--runner-image-repository` publishes the app
with images pushed to another repository (a fork's). Publishing the same version twice is refused by the
platform: raise `version` in dataloop.json first.
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
PACK_IGNORE = ("tests", "benchmarks", "examples", "docs", ".ci")
PACK_IGNORE_FILES = ("Dockerfile", ".dockerignore", "cog.yaml", "cog_predictors.py", "requirements-dev.txt",
                     ".gitignore", "pytest.ini")
RUNNER_IMAGE_PREFIX = "ghcr.io/huggingface-nlp-adapters/runner"


class PublishError(RuntimeError):
    """What to publish cannot be worked out (e.g. not a git checkout); the message says what to do."""


def build_dpk(manifest_path: Path | str = MANIFEST_PATH, runner_image_repository: str | None = None) -> dl.Dpk:
    """The app entity as the manifest describes it, its runner images moved to another repository if asked."""
    manifest = load_manifest(manifest_path)
    if runner_image_repository:
        for config in manifest["components"]["computeConfigs"]:
            image = config["runtime"]["runnerImage"]
            config["runtime"]["runnerImage"] = runner_image_repository + image[len(RUNNER_IMAGE_PREFIX):]
    return dl.Dpk.from_json(_json=manifest, client_api=dl.client_api)


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
    parser = platform_parser(__doc__, "print the app and codebase files; no login")
    parser.add_argument("--runner-image-repository", metavar="REPOSITORY",
                        help=f"publish with runner images from REPOSITORY instead of {RUNNER_IMAGE_PREFIX} (same "
                             "tags; build and push them from the Dockerfile first, see docs/app.md)")
    args = parse_platform_args(parser, argv)
    dpk = build_dpk(runner_image_repository=args.runner_image_repository)
    try:
        files = codebase_files()
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        plan: dict[str, Any] = {"env": args.env, "project_id": args.project_id, "app_name": dpk.name,
                                "dpk": dpk.to_json(), "codebase": {"directory": str(ROOT), "files": files}}
        print(json.dumps(plan, indent=2, ensure_ascii=False))
        return 0

    def install(project: dl.Project) -> str:
        app = publish_and_install(project, dpk)
        return f"app {app.name!r} installed with {dpk.name} {dpk.version} in project {args.project_id}"
    return run_on_platform(args, install)


if __name__ == "__main__":
    sys.exit(main())
