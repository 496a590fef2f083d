"""The page's Plan and Run: the plan from config.json only; a run in the visitor's own run folder (one folder
per recipe, so running it again resumes), through the waiting line, in a child process, its stage board,
log and plots streamed to the page; Cancel, and the visitor leaving, stop it."""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from compressor import api
from compressor.app.board import Board, PlotWatch, Shown, results
from compressor.app.child import STOP_GRACE_S, Child
from compressor.app.form import export_refusal, recipe_of
from compressor.app.identity import resolve_token
from compressor.app.jobs_view import _JOBS
from compressor.app.line import LINE, Ticket, ordinal, waiting_md
from compressor.app.messages import error_md, plan_md, unexpected
from compressor.errors import CompressorError
from compressor.recipe import Recipe
from compressor.runs import run_folder, runs_root, safe_name

log = logging.getLogger("compressor.app")


def visitor_root(root: Path, request: gr.Request | None, profile: gr.OAuthProfile | None) -> Path:
    """Each visitor's own runs: a signed-in user's folder (their runs resume across visits), else the browser
    session's. No visitor sees, resumes or pushes another's run, and a run is pushed only with the token of
    the visitor who runs it (the token is passed per run, never kept)."""
    user = getattr(profile, "username", None) if profile is not None else None
    who = f"user-{user}" if user else f"session-{getattr(request, 'session_hash', None) or uuid.uuid4().hex}"
    return root / safe_name(who)


def _heavy_stage_done(run_dir: Path) -> bool:
    return any((run_dir / "reports").glob("*.json"))


def on_plan(
    token: str | None, base: dict[str, Any] | None, oauth_token: gr.OAuthToken | None = None, *args: Any
) -> tuple[str, str]:
    """(status, plan) — the plan table and its warnings, from config.json only. An export this server cannot
    run (a k-quant without llama-quantize) is the status's error, above the plan it would have."""
    try:
        recipe = recipe_of(base, args)
        plan = api.plan(recipe, resolve_token(token, oauth_token))
    except CompressorError as err:
        return error_md(err), ""
    except Exception as err:  # the server log keeps the traceback; the page gets one clear line
        log.exception("plan failed")
        return error_md(unexpected(err)), ""
    refusal = export_refusal(recipe)
    if refusal:
        return error_md(refusal), plan_md(plan)
    return "Plan ready: nothing was downloaded but config.json.", plan_md(plan)


def run_stream(
    recipe: Recipe, token: str | None, request: gr.Request | None, profile: gr.OAuthProfile | None, progress
) -> Iterator[Shown]:
    """Take a place in the line, wait for it (showing the place), then run in a child process.

    Yields at least once a second, so that Gradio can close the stream when the visitor leaves (which stops
    the run: the `finally` blocks)."""
    key = getattr(request, "session_hash", None) or uuid.uuid4().hex
    try:
        ticket = LINE.join(key)
    except CompressorError as err:
        yield error_md(err), *(gr.skip() for _ in range(6))
        return
    try:
        shown = None
        while (place := LINE.place(ticket)) > 0:
            if ticket.cancel.is_set():
                yield "**Run cancelled** before it started: you left the line.", "", "", "", "", "", gr.skip()
                return
            if place != shown:
                shown = place
                progress(0.0, desc=f"waiting: {ordinal(place + 1)} in line")
                yield waiting_md(place), "", "", "", "", "", gr.update(value=None, visible=False)
            else:
                yield gr.skip()
            LINE.wait(1.0)
        yield from _execute(ticket, recipe, token, request, profile, progress)
    finally:
        LINE.leave(ticket)


def _execute(
    ticket: Ticket,
    recipe: Recipe,
    token: str | None,
    request: gr.Request | None,
    profile: gr.OAuthProfile | None,
    progress,
) -> Iterator[Shown]:
    run_dir = run_folder(visitor_root(runs_root(), request, profile), recipe)
    existed = run_dir.exists()
    board = Board(recipe, run_dir)
    plots = PlotWatch(run_dir)
    progress(0.0, desc="starting")
    child = Child(recipe, run_dir, token)
    end: tuple[Any, ...] | None = None
    try:
        yield "Running…", board.html(), board.text(), "", "", "", plots.update()
        while end is None:
            batch = []
            with contextlib.suppress(queue.Empty):
                batch.append(child.events.get(timeout=0.5))
                while True:  # one page update for whatever came meanwhile
                    batch.append(child.events.get_nowait())
            for kind, *rest in batch:
                if end is not None:
                    continue
                if kind in ("done", "error"):
                    end = (kind, *rest)
                elif kind == "exit":  # it ended without saying why: killed (out of memory?) or crashed
                    code = child.proc.wait()
                    end = (
                        "error",
                        f"the run stopped unexpectedly (exit code {code}); the server log has more",
                    )
                else:
                    board.event(kind, *rest)
            if end is None and ticket.cancel.is_set():
                child.stop()
                end = ("cancelled",)
            if not batch and end is None:
                yield gr.skip()  # nothing new: a heartbeat, so that a closed stream is noticed
                continue
            running = [s for s, v in board.state.items() if v == "running"]
            bar = board.bar.get(running[0]) if running else None
            desc = f"{running[0]} {bar[0]}/{bar[1]}" if bar else (running[0] if running else "running")
            progress(board.fraction(), desc=desc)
            if end is None:
                yield "Running…", board.html(), board.text(), "", "", "", plots.update()
        kind, *rest = end
        if kind == "done":
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(STOP_GRACE_S)  # it has finished: let it exit by itself
            try:
                shown = results(rest[0])
            except (OSError, ValueError) as err:  # a damaged report file: the run itself finished
                shown = (error_md(f"cannot show the results: {err}"), "", "")
            status = f"Run finished (run folder {run_dir.name}: running the same recipe again resumes it)."
            yield from plots.last()
            yield status, board.html(), board.text(), *shown, plots.images
            return
        child.stop()
        kept = existed or _heavy_stage_done(run_dir)
        if not kept:  # a run that finished no stage leaves no folder behind
            shutil.rmtree(run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                run_dir.parent.rmdir()  # the visitor's folder, when this was their only run
        board.stopped("cancelled" if kind == "cancelled" else "failed")
        resumes = f"The finished stages stay in run folder {run_dir.name}: Run resumes after them."
        if kind == "cancelled":
            status = "**Run cancelled.** " + (resumes if kept else "Nothing was kept.")
        else:
            status = error_md(board.hide_paths(rest[0])) + (f"\n\n{resumes}" if kept else "")
        if kept:
            yield from plots.last()
        yield status, board.html(), board.text(), "", "", "", plots.images if kept else None
    finally:
        child.stop()  # the visitor left, or Gradio closed the stream: the run stops with it


def on_run(
    token: str | None,
    base: dict[str, Any] | None,
    oauth_token: gr.OAuthToken | None = None,
    profile: gr.OAuthProfile | None = None,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio recognises the progress tracker by this default)
    *args: Any,
) -> Iterator[Shown]:
    """The page's Run: yields (status, stage board, stage log, eval table, card, URL, plots) as the run goes:
    its place in the line while it waits, then plan, prune, recover, eval, export, card, push, with the scored
    samples, the training steps and losses, and the plots as they are written."""
    try:
        recipe = recipe_of(base, args)
    except CompressorError as err:
        yield error_md(err), "", "", "", "", "", gr.skip()
        return
    yield from run_stream(recipe, resolve_token(token, oauth_token), request, profile, progress)


def on_cancel(request: gr.Request = None) -> str:
    """Cancel this page's run (it is stopped, its processes killed, its finished stages kept), its place
    in the line, or the Hugging Face Job it follows."""
    key = getattr(request, "session_hash", None) or ""
    job = _JOBS.get(key)
    if job is not None:
        job.set()
        return "Cancelling the job…"
    if not LINE.cancel(key):
        return "No run is going."
    return "Cancelling: the run is being stopped…"


def on_unload(request: gr.Request = None) -> None:
    """The visitor closed or reloaded the page: their run (or their place in the line) goes too."""
    LINE.cancel(getattr(request, "session_hash", None) or "")
