"""The one exception type users see: it names the bad value and the fix.

`invalid` turns a pydantic ValidationError into one line per bad field that names the recipe key, the CLI
flag that sets it, the value given and what would be accepted, instead of pydantic's "Input should be less
than 1". Each field carries its own words (`json_schema_extra=words(flag, label)`): the CLI flag that sets it
and, where the app has a widget for it, that widget's label; the messages for the command line ("set --ratio")
and for the app ("set the field “Share of parameters to remove”") are both made from them, and the error keeps
the app's (`CompressorError.page`). This module imports nothing of the package: callers pass the model.
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

    It subclasses ValueError so callers that catch bad input generically still catch it. `page` is the same
    message in the app's words (its fields instead of the CLI's flags) where the two differ.
    """

    def __init__(self, message: str, page: str | None = None) -> None:
        super().__init__(message)
        self.page = page


def page_words(err: BaseException | str) -> str:
    """A message as the app shows it: the error's page wording where it has one, else its message."""
    if isinstance(err, str):
        return err
    return getattr(err, "page", None) or str(err)


# How a message asks for what is not a recipe field (the Hub token, the run folder), in the CLI's words and
# the page's: {slot} → (CLI, page), filled by `worded`.
ASK = {
    "datasets": (
        "datasets go to --calibration, recover --data or eval --task",
        "datasets go in “Calibration data”, “Training data” or the evaluation tasks' dataset column",
    ),
    "token": (
        "pass --token, set HF_TOKEN, or run `hf auth login`",
        "sign in with the button, or paste a token in the Hub token box",
    ),
    "token_file": (
        "pass --token-file, set HF_TOKEN, or run `hf auth login`",
        "sign in with the button, or paste a token in the Hub token box",
    ),
    "pass_it": (
        "pass it with --token or HF_TOKEN",
        "paste it in the Hub token box (or sign in with the button)",
    ),
    "pass_it_file": (
        "pass it with --token-file or HF_TOKEN",
        "paste it in the Hub token box (or sign in with the button)",
    ),
    "token_aside": ("(--token or HF_TOKEN)", "(paste it in the Hub token box, or sign in with the button)"),
    "other_run_dir": (
        "or give another --run-dir",
        "or change the recipe (each recipe has its own run folder)",
    ),
    "start_over": (
        "use another --run-dir, or delete that folder to start over",
        "change the recipe to start another run",
    ),
}


def worded(template: str, **slots: str) -> CompressorError:
    """A CompressorError from a template whose {slots} name `ASK` entries: the CLI's words in its message, the
    page's in `page` (e.g. worded("this needs a Hub token: {ask}", ask="token"))."""
    cli, page = template, template
    for slot, ask in slots.items():  # only the named slots: the rest of the text may hold braces of its own
        cli, page = cli.replace(f"{{{slot}}}", ASK[ask][0]), page.replace(f"{{{slot}}}", ASK[ask][1])
    return CompressorError(cli, page=page)


def closest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'taylor'?)`` when a close match exists, else an empty string."""
    match = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def words(flag: str | None = None, label: str | None = None, metavar: str | None = None) -> dict[str, str]:
    """A field's `json_schema_extra`: the CLI flag that sets it, as messages name it (`--ratio`, `recover --mode`,
    `SRC`), its label in the app, and the flag's metavar where messages ask for a value (`DATA`)."""
    given = {"flag": flag, "label": label, "metavar": metavar}
    return {k: v for k, v in given.items() if v is not None}


def _words(info: Any) -> dict[str, str]:
    extra = getattr(info, "json_schema_extra", None)
    return extra if isinstance(extra, dict) else {}


def flag_of(model: type[BaseModel], name: str) -> str | None:
    """The CLI flag that sets a field (None where no flag does)."""
    return _words(model.model_fields[name]).get("flag")


def label_of(model: type[BaseModel], name: str) -> str | None:
    """A field's label in the app (None where the app has no widget for it)."""
    return _words(model.model_fields[name]).get("label")


def field_words(model: type[BaseModel], prefix: str = "") -> dict[str, dict[str, str]]:
    """Recipe key (list indices dropped) → that field's words, for every field of `model` and its sections."""
    out: dict[str, dict[str, str]] = {}
    for name, info in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if _words(info):
            out[key] = _words(info)
        section = _submodel(info.annotation)
        if section is not None:
            out.update(field_words(section, key))
    return out


def fill_in(model: type[BaseModel], name: str) -> tuple[str, str]:
    """How a message asks for a field's value: ("pass --calibration DATA", "fill in “Calibration data”")."""
    w = _words(model.model_fields[name])
    flag = " ".join(x for x in (w.get("flag"), w.get("metavar")) if x)
    return f"pass {flag}", f"fill in “{w['label']}”" if "label" in w else f"set {name}"


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


def _line(e: dict, shown_loc: str, root: type[BaseModel], root_loc: tuple, page: bool) -> str:
    """One bad field's line, in the CLI's words (its flag) or, with `page`, in the app's (its field's label)."""
    kind, value = e["type"], e.get("input")
    holder, info = _field_at(root, root_loc)
    flag, label = _words(info).get("flag"), _words(info).get("label")
    if page:
        name = f"“{label}” ({shown_loc})" if label else shown_loc
        setter = f"the field “{label}”" if label else shown_loc
    else:
        name = f"{shown_loc} ({flag})" if flag else shown_loc
        setter = flag or shown_loc
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
    err: ValidationError, title: str, model: type[BaseModel], prefix: str = "", page_title: str | None = None
) -> CompressorError:
    """One CompressorError with a line per bad field: the key, its CLI flag, the value given and the fix; its
    `page` says the same with the app's field labels instead of the flags.

    `model` is the pydantic model that was validated; `prefix` (its key in a recipe, e.g. "recover") goes before
    the keys shown. A single bad field gives a one-line message (`title: line`); several give the title and one
    line each. `page_title` is the title the page shows, where it says it otherwise.
    """

    def message(page: bool) -> str:
        head = (page_title or title) if page else title
        lines = []
        for e in err.errors():
            loc = tuple(e["loc"])
            shown_loc = ".".join([*([prefix] if prefix else []), *(str(p) for p in loc)]) or "(top level)"
            lines.append(_line(e, shown_loc, model, loc, page))
        if len(lines) == 1:
            return f"{head}: {lines[0]}"
        return "\n".join([f"{head}:", *(f"  {line}" for line in lines)])

    cli, page = message(page=False), message(page=True)
    return CompressorError(cli, page=page if page != cli else None)


def field_help(model: type[BaseModel], name: str) -> str:
    """A pydantic field's description: field docs live once, on the field (CLI help, app labels, schema)."""
    return model.model_fields[name].description or ""


def add_field_option(
    group, model: type[BaseModel], name: str, help_prefix: str = "", help_suffix: str = "", **kwargs: Any
) -> None:
    """A field's command-line option on an argparse parser or group: its flag (`--ratio`; `recover --mode` gives
    `--mode`) and its help are the field's own (json_schema_extra and description)."""
    flag = flag_of(model, name)
    if not flag or "--" not in flag:
        raise ValueError(f"{model.__name__}.{name} names no --flag in its json_schema_extra")
    option = next(part for part in flag.split() if part.startswith("--"))
    group.add_argument(option, help=help_prefix + field_help(model, name) + help_suffix, **kwargs)
