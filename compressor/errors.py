"""The one exception type users see: it names the bad value and the fix.

`invalid` turns a pydantic ValidationError into one line per bad field that names the recipe key, the CLI
flag that sets it, the value given and what would be accepted, instead of pydantic's "Input should be less
than 1".
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


class CompressorError(ValueError):
    """A user-facing error. The message names the offending value and how to fix it.

    It subclasses ValueError so callers that catch bad input generically still catch it.
    """


def closest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'taylor'?)`` when a close match exists, else an empty string."""
    match = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# Recipe key (list indices dropped) -> the CLI flag that sets it. One table, used only for messages.
FLAGS = {
    "model.source": "SRC",
    "model.revision": "--revision",
    "model.trust_remote_code": "--trust-remote-code",
    "model.allow_pickle": "--allow-pickle",
    "model.dtype": "--dtype",
    "model.device_map": "--device-map",
    "prune.method": "--method",
    "prune.ratio": "--ratio",
    "prune.scorer": "--scorer",
    "prune.targets": "--targets",
    "prune.round_to": "--round-to",
    "prune.target": "--target",
    "prune.contiguous": "--contiguous",
    "prune.calibration.dataset": "--calibration",
    "prune.calibration.image_folder": "--image-folder",
    "prune.calibration.split": "--split",
    "prune.calibration.num_samples": "--num-samples",
    "prune.calibration.max_length": "--max-length",
    "prune.calibration.seed": "--seed",
    "prune.calibration.modality": "--calibration-modality",
    "recover.mode": "recover --mode",
    "recover.fraction": "recover --fraction",
    "recover.loss": "recover --loss",
    "recover.max_steps": "recover --max-steps",
    "recover.seed": "recover --seed",
    "recover.lora.r": "recover --lora-r",
    "recover.data.dataset": "recover --data",
    "recover.data.split": "recover --split",
    "recover.data.image_folder": "recover --image-folder",
    "recover.data.weight": "recover --data DATA:WEIGHT",
    "evaluate.tasks.name": "eval --task NAME=…",
    "evaluate.tasks.dataset": "eval --task …=DATASET",
    "evaluate.tasks.split": "eval --split",
    "evaluate.tasks.limit": "eval --limit",
    "evaluate.tasks.sample": "eval --sample",
    "evaluate.tasks.seed": "eval --seed",
    "evaluate.tasks.max_new_tokens": "eval --max-new-tokens",
    "publish.repo_id": "push --repo-id",
    "publish.private": "push --private",
    "publish.overwrite": "push --overwrite",
}

_KIND = {
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "int_type": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a text value (quote it in YAML)",
    "dict_type": "a mapping of keys",
    "model_type": "a mapping of keys (the section name, then indented keys)",
    "model_attributes_type": "a mapping of keys (the section name, then indented keys)",
    "tuple_type": "a list",
    "list_type": "a list",
}


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (Model, Model | None, tuple[Model, ...]), if any."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, tuple, list):
        for arg in typing.get_args(annotation):
            found = _submodel(arg)
            if found is not None:
                return found
    return None


def _field_at(model: type[BaseModel] | None, loc: tuple) -> tuple[type[BaseModel] | None, Any]:
    """(the model that holds the last key of `loc`, that key's FieldInfo or None), walking nested sections."""
    names = [p for p in loc if isinstance(p, str)]
    for i, name in enumerate(names):
        if model is None or name not in model.model_fields:
            return model if i == len(names) - 1 else None, None
        info = model.model_fields[name]
        if i == len(names) - 1:
            return model, info
        model = _submodel(info.annotation)
    return model, None


def _choices(info: Any) -> list[str]:
    def walk(annotation: Any) -> list[str]:
        if typing.get_origin(annotation) is typing.Literal:
            return [str(a) for a in typing.get_args(annotation)]
        return [c for arg in typing.get_args(annotation) for c in walk(arg)]

    return walk(info.annotation) if info is not None else []


def _bounds(info: Any) -> str:
    """'> 0 and < 1' from a field's gt/ge/lt/le constraints."""
    parts = []
    for meta in getattr(info, "metadata", []) or []:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{sign} {getattr(meta, attr):g}")
    return " and ".join(parts)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _line(e: dict, shown_loc: str, key: str, root: type[BaseModel] | None, root_loc: tuple) -> str:
    kind, value = e["type"], e.get("input")
    flag = FLAGS.get(key)
    name = f"{shown_loc} ({flag})" if flag else shown_loc
    setter = flag or shown_loc
    holder, info = _field_at(root, root_loc)
    if kind == "extra_forbidden":
        bad = str(e["loc"][-1])
        known = list(holder.model_fields) if holder is not None else []
        hint = closest(bad, known) or ""
        valid = f"; valid keys here: {', '.join(known)}" if known else ""
        return f"{shown_loc}: unknown key {bad!r}{hint}; remove it or fix its spelling{valid}"
    if kind == "missing":
        choices, section = _choices(info), _submodel(info.annotation) if info is not None else None
        also = f" (one of {', '.join(choices)})" if choices else ""
        if section is not None:
            needed = [n for n, f in section.model_fields.items() if f.is_required()]
            also = f" (a {shown_loc.rsplit('.', 1)[-1]}: section with {', '.join(needed)})" if needed else ""
        return f"{name} is missing: add it{also}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bounds = _bounds(info) or e["msg"].removeprefix("Input should be ")
        return f"{name} is {_shown(value)}: set {setter} to a number {bounds}"
    if kind == "literal_error":
        choices = _choices(info) or [e["ctx"]["expected"]]
        return f"{name} is {_shown(value)}{closest(str(value), choices)}: choose one of {', '.join(choices)}"
    if kind in _KIND:
        return f"{name} is {_shown(value)}: it must be {_KIND[kind]}; fix the value of {setter}"
    if kind in ("too_short", "too_long"):
        return f"{name} is {_shown(value)}: {e['msg'].removeprefix('Value should have ').lower()}"
    msg = e["msg"].removeprefix("Value error, ")
    if kind == "value_error" or not isinstance(value, (int, float, str)) or value is None:
        return f"{name}: {msg}"
    return f"{name} is {_shown(value)}: {msg}"


def invalid(
    err: ValidationError, title: str, model: type[BaseModel], key: str = "", prefix: str = ""
) -> CompressorError:
    """One CompressorError with a line per bad field: the key, its CLI flag, the value given and the fix.

    `model` is the pydantic model that was validated and `key` its place in a recipe ("" for the Recipe itself,
    "recover" for a recover section); `prefix` goes before the keys shown. A single bad field gives a one-line
    message (`title: line`); several give the title and one line each.
    """
    root, root_key = model, key
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        shown_loc = ".".join([*([prefix] if prefix else []), *(str(p) for p in loc)]) or "(top level)"
        key = ".".join([*([root_key] if root_key else []), *(p for p in loc if isinstance(p, str))])
        lines.append(_line(e, shown_loc, key, root, loc))
    if len(lines) == 1:
        return CompressorError(f"{title}: {lines[0]}")
    return CompressorError("\n".join([f"{title}:", *(f"  {line}" for line in lines)]))


def field_help(model: type[BaseModel], name: str) -> str:
    """A pydantic field's description: field docs live once, on the field (CLI help, app labels, schema)."""
    return model.model_fields[name].description or ""
