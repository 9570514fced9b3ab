"""`python -m adapters list`: the models of the app manifest, with their module and configuration defaults."""
from __future__ import annotations

import argparse
import json
import sys

from adapters.core.manifest import model_entries


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="list the app's models with their module and defaults",
                                 description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the models as JSON")
    parser.set_defaults(run=run)


def describe_models() -> list[dict]:
    """Name, module, description and configuration defaults of every manifest model, in manifest order."""
    return [{"name": entry.get("name"), "module_name": entry.get("configuration", {}).get("module_name"),
             "description": entry.get("description", ""),
             "configuration": {k: v for k, v in entry.get("configuration", {}).items() if k != "module_name"}}
            for entry in model_entries()]


def run(args: argparse.Namespace) -> int:
    models = describe_models()
    if args.json:
        sys.stdout.write(json.dumps(models, indent=2, ensure_ascii=False) + "\n")
        return 0
    for model in models:
        print(f"{model['name']}  ({model['module_name']})")
        if model["description"]:
            print(f"    {model['description']}")
        for key, value in model["configuration"].items():
            print(f"    {key} = {json.dumps(value, ensure_ascii=False)}")
        print()
    return 0
