"""Messages for the page: the package's errors in the page's words (its fields and buttons, not the CLI's flags
and HF_TOKEN), as wrapped Markdown, and the plan as a table with its warnings.

The page's words come with the error itself (`CompressorError.page`): compressor.errors makes them from a recipe
field's label (`invalid`, `fill_in`) or from its table of what a message asks for that is not a field (`ASK`:
the Hub token, the run folder). Nothing here rewrites the CLI's sentences."""

from __future__ import annotations

import re

from compressor.errors import page_words
from compressor.plan import Plan


def for_page(message: str | BaseException) -> str:
    """A package message as the page shows it: the error's own page wording where it has one."""
    return page_words(message)


def _escape(text: str) -> str:
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", text)


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


def error_md(message: str | BaseException, title: str = "Error") -> str:
    """An error as wrapped text in the page's words (never a one-line code block that cuts it off)."""
    lines = "\n\n".join(_escape(line) for line in for_page(message).splitlines() if line.strip())
    return f"**{title}:** {lines}"


def unexpected(err: Exception) -> str:
    return f"{type(err).__name__}: {err} (the server log has the details)"


def _table_text(text: str) -> str:
    return f"```text\n{text}\n```"


def plan_md(plan: Plan) -> str:
    """The plan table (its warnings once, as a list under it)."""
    table = "\n".join(line for line in plan.table().splitlines() if not line.startswith("warning: "))
    warnings = "".join(f"\n- ⚠ {_escape(w)}" for w in plan.warnings)
    return _table_text(table) + (f"\n\n**Warnings**\n{warnings}" if warnings else "")
