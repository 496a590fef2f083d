"""The Jobs view: "Run on Hugging Face Jobs" submits the form's recipe as a Job with the visitor's own token
and a flavour suggested from the plan, then follows it on the page: its stage, its logs, Cancel, and the pushed
model's link at the end (compressor.jobs does the talking to the Hub)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr

from compressor import api
from compressor.app.board import Shown, pushed_md
from compressor.app.form import _text, recipe_of
from compressor.app.identity import _session, jobs_token
from compressor.app.messages import _escape, _html_escape, error_md
from compressor.errors import CompressorError, page_words
from compressor.recipe import Recipe

log = logging.getLogger("compressor.app")


JOB_LOG_LINES = 400  # the job's log lines the page keeps (the Hub keeps them all)


# session → the Cancel of the Job that page follows (a Job runs on the Hub, not in LINE)
_JOBS: dict[str, threading.Event] = {}


def flavor_choices() -> list[str]:
    from compressor import jobs

    return [jobs.AUTO, *jobs.flavors()]


def flavor_suggestion(on: bool, token: str | None, base: dict[str, Any] | None, *args: Any) -> Any:
    """The flavour dropdown (shown with the Jobs option) set to the smallest flavour that fits the plan."""
    if not on:
        return gr.update(visible=False)
    from compressor import jobs
    from compressor.hardware import jobs_device, suggest_flavor

    try:  # recover.mode auto chooses for Jobs' hardware, as `jobs.resolve_flavor` does
        plan = api.plan(recipe_of(base, args), _text(token), device=jobs_device())
    except Exception as err:  # the Plan button says what is wrong; the dropdown keeps "auto"
        log.info("no flavour suggestion: %s", err)
        return gr.update(visible=True, value=jobs.AUTO, info="auto: the smallest flavour that fits the plan.")
    flavor = suggest_flavor(plan)
    memory = getattr(plan, "memory", None)
    peak = f" (estimated peak {_size(memory.peak_gpu_bytes)} on a GPU)" if memory and memory.gpu else ""
    mode = f"; recovery auto: {plan.recovery.mode} on Jobs" if getattr(plan, "recovery", None) else ""
    return gr.update(visible=True, value=flavor, info=f"Suggested for this plan: {flavor}{peak}{mode}.")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{max(n / 2**20, 0.1):.1f} MiB"


def job_board(job: Any, stage: str, message: str | None = None) -> str:
    cells = [
        ("job", f'<a href="{_html_escape(job.url)}" target="_blank">{_html_escape(job.id)}</a>'),
        ("hardware", _html_escape(job.flavor)),
        ("stage", f'<b data-job-stage="{_html_escape(stage)}">{_html_escape(stage)}</b>'),
    ]
    if message:
        cells.append(("message", _html_escape(message)))
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in cells)
    return f'<table class="stage-board job-board">{rows}</table>'


def job_stream(recipe: Recipe, flavor: str | None, token: str | None, key: str, progress) -> Iterator[Shown]:
    """Submit the recipe as a Hugging Face Job, then follow it: its stage, its logs as they come, Cancel, and
    the pushed model's link at the end. The Job runs on the Hub: a visitor leaving the page does not stop it
    (Cancel does); its page on the Hub keeps its logs."""
    from compressor import jobs

    if key in _JOBS:
        yield (
            error_md("this page already follows a job: cancel it, or wait for it to end"),
            *(gr.skip() for _ in range(6)),
        )
        return
    cancel = _JOBS[key] = threading.Event()
    try:
        progress(0.0, desc="submitting the job")
        yield "Submitting the job…", "", "", "", "", "", gr.update(value=None, visible=False)
        try:
            job = jobs.submit(recipe, flavor or jobs.AUTO, token)
        except CompressorError as err:
            yield error_md(err), "", "", "", "", "", gr.skip()
            return
        log.info("job %s submitted (%s)", job.id, job.flavor)
        lines: list[str] = []
        cancelled, state, url, pushed_gguf = False, None, None, None
        try:
            for seen in jobs.follow(job, token):
                lines += seen.lines
                del lines[:-JOB_LOG_LINES]
                state, url, pushed_gguf = seen.state, seen.pushed, seen.pushed_gguf
                if cancel.is_set() and not cancelled:
                    cancelled = True
                    try:
                        jobs.cancel(job, token)
                    except CompressorError as err:
                        yield (
                            error_md(f"cannot cancel job {job.id}: {page_words(err)}"),
                            *(gr.skip() for _ in range(6)),
                        )
                if seen.ended:
                    break
                stage = state.stage
                progress(None, desc=f"job {stage.lower()}")
                status = (
                    f"**Job {_escape(job.id)}: {stage.lower()}** on {job.flavor}. It runs on the Hub: leaving "
                    f"this page does not stop it ([its page]({job.url})); Cancel does."
                )
                yield status, job_board(job, stage), "\n".join(lines), "", "", "", gr.skip()
        except CompressorError as err:
            yield (
                error_md(f"lost track of job {job.id} ({page_words(err)}); its page: {job.url}"),
                *(gr.skip() for _ in range(6)),
            )
            return
        board = job_board(job, state.stage, state.message)
        text = "\n".join(lines)
        if state.stage == "COMPLETED":
            link = pushed_md(url, pushed_gguf) if url else "*(the job's logs name no pushed model)*"
            yield f"**Job finished** ({_escape(job.id)} on {job.flavor}).", board, text, "", "", link, None
        elif state.stage == "CANCELED":
            yield (
                "**Job cancelled.** Nothing was pushed unless the push had already happened.",
                board,
                text,
                (""),
                "",
                "",
                None,
            )
        else:
            why = f": {state.message}" if state.message else ""
            yield (
                error_md(f"job {job.id} ended {state.stage}{why}; its logs are above"),
                board,
                text,
                "",
                "",
                "",
                (None),
            )
    finally:
        _JOBS.pop(key, None)


def on_job(
    token: str | None,
    base: dict[str, Any] | None,
    flavor: str | None,
    oauth_token: gr.OAuthToken | None = None,
    profile: gr.OAuthProfile | None = None,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
    *args: Any,
) -> Iterator[Shown]:
    """The page's "Submit to Jobs": the form's recipe as a Hugging Face Job, with the visitor's own token."""
    try:
        recipe = recipe_of(base, args)
        token = jobs_token(token, oauth_token, profile)
    except CompressorError as err:
        yield error_md(err), "", "", "", "", "", gr.skip()
        return
    yield from job_stream(recipe, flavor, token, _session(request), progress)
