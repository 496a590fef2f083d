"""The page's layout: the form's widgets by section (each with its label and help text), the actions (token,
login, Plan, Run, Jobs, Cancel) and the result tabs (recipe, plan, run, model card). Builds widgets only;
wiring.py connects them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import gradio as gr

from compressor.app.identity import login_available
from compressor.app.jobs_view import flavor_choices
from compressor.app.texts import JOBS_INFO, NAMES, SCORERS, TASK_COLUMNS, TOKEN_INFO, doc, info, label
from compressor.evaluate.config import EvalTask, Evaluate
from compressor.recipe import Calibration, Export, GGUFExport, ModelSource, Prune, Publish, Recipe
from compressor.recover.config import Recover, RecoverData


def _model_widgets(v: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": gr.Textbox(
            v["source"],
            label=label("source"),
            info=info("source", doc(ModelSource, "source")),
            placeholder="llava-hf/llava-1.5-7b-hf or /path/to/model",
        ),
        "revision": gr.Textbox(
            v["revision"],
            label=label("revision"),
            info=info("revision", doc(ModelSource, "revision")),
            placeholder="main",
        ),
    }


def _prune_widgets(v: dict[str, Any]) -> dict[str, Any]:
    w: dict[str, Any] = {
        "method": gr.Radio(
            ["depth", "width"],
            value=v["method"],
            label=label("method"),
            info=info("method", doc(Prune, "method")),
        ),
        # a number box, not a slider: a value out of range gets the recipe's message, never a silent clamp
        "ratio": gr.Number(
            v["ratio"],
            step=0.05,
            label=label("ratio"),
            info=info("ratio", doc(Prune, "ratio") + " Between 0 and 1."),
        ),
        "scorer": gr.Dropdown(
            list(SCORERS[v["method"]]),
            value=v["scorer"],
            label=label("scorer"),
            info=info("scorer", doc(Prune, "scorer")),
        ),
    }
    with gr.Row(visible=v["method"] == "width") as w["width_row"]:
        w["targets"] = gr.CheckboxGroup(
            ["heads", "mlp"],
            value=v["targets"],
            label=label("targets"),
            info=info("targets", doc(Prune, "targets")),
        )
        w["round_to"] = gr.Number(
            v["round_to"],
            precision=0,
            label=label("round_to"),
            info=info("round_to", doc(Prune, "round_to")),
        )
    with gr.Row():
        w["calibration"] = gr.Textbox(
            v["calibration"],
            label=label("calibration"),
            info=info("calibration", doc(Calibration, "dataset")),
        )
        w["num_samples"] = gr.Number(
            v["num_samples"],
            precision=0,
            label=label("num_samples"),
            info=info("num_samples", doc(Calibration, "num_samples")),
        )
    return w


def _recover_widgets(v: dict[str, Any]) -> dict[str, Any]:
    w: dict[str, Any] = {
        "recover_on": gr.Checkbox(
            v["recover_on"], label=label("recover_on"), info=info("recover_on", doc(Recipe, "recover"))
        )
    }
    with gr.Column(visible=v["recover_on"]) as w["recover_box"]:
        w["mode"] = gr.Radio(
            list(get_args(Recover.model_fields["mode"].annotation)),
            value=v["mode"],
            label=label("mode"),
            info=info("mode", doc(Recover, "mode")),
        )
        with gr.Row():
            w["ce"] = gr.Number(v["ce"], label=label("ce"), info=info("ce", doc(Recover, "loss")))
            w["hidden_mse"] = gr.Number(
                v["hidden_mse"], label=label("hidden_mse"), info=info("hidden_mse", "")
            )
        with gr.Row():
            w["fraction"] = gr.Number(
                v["fraction"],
                step=0.05,
                label=label("fraction"),
                info=info("fraction", doc(Recover, "fraction")),
            )
            w["max_steps"] = gr.Number(
                v["max_steps"],
                precision=0,
                label=label("max_steps"),
                info=info("max_steps", doc(Recover, "max_steps")),
            )
        w["train_data"] = gr.Textbox(
            v["train_data"],
            label=label("train_data"),
            info=info(
                "train_data",
                doc(RecoverData, "dataset") + " Several, mixed by weight: SOURCE:WEIGHT, SOURCE:WEIGHT.",
            ),
        )
    return w


def _evaluate_widgets(v: dict[str, Any]) -> dict[str, Any]:
    w: dict[str, Any] = {
        "eval_on": gr.Checkbox(
            v["eval_on"], label=label("eval_on"), info=info("eval_on", doc(Recipe, "evaluate"))
        )
    }
    with gr.Column(visible=v["eval_on"]) as w["eval_box"]:
        gr.Markdown(
            f"**{label('tasks')}** — {doc(Evaluate, 'tasks')} (recipe: evaluate.tasks)\n\n"
            f"*name*: {doc(EvalTask, 'name')}\n\n*dataset*: {doc(EvalTask, 'dataset')}\n\n"
            f"*split*: {doc(EvalTask, 'split')} *limit*: {doc(EvalTask, 'limit')}"
        )
        w["tasks"] = gr.Dataframe(
            v["tasks"] or [["", "", "", None]],
            headers=TASK_COLUMNS,
            datatype=["str", "str", "str", "number"],
            column_count=len(TASK_COLUMNS),
            show_label=False,
        )
        w["speed"] = gr.Checkbox(v["speed"], label=label("speed"), info=info("speed", doc(Evaluate, "speed")))
    return w


def _export_widgets(v: dict[str, Any]) -> dict[str, Any]:
    from compressor.export.stage import QUANTIZER_TYPES, QUANTS

    w: dict[str, Any] = {
        "export_on": gr.Checkbox(
            v["export_on"], label=label("export_on"), info=info("export_on", doc(Export, "gguf"))
        )
    }
    with gr.Column(visible=v["export_on"]) as w["export_box"]:
        w["quants"] = gr.CheckboxGroup(
            list(QUANTS),
            value=v["quants"],
            label=label("quants"),
            info=info(
                "quants",
                doc(GGUFExport, "quants")
                + f" The files go to publish.repo_id + '-GGUF'. {', '.join(QUANTIZER_TYPES)}: only where the "
                "server has llama-quantize (Plan says).",
            ),
        )
    return w


def _publish_widgets(v: dict[str, Any]) -> dict[str, Any]:
    with gr.Row():
        return {
            "repo_id": gr.Textbox(
                v["repo_id"], label=label("repo_id"), info=info("repo_id", doc(Publish, "repo_id"))
            ),
            "private": gr.Checkbox(
                v["private"], label=label("private"), info=info("private", doc(Publish, "private"))
            ),
        }


def _form(v: dict[str, Any], choices: dict[str, Path], chosen: str) -> dict[str, Any]:
    w: dict[str, Any] = {
        "preset": gr.Dropdown(
            list(choices),
            value=chosen,
            label="Start from",
            info="A ready recipe (the embedded default, or one of recipes/); then change what you like.",
            elem_id="preset",
        )
    }
    for title, make in (
        ("Model", _model_widgets),
        ("Prune", _prune_widgets),
        ("Recover", _recover_widgets),
        ("Evaluate", _evaluate_widgets),
        ("Export", _export_widgets),
        ("Publish", _publish_widgets),
    ):
        with gr.Accordion(title, open=True):
            w.update(make(v))
    for name in NAMES:  # stable handles for the browser tests: #w-source, #w-ratio …
        w[name].elem_id = f"w-{name}"
    return w


def _actions(w: dict[str, Any]) -> None:
    with gr.Row():
        w["token"] = gr.Textbox(type="password", label="Hub token", info=TOKEN_INFO, scale=3, elem_id="token")
        if login_available():
            w["login"] = gr.LoginButton(scale=1, elem_id="login")
    w["signed_in"] = gr.Markdown(elem_id="signed-in")
    with gr.Row():
        w["plan_btn"] = gr.Button("Plan", variant="secondary", elem_id="plan")
        w["run_btn"] = gr.Button("Run", variant="primary", elem_id="run")
        w["job_btn"] = gr.Button("Submit to Jobs", variant="primary", visible=False, elem_id="submit-job")
        w["cancel_btn"] = gr.Button("Cancel", variant="stop", interactive=False, elem_id="cancel")
    with gr.Row(elem_id="jobs-row"):
        w["on_jobs"] = gr.Checkbox(
            False, label="Run on Hugging Face Jobs", info=JOBS_INFO, scale=3, elem_id="on-jobs"
        )
        w["flavor"] = gr.Dropdown(
            flavor_choices(),
            value="auto",
            label="Hardware flavour",
            info="auto: the smallest flavour that fits the plan.",
            visible=False,
            scale=2,
            elem_id="flavor",
        )
    w["check"] = gr.Markdown(elem_id="form-check", elem_classes=["wrap-text"])
    w["status"] = gr.Markdown(
        "Pick a preset or fill the form, then **Plan** to preview or **Run** to compress.",
        elem_id="status",
        elem_classes=["wrap-text"],
    )


def _recipe_tab(w: dict[str, Any], yaml_text: str) -> None:
    w["yaml"] = gr.Code(
        yaml_text,
        language="yaml",
        label="Recipe (what the form makes)",
        interactive=False,
        lines=16,
        elem_id="yaml-view",
    )
    w["paste"] = gr.Textbox(
        lines=6, label="Paste a recipe YAML", placeholder="model:\n  source: …\nprune: …", elem_id="paste"
    )
    with gr.Row():
        w["load"] = gr.Button("Fill the form", elem_id="load")
        w["upload"] = gr.UploadButton(
            "Upload a recipe", file_types=[".yaml", ".yml"], type="filepath", elem_id="upload"
        )


def _results(w: dict[str, Any], yaml_text: str) -> None:
    with gr.Tabs() as w["tabs"]:
        with gr.Tab("Recipe", id="recipe"):
            _recipe_tab(w, yaml_text)
        with gr.Tab("Plan", id="plan"):
            w["plan"] = gr.Markdown(elem_id="plan-out", elem_classes=["wrap-text"])
        with gr.Tab("Run", id="run"):
            w["board"] = gr.HTML(elem_id="stage-board")
            w["log"] = gr.Textbox(
                label="Stages",
                lines=10,
                max_lines=10,
                interactive=False,
                autoscroll=True,
                elem_id="stage-log",
            )
            w["url"] = gr.Markdown(elem_id="url")
            w["scores"] = gr.Markdown(elem_id="scores", elem_classes=["wrap-text"])
            # RUN/plots/*.png as the stages write them (hidden until the first one exists)
            w["plots"] = gr.Gallery(
                label="Plots",
                columns=2,
                height="auto",
                object_fit="contain",
                format="png",
                visible=False,
                interactive=False,
                elem_id="plots",
            )
        with gr.Tab("Model card", id="card"):
            w["card"] = gr.Markdown(elem_id="card", elem_classes=["wrap-text"])
