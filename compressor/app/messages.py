"""Messages for the page: the package's errors in the page's words (its fields and buttons, not the CLI's flags
and HF_TOKEN), as wrapped Markdown, and the plan as a table with its warnings."""

from __future__ import annotations

import re

from compressor.app.texts import LABELS
from compressor.errors import FLAGS
from compressor.plan import Plan

# The CLI's words in the package's messages → the page's. Tried in order; the first ones are the longest.
_TOKEN_FIXES = (
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


def _key_words(key: str) -> str | None:
    """'prune.ratio' → '“Share of parameters to remove”': the widget that sets a recipe key, if one does."""
    for name, (text, widget_key) in LABELS.items():
        if widget_key == key and name not in ("hidden_mse",):
            return f"“{text}”"
    return None


def for_page(message: str) -> str:
    """A package message with the CLI's flags and HF_TOKEN replaced by the form's fields and buttons."""
    for old, new in _TOKEN_FIXES:
        message = message.replace(old, new)
    for key, flag in sorted(FLAGS.items(), key=lambda kv: -len(kv[1])):
        words = _key_words(key)
        if words is None or "--" not in flag:
            continue
        message = message.replace(f"{key} ({flag})", f"{words} ({key})")
        message = re.sub(
            rf"\b(?:pass|give) {re.escape(flag)}(?![\w-])(?: [A-Z]+\b)?", f"fill in {words}", message
        )
        message = re.sub(rf"{re.escape(flag)}(?![\w-])(?: [A-Z]+\b)?", words, message)
    return message


def _escape(text: str) -> str:
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", text)


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


def error_md(message: str, title: str = "Error") -> str:
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
