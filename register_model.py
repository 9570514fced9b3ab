"""Create a model entity of the installed app (see creation.py): one of the manifest's models, or a custom one.

    python register_model.py MODEL --project-id PROJECT_ID [--name NAME] [--module-name models.x]
                             [--set KEY=VALUE]... [--artifacts FOLDER] [--dataset-id ID] [--dry-run]

MODEL (a name from `python -m adapters list`) is the template: its tags, description and compute configs.
The configuration is the manifest defaults of the module with --set applied (VALUE parsed as JSON when it can
be), checked in full before anything is sent; nothing is loaded. --artifacts uploads a folder of
save_pretrained files (safetensors) that the adapter then loads instead of `model_path`.
Exit codes: 0 created (or dry run), 1 the platform refused, 2 usage or configuration error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import dtlpy as dl

from adapters.errors import ConfigurationError
from adapters.loading import check_local_weights
from adapters.local_runner import parse_assignments, validate_configuration
from adapters.manifest import defaults_for_module, load_manifest, model_entry
from adapters.model_adapter import has_weights
from adapters.module_loader import canonical_module_name
from creation import parse_platform_args, platform_parser, run_on_platform


def model_request(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `project.models.create` (without app and project), validated offline."""
    entry = model_entry(args.model)
    overrides = parse_assignments(args.assignments)
    if args.module_name is not None:
        overrides["module_name"] = args.module_name
    module_name = canonical_module_name(overrides.get("module_name", entry["configuration"].get("module_name")))
    custom_module = module_name != entry["configuration"].get("module_name")
    base = defaults_for_module(module_name) if custom_module else entry["configuration"]
    configuration = validate_configuration({**base, **overrides, "module_name": module_name})
    if args.artifacts is not None:
        check_artifacts(args.artifacts)
    return {
        "model_name": args.name or entry["name"],
        "dpk_model_name": entry["name"],
        "configuration": configuration,
        "description": args.description or (f"{module_name}, configured from the {entry['name']} template"
                                            if custom_module else entry.get("description")),
        "tags": entry.get("tags", []),
        "status": "trained" if args.artifacts is not None else entry.get("status", "pre-trained"),
        "input_type": entry.get("inputType", "text"),
        "output_type": entry.get("outputType", "text"),
        "dataset_id": args.dataset_id,
    }


def check_artifacts(folder: Path) -> None:
    """The folder must hold what `ModelAdapter.load` accepts as weights, so a bad upload fails here, not on deploy."""
    if not folder.is_dir():
        raise ConfigurationError(f"--artifacts {str(folder)!r} is not a folder")
    check_local_weights(str(folder))
    if not has_weights(folder):
        raise ConfigurationError(f"--artifacts {str(folder)!r} needs config.json and *.safetensors "
                                 "(save_pretrained output)")


def register(project: dl.Project, request: dict[str, Any], artifacts: Path | None) -> dl.Model:
    """Create the model under the installed app and upload its artifacts."""
    app = project.apps.get(app_name=load_manifest()["name"])
    model = project.models.create(app=app, project_id=project.id, **request)
    if artifacts is not None:
        model.artifacts.upload(filepath=os.path.join(str(artifacts), "*"))
    return model


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = platform_parser(__doc__, "print the request; no login, nothing sent")
    parser.add_argument("model", metavar="MODEL", help="manifest model to start from")
    parser.add_argument("--name", help="name of the new model (default: MODEL)")
    parser.add_argument("--module-name", help="another module of models/ to run (a custom model)")
    parser.add_argument("--set", dest="assignments", metavar="KEY=VALUE", action="append", default=[],
                        help="configuration override; VALUE is parsed as JSON when it can be (repeatable)")
    parser.add_argument("--artifacts", type=Path, help="folder of save_pretrained weights to upload")
    parser.add_argument("--dataset-id", help="dataset the model trains and evaluates on")
    parser.add_argument("--description", help="description (default: the template's)")
    return parse_platform_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        request = model_request(args)
    except (KeyError, ConfigurationError) as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    if args.dry_run:
        artifacts = sorted(p.name for p in args.artifacts.iterdir()) if args.artifacts else []
        print(json.dumps({"create": request, "artifacts": artifacts}, indent=2, ensure_ascii=False))
        return 0

    def create(project: dl.Project) -> str:
        model = register(project, request, args.artifacts)
        return f"model {model.name!r} created: {model.id}"
    return run_on_platform(args, create)


if __name__ == "__main__":
    sys.exit(main())
