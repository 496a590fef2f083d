"""Messages for the page: the package's errors in the page's words (its fields and buttons, not the CLI's flags
and HF_TOKEN), as wrapped Markdown, and the plan as a table with its warnings.

A recipe field's words come with the error itself (`CompressorError.page`, made from the field's label by
compressor.errors); only the few sentences about things that are not recipe fields (the token, the run folder)
have a page version here."""

from __future__ import annotations

import re

from compressor.errors import page_words
from compressor.plan import Plan

# The CLI's sentences about the token and the run folder → the page's. Whole sentences, tried in order.
_SENTENCES = (
    (
        "pass --token, set HF_TOKEN, or run `hf auth login`",
        "sign in with the button, or paste a token in the Hub token box",
    ),
    ("pass it with --token or HF_TOKEN", "paste it in the Hub token box (or sign in with the button)"),
    ("(--token or HF_TOKEN)", "(paste it in the Hub token box, or sign in with the button)"),
    ("--token-file", "the Hub token box"),
    ("or give another --run-dir", "or change the recipe (each recipe has its own run folder)"),
    ("use another --run-dir, or delete that folder to start over", "change the recipe to start another run"),
    ("invalid recipe from the form: ", "the form does not make a valid recipe yet: "),
)


def for_page(message: str | BaseException) -> str:
    """A package message as the page shows it: the error's page wording (fields, not flags), and the token's and
    the run folder's sentences in the page's words."""
    message = page_words(message)
    for old, new in _SENTENCES:
        message = message.replace(old, new)
    return message


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
