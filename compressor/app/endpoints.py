"""The app's API (README, "The app's API"): the named endpoints `/plan`, `/run` and `/run_on_jobs`, each taking
a recipe's YAML and a token and answering what the page's own buttons show (`/cancel` is the Cancel button's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from compressor.app.board import Shown
from compressor.app.form import _text, widget_values
from compressor.app.identity import _session
from compressor.app.jobs_view import job_stream
from compressor.app.messages import error_md
from compressor.app.run import on_plan, run_stream
from compressor.app.texts import NAMES
from compressor.errors import CompressorError
from compressor.recipe import Recipe, recipe_from_text


def recipe_from_yaml(text: str | None) -> Recipe:
    """A recipe's YAML text (as the API takes it) → Recipe, or a CompressorError that says what is wrong."""
    return recipe_from_text(text, "(api)")


def api_plan(recipe: str, token: str | None) -> tuple[str, str]:
    """API `/plan`: a recipe's YAML and a Hub token (or empty) → (status, plan table with its warnings)."""
    try:
        parsed = recipe_from_yaml(recipe)
    except CompressorError as err:
        return error_md(err), ""
    return on_plan(token, parsed.model_dump(mode="json", exclude_unset=True), None, *_form_values(parsed))


def api_run(
    recipe: str,
    token: str | None,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> Iterator[Shown]:
    """API `/run`: a recipe's YAML and a Hub token (or empty) → the page's Run stream, in the caller's own
    session (its own run folder, its place in the same line)."""
    try:
        parsed = recipe_from_yaml(recipe)
    except CompressorError as err:
        yield error_md(err), "", "", "", "", "", gr.skip()
        return
    yield from run_stream(parsed, _text(token), request, None, progress)


def _form_values(recipe: Recipe) -> tuple[Any, ...]:
    v = widget_values(recipe)
    return tuple(v[n] for n in NAMES)


def api_run_on_jobs(
    recipe: str,
    flavor: str,
    token: str,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> Iterator[Shown]:
    """API `/run_on_jobs`: a recipe's YAML, a flavour (or "auto") and the caller's write token → the job's
    stream (status, job board, logs, "", "", pushed link, None)."""
    try:
        parsed = recipe_from_yaml(recipe)
        if not _text(token):
            raise CompressorError("a Hugging Face Job runs with your own token: give a write token")
    except CompressorError as err:
        yield error_md(err), "", "", "", "", "", gr.skip()
        return
    yield from job_stream(parsed, _text(flavor), _text(token), _session(request), progress)
