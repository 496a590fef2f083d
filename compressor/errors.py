"""The one exception type users see: it names the bad value and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


class CompressorError(ValueError):
    """A user-facing error. The message names the offending value and how to fix it.

    It subclasses ValueError so callers that catch bad input generically still catch it.
    """


def invalid(err: ValidationError, title: str, prefix: str = "") -> CompressorError:
    """One CompressorError listing every bad field of a pydantic ValidationError by its location."""
    lines = [f"{title}:"]
    for e in err.errors():
        loc = ".".join([*([prefix] if prefix else []), *(str(p) for p in e["loc"])]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        lines.append(f"  {loc}: {msg}")
    return CompressorError("\n".join(lines))


def field_help(model: type[BaseModel], name: str) -> str:
    """A pydantic field's description: field docs live once, on the field (CLI help, app labels, schema)."""
    return model.model_fields[name].description or ""
