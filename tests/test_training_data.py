"""Training data is untrusted input: paths stay inside the data folder, and any malformed item JSON is a
DatasetError naming the file, never a traceback, a hang, or a file read from elsewhere."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.training.dataset import DatasetError, read_layout
from adapters.training.layout import text_annotation, write_item
from tests.prompt_factory import current_item

SECRET = "the secret reference answer"


def layout_with(root: Path, item_json: dict[str, Any]) -> Path:
    """A train subset with one good item and `item_json` as a second item's JSON."""
    write_item(root / "train", "good", current_item({"1": ["fine"]}), [text_annotation("1", "ok")])
    (root / "train" / "json" / "bad.json").write_text(json.dumps(item_json), encoding="utf-8")
    return root


def item_json(filename: str = "/good.json", annotations: Any = None) -> dict[str, Any]:
    return {"filename": filename, "name": "bad.json", "annotations": annotations if annotations is not None else []}


@pytest.mark.parametrize("filename", ["/../../../../etc/hostname", "../json/good.json", "/../../train/json/good.json",
                                      "/" + "../" * 40 + "etc/passwd"])
def test_an_item_filename_that_climbs_out_of_the_items_folder_is_refused(tmp_path, filename):
    with pytest.raises(DatasetError, match="bad.json: its prompt item file points outside"):
        read_layout(layout_with(tmp_path, item_json(filename)))


def test_a_symlink_out_of_the_data_folder_is_refused(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(current_item({"1": ["private"]})))
    data = layout_with(tmp_path / "data", item_json("/link.json"))
    (data / "train" / "items" / "link.json").symlink_to(outside)
    with pytest.raises(DatasetError, match="points outside"):
        read_layout(data)
    (data / "train" / "json" / "bad.json").unlink()
    (data / "train" / "json" / "linked.json").symlink_to(outside)
    with pytest.raises(DatasetError, match="linked.json: its item JSON points outside"):
        read_layout(data)


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    data = layout_with(tmp_path, item_json("/fifo.json"))
    os.mkfifo(data / "train" / "items" / "fifo.json")
    result: list[Any] = []
    reader = threading.Thread(target=lambda: result.append(_raises(read_layout, data)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert result and isinstance(result[0], DatasetError) and "not a regular file" in str(result[0])


def _raises(function, *args) -> BaseException | None:
    try:
        function(*args)
    except BaseException as error:  # noqa: BLE001 - handed to the assertion
        return error
    return None


@pytest.mark.parametrize("annotations, message", [
    ([{"type": "text", "coordinates": SECRET, "metadata": "a string"}], "annotation 0's metadata must be an object"),
    ([{"type": "text", "coordinates": SECRET, "metadata": {"system": ["promptId"]}}],
     "annotation 0's metadata.system must be an object"),
    ([{"type": "text", "coordinates": SECRET, "metadata": {"system": {"promptId": "1"}, "user": {"model": 7}}}],
     "annotation 0's metadata.user.model must be an object"),
    (["not an annotation"], "annotation 0 must be an object"),
    ({"annotations": "as a dict"}, "'annotations' must be a list"),
])
def test_wrongly_typed_annotation_json_is_a_dataset_error_that_does_not_quote_the_answer(tmp_path, annotations,
                                                                                        message):
    with pytest.raises(DatasetError, match=message) as raised:
        read_layout(layout_with(tmp_path, item_json(annotations=annotations)))
    assert SECRET not in str(raised.value)


def test_deeply_nested_json_is_a_dataset_error(tmp_path):
    data = layout_with(tmp_path, {})
    (data / "train" / "json" / "bad.json").write_text('{"filename": "/good.json", "annotations": '
                                                      + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DatasetError, match="bad.json: nested too deeply"):
        read_layout(data)


def test_a_lone_surrogate_in_a_reference_is_replaced_as_in_questions(tmp_path):
    """No tokenizer takes "\\ud800": a reference holding one failed its training row with a TypeError."""
    write_item(tmp_path / "train", "a", current_item({"1": ["fine"]}), [text_annotation("1", "ok LONE then")])
    json_file = tmp_path / "train" / "json" / "a.json"
    json_file.write_text(json_file.read_text().replace("LONE", "\\ud800"))  # valid JSON, not valid Unicode
    (item,) = read_layout(tmp_path)["train"].items
    assert list(item.references.values()) == [["ok \ufffd then"]]


def test_a_text_annotation_without_a_prompt_is_reported_not_dropped_silently(tmp_path, caplog):
    data = layout_with(tmp_path, item_json(annotations=[{"type": "text", "coordinates": SECRET, "metadata": {}}]))
    train = read_layout(data)["train"]
    assert any("not an answer to a prompt" in s.reason for s in train.skipped)
    assert "annotation 0 is a text annotation without" in caplog.text and SECRET not in caplog.text


# ----- fuzzing: any JSON as an item's JSON or its annotations -----
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["type", "coordinates", "metadata", "system", "user", "model", "name", "promptId", "x"]),
    inner, max_size=4), max_leaves=12)
annotation = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["text", "box"]) | json_values,
    "coordinates": st.text(max_size=10) | json_values,
    "metadata": st.fixed_dictionaries({}, optional={
        "system": st.fixed_dictionaries({}, optional={"promptId": st.sampled_from(["1", 1, "2"]) | json_values,
                                                      "model": json_values}) | json_values,
        "user": st.fixed_dictionaries({}, optional={"model": st.fixed_dictionaries(
            {}, optional={"name": json_values}) | json_values}) | json_values}) | json_values})
item_jsons = st.fixed_dictionaries({}, optional={
    "filename": st.sampled_from(["/good.json", "good.json", "/../good.json", "/missing.json", "", "/"]) | json_values,
    "name": json_values, "annotations": st.lists(annotation | json_values, max_size=4) | json_values}) | json_values


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(item_jsons)
def test_any_item_json_is_read_or_refused_with_a_dataset_error(tmp_path, value):
    try:
        subsets = read_layout(layout_with(tmp_path, value))
    except DatasetError:
        return
    assert subsets["train"].answer_count >= 1  # the good item is always read


# ----- fuzzing the output folder's rules: without --overwrite nothing there is ever removed or changed -----
entry_names = st.sampled_from(["checkpoints", "config.json", "model.safetensors", "notes.txt", "run.json",
                               "checkpoint-3", "trainer_state.json", ".hidden"])
contents = st.recursive(st.binary(max_size=4), lambda inner: st.dictionaries(entry_names, inner, max_size=3),
                        max_leaves=6)


def materialize(folder: Path, tree: Any) -> None:
    for name, value in tree.items():
        path = folder / name
        if isinstance(value, dict):
            path.mkdir()
            materialize(path, value)
        else:
            path.write_bytes(value)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(entry_names, contents, max_size=4), our_run=st.booleans(), same_run=st.booleans())
def test_without_overwrite_an_output_folder_is_only_ever_added_to(tmp_path_factory, tree, our_run, same_run):
    from adapters.training.output import CHECKPOINTS, RUN_FILE, OutputError, OutputFolder

    out = tmp_path_factory.mktemp("out")
    materialize(out, tree)
    if our_run and isinstance(tree.get(CHECKPOINTS), dict) and not (out / CHECKPOINTS / RUN_FILE).is_dir():
        (out / CHECKPOINTS / RUN_FILE).write_text(json.dumps({"fingerprint": "this run", "seed": 3}))
    before = snapshot(out)
    folder = OutputFolder(out)
    try:
        folder.check()
        resume = folder.begin("this run" if same_run else "another run", seed=7)
    except OutputError:
        assert snapshot(out) == before
        return
    after = snapshot(out)
    assert all(after.get(path) == content for path, content in before.items())  # nothing removed or changed
    assert resume.seed in (3, 7) and (out / CHECKPOINTS / RUN_FILE).is_file()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_data_folder_that_is_missing_or_a_file_is_said_as_such_before_anything_loads(tmp_path, capsys, command,
                                                                                      nothing_loads):
    """Not "found: no subset folders at all", which sends a user looking inside a folder that is not there."""
    from adapters.cli import main as cli_main

    a_file = tmp_path / "data.json"
    a_file.write_text("{}", encoding="utf-8")
    for data, said in ((tmp_path / "nothing", "does not exist"), (a_file, "is a file, not a folder of subsets")):
        extra = [str(tmp_path / "out")] if command == "train" else []
        assert cli_main([command, "distilbert-sst2", str(data), *extra]) == 1
        err = capsys.readouterr().err
        assert f"data folder {str(data)!r} {said}" in err and "found:" not in err
    assert not (tmp_path / "out").exists()
