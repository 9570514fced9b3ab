"""Lists of texts as requests send them: a JSON list, a string holding a JSON list, or a data URI of one (seed 002)."""
from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
from typing import Any

from .limits import MAX_TEXTS


def decode_texts(value: str, field: str) -> list[Any]:
    """The texts a string stands for, as the REST routes and the Cog predictors read it alike: a JSON list
    ('["a", "b"]'), a data URI of one (seed 002), or else one text. A ValueError says what to fix (pydantic turns
    it into a 422)."""
    start = value.lstrip()
    if start.startswith("data:"):
        return _json_list(_data_uri_payload(start, field), field)
    return _json_list(value, field) if start.startswith("[") else [value]


def comma_separated(value: str) -> list[str]:
    """Labels given as one string, as the Cog predictors take them: "urgent, billing" is ["urgent", "billing"]."""
    return [label.strip() for label in value.split(",")]


def checked_texts(values: list[Any], field: str) -> list[str]:
    """Between 1 and MAX_TEXTS strings, none of them blank."""
    if not values:
        raise ValueError(f"{field}: give at least one text")
    if len(values) > MAX_TEXTS:
        raise ValueError(f"{field}: {len(values)} texts is more than the limit of {MAX_TEXTS} per request; "
                         "split them over several requests")
    for index, text in enumerate(values):
        checked_text(text, f"{field}[{index}]")
    return values


def checked_text(text: Any, field: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{field} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{field} is empty; every text needs some words")
    return text


def _data_uri_payload(uri: str, field: str) -> str:
    header, comma, data = uri.partition(",")
    if not comma:
        raise ValueError(f"{field}: a data URI needs a ',' before its data, e.g. data:application/json;base64,<base64>")
    if header.endswith(";base64"):
        try:
            raw = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{field}: the data URI's base64 payload is invalid; encode the JSON list with "
                             "standard base64") from None
    else:
        raw = urllib.parse.unquote_to_bytes(data)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{field}: the data URI's payload is not UTF-8 text") from None


def _json_list(payload: str, field: str) -> list[Any]:
    try:
        value = json.loads(payload)
    except json.JSONDecodeError as error:
        raise ValueError(f"{field}: a string must hold a JSON list of texts such as '[\"I love apple\"]' or be a "
                         f"data URI of one; this one is not valid JSON ({error.msg} at position {error.pos})") from None
    except RecursionError:  # the decoder recurses once per nesting level: "[[[[...]]]]" exhausts the stack
        raise ValueError(f"{field}: the JSON nests too deeply; send a flat list of texts") from None
    if not isinstance(value, list):
        raise ValueError(f"{field}: the JSON must be a list of texts, got a JSON {type(value).__name__}")
    return value
