"""Publish this repository as a Dataloop app (DPK) to a project, and install it there (or update the install).

    python creation.py --project-id PROJECT_ID [--env prod]
    python creation.py --dry-run            # print what would be published; no login, nothing written

The app is `dataloop.json` as it stands; the codebase is this checkout, packed by dtlpy's own zipper (it honours
.gitignore; PACK_IGNORE leaves out what the app does not run). Publishing the same version twice is refused by
the platform: raise `version` in dataloop.json first.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import dtlpy as dl

from adapters.manifest import MANIFEST_PATH, load_manifest

ROOT = Path(__file__).resolve().parent
PACK_IGNORE = ("artifacts", "tests", "benchmarks", "examples", "docs", ".ci")


def build_dpk(manifest_path: Path | str = MANIFEST_PATH) -> dl.Dpk:
    """The app entity exactly as the manifest describes it; nothing is sent."""
    return dl.Dpk.from_json(_json=load_manifest(manifest_path), client_api=dl.client_api)


def codebase_files(root: Path = ROOT) -> list[str]:
    """The files the codebase would hold: dtlpy's packer run into a temporary zip, read back."""
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "codebase.zip"
        dl.miscellaneous.Zipping.zip_directory(zip_filename=str(archive), directory=str(root),
                                               ignore_directories=list(PACK_IGNORE))
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
    dpk.codebase = project.codebases.pack(directory=str(root), name=dpk.name, extension="dpk",
                                          ignore_directories=list(PACK_IGNORE))
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
    """Connect, run `action` on the project and print what it did; a refusal by the platform exits 1."""
    try:
        done = action(connect(args.env, args.project_id))
    except dl.exceptions.PlatformException as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(done)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_platform_args(platform_parser(__doc__, "print the app and codebase files; no login"), argv)
    dpk = build_dpk()
    if args.dry_run:
        plan: dict[str, Any] = {"env": args.env, "project_id": args.project_id, "app_name": dpk.name,
                                "dpk": dpk.to_json(), "codebase": {"directory": str(ROOT), "files": codebase_files()}}
        print(json.dumps(plan, indent=2, ensure_ascii=False))
        return 0

    def install(project: dl.Project) -> str:
        app = publish_and_install(project, dpk)
        return f"app {app.name!r} installed with {dpk.name} {dpk.version} in project {args.project_id}"
    return run_on_platform(args, install)


if __name__ == "__main__":
    sys.exit(main())
