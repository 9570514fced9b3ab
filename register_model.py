"""Create a model entity of the installed app (see creation.py): one of the manifest's models, or a custom one.

    python register_model.py MODEL --project-id PROJECT_ID [--name NAME] [--module models.x]
                             [--set KEY=VALUE]... [--artifacts FOLDER] [--dataset-id ID]
                             [--train-folder /train] [--validation-folder /validation]
                             [--train-filter DQL] [--validation-filter DQL] [--dry-run]

MODEL is a name from `python -m adapters list` (the template: its tags, description and compute configs), or a
checkpoint: a Hugging Face hub id (it becomes `model_path`) or a folder of save_pretrained files (uploaded as the
model's artifacts). For a checkpoint, or with --artifacts, the module is the one that serves the checkpoint's
architecture (config.json's `architectures`) unless --module names one; a checkpoint no module serves is refused
with what each module serves, and the template is the manifest model of the chosen module.
The configuration is the manifest defaults of the module with --set applied (VALUE parsed as JSON when it can
be), checked in full before anything is sent; no weights are loaded. --artifacts uploads a folder of
save_pretrained files (safetensors) that the adapter then loads instead of `model_path`.
The model is created trainable: its train subset (`metadata.system.subsets`, which dtlpy's `train_model` needs)
is the items under --train-folder of --dataset-id (recursively), or a DQL filter given as JSON. Its validation
subset (--validation-folder, --validation-filter) is set only when it selects items of the dataset, since dtlpy's
`prepare_data` refuses an empty subset: without one the model trains without validation, and the output says so.
A validation folder or filter given explicitly that selects nothing (or without --dataset-id) is refused.
With `--set output_type=class` (distilbert-sst2, bart-large-mnli) the model is created with `outputType: class` and
its `labels` (the checkpoint's id2label, or candidate_labels): the platform shows its classes, and train_model
downloads the class annotations of the dataset's text items.
Without --name the model is called MODEL-<UTC time>; a name that exists in the project is refused before anything
is created.
Exit codes: 0 created (or dry run), 1 the platform refused, 2 usage or configuration error.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import dtlpy as dl

from adapters.core.checkpoints import choose_module, read_config
from adapters.core.errors import ConfigurationError
from adapters.core.loading import check_local_weights
from adapters.core.classes import CLASS
from adapters.core.manifest import defaults_for_module, load_manifest, model_entries, model_entry
from adapters.core.module_loader import canonical_module_name, load_model_module
from adapters.dataloop.local_runner import parse_assignments, validate_configuration
from adapters.dataloop.model_adapter import has_weights
from creation import parse_platform_args, platform_parser, run_on_platform

DEFAULT_TRAIN_FOLDER = "/train"
DEFAULT_VALIDATION_FOLDER = "/validation"


def model_request(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `project.models.create` (without app and project), validated offline."""
    checkpoint = None if args.model in {e["name"] for e in model_entries()} else args.model
    overrides = parse_assignments(args.assignments)
    if args.module_name is not None:
        overrides["module_name"] = args.module_name
    if checkpoint is not None:
        entry = checkpoint_template(args, checkpoint, overrides)
    else:
        entry = model_entry(args.model)
        if args.artifacts is not None:  # the weights must be of an architecture the template's module runs
            check_artifacts(args.artifacts)
            choose_module(read_config(str(args.artifacts)), str(args.artifacts), canonical_module_name(
                overrides.get("module_name", entry["configuration"].get("module_name"))))
    module_name = canonical_module_name(overrides.get("module_name", entry["configuration"].get("module_name")))
    custom_module = module_name != entry["configuration"].get("module_name")
    base = defaults_for_module(module_name) if custom_module else entry["configuration"]
    configuration = validate_configuration({**base, **overrides, "module_name": module_name})
    if args.artifacts is not None:
        check_artifacts(args.artifacts)
    if validation_asked(args) and args.dataset_id is None:
        raise ConfigurationError("a validation subset needs --dataset-id: it is set only when it selects items of "
                                 "the dataset")
    request = {
        "model_name": args.name or default_name(re.sub(r"[^A-Za-z0-9._-]+", "-", Path(checkpoint).name)
                                                if checkpoint else entry["name"]),
        "dpk_model_name": entry["name"],
        "configuration": configuration,
        "description": args.description or (f"{checkpoint}, run by {module_name}" if checkpoint else
                                            f"{module_name}, configured from the {entry['name']} template"
                                            if custom_module else entry.get("description")),
        "tags": entry.get("tags", []),
        "status": "trained" if args.artifacts is not None else entry.get("status", "pre-trained"),
        "input_type": entry.get("inputType", "text"),
        "output_type": entry.get("outputType", "text"),
        "dataset_id": args.dataset_id,
        "train_filter": subset_filter(args.train_filter, args.train_folder, "--train-filter"),
        "validation_filter": subset_filter(args.validation_filter, args.validation_folder or DEFAULT_VALIDATION_FOLDER,
                                           "--validation-filter"),
    }
    if configuration.get("output_type") == CLASS:  # the platform shows its classes; prepare_data reads them
        weights = {"model_path": str(args.artifacts)} if args.artifacts is not None else {}
        request["output_type"] = CLASS
        request["labels"] = load_model_module(module_name).HuggingAdapter.configured_labels({**configuration, **weights})
    return request


def validation_asked(args: argparse.Namespace) -> bool:
    """True when the user named the validation subset (rather than leaving the default folder)."""
    return args.validation_folder is not None or args.validation_filter is not None


def item_count(dataset: dl.Dataset, subset: dict[str, Any]) -> int:
    """How many items of `dataset` a subset's filter selects (one query, no items listed)."""
    return dataset.items.list(filters=dl.Filters(custom_filter=dict(subset)), page_size=0).items_count


def checked_subsets(project: dl.Project, request: dict[str, Any], asked: bool) -> tuple[dict[str, Any], list[str]]:
    """The request with its validation subset kept only when it selects items, and what to tell the user.

    dtlpy's `prepare_data` (run by `train_model`) refuses a subset that downloads nothing, so an empty validation
    subset would make the model untrainable; the train subset must exist anyway, so an empty one is only noted
    (items may be uploaded later)."""
    dataset_id = request["dataset_id"]
    if dataset_id is None:
        return {**request, "validation_filter": None}, [
            "validation subset: none (no --dataset-id); train_model trains without validation"]
    dataset = project.datasets.get(dataset_id=dataset_id)
    notes = []
    if item_count(dataset, request["train_filter"]) == 0:
        notes.append(f"train subset: selects no item of dataset {dataset_id} yet; train_model fails until it does")
    validation = item_count(dataset, request["validation_filter"])
    if validation:
        return request, notes + [f"validation subset: {validation} items"]
    if asked:
        raise ConfigurationError(f"the validation subset selects no item of dataset {dataset_id}; fix "
                                 "--validation-folder / --validation-filter, or leave them out to train without "
                                 "validation")
    return {**request, "validation_filter": None}, notes + [
        f"validation subset: none ({DEFAULT_VALIDATION_FOLDER} holds no item of dataset {dataset_id}); train_model "
        "trains without validation (epochs report the training loss only)"]


def checkpoint_template(args: argparse.Namespace, checkpoint: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """For MODEL given as a hub id or a folder: the manifest model of the module that serves it (`overrides` gets
    that module and `model_path`; a folder becomes the artifacts)."""
    if args.artifacts is not None:
        raise ConfigurationError("give the weights either as MODEL (a hub id or a folder) or with --artifacts, "
                                 "not both")
    try:
        config = read_config(checkpoint)
    except ConfigurationError as error:
        known = ", ".join(sorted(e["name"] for e in model_entries()))
        raise ConfigurationError(f"unknown model {checkpoint!r}: it is none of this app's models ({known}), and "
                                 f"no checkpoint either: {error}") from None
    asked = overrides.get("module_name")
    module_name = choose_module(config, checkpoint, None if asked is None else canonical_module_name(asked))
    if Path(checkpoint).expanduser().is_dir():
        args.artifacts = Path(checkpoint).expanduser()
    overrides.update(module_name=module_name, model_path=overrides.get("model_path", checkpoint))
    return next(e for e in model_entries() if e["configuration"].get("module_name") == module_name)


def default_name(template: str) -> str:
    """A new model's name when none is given: the template's, which the installed app already uses, plus the time."""
    return f"{template}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}"


def subset_filter(dql: str | None, folder: str, option: str) -> dict[str, Any]:
    """A subset's item filter as `models.create` sends it: the DQL given, or every item under `folder`."""
    if dql is not None:
        try:
            query = json.loads(dql)
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"{option} must be a JSON DQL object: {error}") from None
        if not isinstance(query, dict) or not query:
            raise ConfigurationError(f"{option} must be a non-empty JSON DQL object, e.g. "
                                     '{"filter": {"$and": [{"dir": "/train"}]}}')
        return dl.Filters(custom_filter=query).prepare()
    if not folder.startswith("/"):
        raise ConfigurationError(f"the subset folder {folder!r} must be an absolute dataset path, e.g. /train")
    return dl.Filters(field="filename", values=folder.rstrip("/") or "/").prepare()


def refuse_name_clash(name: str, project: dl.Project | None = None) -> None:
    """Refuse a name the app's own models use (offline) or a model of the project already has (online)."""
    if name in {entry["name"] for entry in load_manifest()["components"]["models"]}:
        raise ConfigurationError(f"--name {name!r} is a model the installed app already created; choose another "
                                 "name (or leave --name out for a distinct default)")
    if project is None:
        return
    try:
        project.models.get(model_name=name)
    except dl.exceptions.NotFound:
        return
    raise ConfigurationError(f"project {project.id} already has a model named {name!r}; choose another --name")


def check_artifacts(folder: Path) -> None:
    """The folder must hold what `ModelAdapter.load` accepts as weights, so a bad upload fails here, not on deploy."""
    if not folder.is_dir():
        raise ConfigurationError(f"--artifacts {str(folder)!r} is not a folder")
    check_local_weights(str(folder))
    if not has_weights(folder):
        raise ConfigurationError(f"--artifacts {str(folder)!r} needs config.json and *.safetensors "
                                 "(save_pretrained output)")


def register(project: dl.Project, request: dict[str, Any], artifacts: Path | None,
             asked_for_validation: bool = False) -> tuple[dl.Model, list[str]]:
    """Create the model under the installed app (its subsets checked against the dataset) and upload its
    artifacts; returns the model and notes about its subsets."""
    refuse_name_clash(request["model_name"], project)
    request, notes = checked_subsets(project, request, asked_for_validation)
    app = project.apps.get(app_name=load_manifest()["name"])
    model = project.models.create(app=app, project_id=project.id, **request)
    if artifacts is not None:
        try:
            model.artifacts.upload(filepath=os.path.join(str(artifacts), "*"))
        except Exception:
            # A "trained" model without its weights would load the template's hub weights instead: none is left.
            try:
                model.delete()
            except Exception as error:  # noqa: BLE001 - the upload's error is the one to report
                print(f"warning: model {model.name!r} ({model.id}) has no weights and could not be deleted "
                      f"({error}); delete it before deploying it", file=sys.stderr)
            raise
    return model, notes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = platform_parser(__doc__, "print the request; no login, nothing sent")
    parser.add_argument("model", metavar="MODEL", help="manifest model to start from, or a checkpoint: a hub id or "
                                                        "a folder of save_pretrained files")
    parser.add_argument("--name", help="name of the new model (default: MODEL-<UTC time>)")
    parser.add_argument("--module", "--module-name", dest="module_name",
                        help="the module of models/ to run (default: the template's, or for a checkpoint the one "
                             "that serves its architecture)")
    parser.add_argument("--set", dest="assignments", metavar="KEY=VALUE", action="append", default=[],
                        help="configuration override; VALUE is parsed as JSON when it can be (repeatable)")
    parser.add_argument("--artifacts", type=Path, help="folder of save_pretrained weights to upload")
    parser.add_argument("--dataset-id", help="dataset the model trains and evaluates on")
    parser.add_argument("--train-folder", default=DEFAULT_TRAIN_FOLDER,
                        help=f"dataset folder of the train subset, recursively (default: {DEFAULT_TRAIN_FOLDER})")
    parser.add_argument("--validation-folder",
                        help=f"dataset folder of the validation subset, recursively (default: "
                             f"{DEFAULT_VALIDATION_FOLDER}, set only when it holds items)")
    parser.add_argument("--train-filter", metavar="DQL", help="JSON DQL filter of the train items (instead of "
                                                              "--train-folder)")
    parser.add_argument("--validation-filter", metavar="DQL", help="JSON DQL filter of the validation items "
                                                                   "(instead of --validation-folder)")
    parser.add_argument("--description", help="description (default: the template's)")
    return parse_platform_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        request = model_request(args)
        refuse_name_clash(request["model_name"])
    except (KeyError, ConfigurationError) as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    if args.dry_run:
        artifacts = sorted(p.name for p in args.artifacts.iterdir()) if args.artifacts else []
        print(json.dumps({"create": request, "artifacts": artifacts}, indent=2, ensure_ascii=False))
        print("dry run: the validation subset is set only when it selects items of the dataset, which is checked "
              "against the platform", file=sys.stderr)
        return 0

    def create(project: dl.Project) -> str:
        model, notes = register(project, request, args.artifacts, validation_asked(args))
        return "\n".join([f"model {model.name!r} created: {model.id}", *notes])
    return run_on_platform(args, create)


if __name__ == "__main__":
    sys.exit(main())
