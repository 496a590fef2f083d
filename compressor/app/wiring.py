"""The wiring: `build_app()` lays the page out (layout.py) and connects each widget and button to its
callback (form, identity, run, jobs_view) and the API's named endpoints (endpoints.py); `main()` serves it."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from compressor.app.endpoints import api_plan, api_run, api_run_on_jobs
from compressor.app.form import (
    default_preset,
    load_preset,
    load_yaml,
    method_changed,
    on_preset,
    presets,
    read_upload,
    widget_values,
    yaml_view,
)
from compressor.app.identity import follow_repo, on_load
from compressor.app.jobs_view import flavor_suggestion, on_job
from compressor.app.layout import _actions, _form, _results
from compressor.app.run import on_cancel, on_plan, on_run, on_unload
from compressor.app.texts import CSS, FOLLOW_LOG, INTRO, NAMES


def launch_options() -> dict[str, Any]:
    """What `launch()` needs besides host and port (Gradio 6 takes the page's CSS there)."""
    return {"css": CSS, "run_history": False}


def run_controls(running: bool) -> tuple[Any, Any]:
    """(Run, Cancel): Run is disabled and Cancel enabled while a run goes."""
    return gr.update(interactive=not running), gr.update(interactive=running)


PRIVATE = {"api_visibility": "private"}  # the page's own wiring; the API is the named endpoints below


def _wire(w: dict[str, Any], base: gr.State, auto: gr.State, demo: gr.Blocks) -> None:
    form = [w[n] for n in NAMES]
    shown = [w["yaml"], w["check"]]
    gr.on(
        [c.change for c in form],
        yaml_view,
        inputs=[base, *form],
        outputs=shown,
        show_progress="hidden",
        **PRIVATE,
    )
    w["method"].change(method_changed, [w["method"], w["scorer"]], [w["scorer"], w["width_row"]], **PRIVATE)
    w["recover_on"].change(lambda on: gr.update(visible=on), w["recover_on"], w["recover_box"], **PRIVATE)
    w["eval_on"].change(lambda on: gr.update(visible=on), w["eval_on"], w["eval_box"], **PRIVATE)
    w["export_on"].change(lambda on: gr.update(visible=on), w["export_on"], w["export_box"], **PRIVATE)
    loaded = [base, w["status"], *form]
    # then the YAML again: a recipe that differs only in fields without a widget changes no widget
    w["load"].click(load_yaml, w["paste"], loaded, **PRIVATE).then(yaml_view, [base, *form], shown, **PRIVATE)
    w["upload"].upload(read_upload, w["upload"], w["paste"], **PRIVATE).then(
        load_yaml, w["paste"], loaded, **PRIVATE
    ).then(yaml_view, [base, *form], shown, **PRIVATE)
    w["preset"].input(on_preset, w["preset"], loaded, **PRIVATE).then(
        yaml_view, [base, *form], shown, **PRIVATE
    )
    pruning = [w["source"], w["method"], w["ratio"]]
    gr.on(
        [c.change for c in pruning],
        follow_repo,
        [auto, *pruning, w["repo_id"]],
        [w["repo_id"], auto],
        show_progress="hidden",
        **PRIVATE,
    )
    demo.load(on_load, [*pruning, w["repo_id"]], [w["repo_id"], w["signed_in"], auto], **PRIVATE)
    show = {tab: (lambda tab=tab: gr.Tabs(selected=tab)) for tab in ("plan", "run")}
    suggest = [w["on_jobs"], w["token"], base, *form]
    w["plan_btn"].click(show["plan"], None, w["tabs"], **PRIVATE).then(
        on_plan, [w["token"], base, *form], [w["status"], w["plan"]], **PRIVATE
    ).then(flavor_suggestion, suggest, w["flavor"], show_progress="hidden", **PRIVATE)
    w["on_jobs"].change(
        lambda on: (gr.update(visible=not on), gr.update(visible=on)),
        w["on_jobs"],
        [w["run_btn"], w["job_btn"]],
        **PRIVATE,
    ).then(flavor_suggestion, suggest, w["flavor"], **PRIVATE)
    controls = [w["run_btn"], w["cancel_btn"]]
    outputs = [w[n] for n in ("status", "board", "log", "scores", "card", "url", "plots")]
    # concurrency_limit=None: every visitor's Run is taken at once and waits in the app's own line (LINE),
    # which runs one at a time and tells each visitor their place
    w["run_btn"].click(
        lambda: (*run_controls(True), gr.Tabs(selected="run")), None, [*controls, w["tabs"]], **PRIVATE
    ).then(
        on_run,
        [w["token"], base, *form],
        outputs,
        concurrency_limit=None,
        show_progress="minimal",
        show_progress_on=w["board"],  # the status (the place in line) and the log stay readable
        **PRIVATE,
    ).then(lambda: run_controls(False), None, controls, **PRIVATE)
    jobs_controls = [w["job_btn"], w["cancel_btn"]]
    w["job_btn"].click(
        lambda: (*run_controls(True), gr.Tabs(selected="run")), None, [*jobs_controls, w["tabs"]], **PRIVATE
    ).then(
        on_job,
        [w["token"], base, w["flavor"], *form],
        outputs,
        concurrency_limit=None,
        show_progress="hidden",  # the job board says its stage; a pending overlay would only dim it
        **PRIVATE,
    ).then(lambda: run_controls(False), None, jobs_controls, **PRIVATE)
    w["cancel_btn"].click(on_cancel, None, w["status"], queue=False, api_name="cancel")
    demo.unload(on_unload)
    # the Stages box follows its last line (Gradio's autoscroll misses updates of a read-only box)
    w["log"].change(None, None, None, js=FOLLOW_LOG, **PRIVATE)
    # the API: a recipe's YAML in, the page's outputs out (README, "The app's API")
    with gr.Group(visible=False):
        recipe = gr.Textbox(label="recipe")
        token = gr.Textbox(label="token", type="password")
        flavor = gr.Textbox(label="flavor")
        plan_go, run_go, jobs_go = gr.Button("plan"), gr.Button("run"), gr.Button("run_on_jobs")
    plan_go.click(api_plan, [recipe, token], [w["status"], w["plan"]], api_name="plan")
    run_go.click(api_run, [recipe, token], outputs, concurrency_limit=None, api_name="run")
    jobs_go.click(
        api_run_on_jobs, [recipe, flavor, token], outputs, concurrency_limit=None, api_name="run_on_jobs"
    )


def build_app() -> gr.Blocks:
    """The app's Blocks, not launched: `build_app().queue().launch(**launch_options())`."""
    choices = presets()
    chosen = default_preset(choices)
    recipe = load_preset(chosen)
    initial = widget_values(recipe)
    initial["tasks"] = initial["tasks"] or None
    initial_args = tuple(initial[n] for n in NAMES)
    # delete_cache: the copies Gradio keeps of uploads and plots go after an hour
    with gr.Blocks(title="compressor", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        base = gr.State(recipe.model_dump(mode="json", exclude_unset=True))  # fields without a widget survive
        auto = gr.State({"user": None, "repo": None})  # the signed-in user and the repo suggested for them
        with gr.Row():
            with gr.Column(scale=3):
                w = _form(initial, choices, chosen)
            with gr.Column(scale=2, elem_id="results-col"):
                _actions(w)
                _results(w, yaml_view(recipe.model_dump(mode="json", exclude_unset=True), *initial_args)[0])
        _wire(w, base, auto, demo)
    return demo


def main() -> None:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("compressor").setLevel(logging.INFO)
    build_app().queue().launch(**launch_options())
