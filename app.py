"""The Gradio app: widgets ⇄ Recipe, then Plan (config.json only) or Run (the whole pipeline) via compressor.api.

`python app.py` serves it (GRADIO_SERVER_PORT is honoured); tests call `build_app()`. Torch and transformers
are imported only inside the callbacks, through compressor.api, so the UI starts fast. Every label's info
text is the pydantic field's description. The Hub token comes from the password box or, in a Space with
OAuth, from the login button; it is never logged, shown or written to a file.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import queue
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
import yaml
from pydantic import BaseModel

from compressor import api
from compressor.errors import CompressorError
from compressor.evaluate.config import EvalTask, Evaluate
from compressor.plan import Plan
from compressor.recipe import (
    DEFAULT_SCORER,
    DEPTH_SCORERS,
    WIDTH_SCORERS,
    Calibration,
    ModelSource,
    Prune,
    Publish,
    Recipe,
    dump_recipe,
    parse_recipe,
)
from compressor.recover.config import DEFAULT_LOSS, Recover, RecoverData

log = logging.getLogger("compressor.app")

SCORERS = {"depth": DEPTH_SCORERS, "width": WIDTH_SCORERS}
TASK_COLUMNS = ["name", "dataset", "split", "limit"]
# The widgets that make a recipe, in the order every callback receives their values.
NAMES = (
    "source",
    "revision",
    "method",
    "ratio",
    "scorer",
    "targets",
    "round_to",
    "calibration",
    "num_samples",
    "recover_on",
    "mode",
    "ce",
    "hidden_mse",
    "fraction",
    "max_steps",
    "train_data",
    "eval_on",
    "tasks",
    "speed",
    "repo_id",
    "private",
)
INTRO = """# compressor
Structurally prune the language backbone of a multimodal LLM (drop decoder layers, or remove attention
heads and MLP channels), recover it, evaluate it against the original and push it to the Hub.
**Plan** reads `config.json` only; **Run** does the whole job in a run folder that resumes after a crash."""
DEFAULT_IF_ZERO = "(0 or empty: default)"
TOKEN_INFO = "Hub token (read for private/gated sources, write to publish); never stored or shown."


def doc(model: type[BaseModel], field: str) -> str:
    """A field's description: the one place its documentation lives."""
    return model.model_fields[field].description or ""


def oauth_enabled() -> bool:
    """True in a Space with `hf_oauth: true` (SYSTEM=spaces, as Gradio checks, and the OAuth client's id)."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("OAUTH_CLIENT_ID"))


def runs_root() -> Path:
    return Path(os.environ.get("COMPRESSOR_RUNS") or "runs")


# ---------------------------------------------------------------------------- widgets -> recipe


def _put(section: dict[str, Any], key: str, value: Any) -> None:
    """Set a key, or remove it when the widget is empty, so the recipe keeps only what was chosen."""
    if value is None or value == "" or value == []:
        section.pop(key, None)
    else:
        section[key] = value


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _int(value: Any) -> Any:
    """A whole number from a box or a table cell; empty or NaN → None; anything else is left for validation."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value  # the recipe's validation names the field and the bad value
    return None if number != number else int(number)  # number != number: NaN, an empty table cell


def _optional(value: float | None) -> int | None:
    """An optional count: an empty Number box arrives as 0, which means "the default"."""
    return _int(value) or None


def task_rows(table: Any) -> list[list[Any]]:
    """The eval task table as rows, whatever form Gradio hands it in (DataFrame, dict or list)."""
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):
        return table.values.tolist()
    if isinstance(table, dict):
        return list(table.get("data") or [])
    return list(table)


def _tasks(rows: list[list[Any]], old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows → task mappings; fields the table has no column for are kept from the loaded recipe."""
    kept: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for t in old:
        kept.setdefault((t.get("name"), t.get("dataset")), []).append(t)
    tasks = []
    for row in rows:
        name, dataset, split, limit = (list(row) + [None] * 4)[:4]
        name, dataset = _text(name), _text(dataset)
        if not name and not dataset:
            continue
        same = kept.get((name, dataset)) or [{}]
        task = dict(same.pop(0))
        for key, value in (
            ("name", name),
            ("dataset", dataset),
            ("split", _text(split)),
            ("limit", _int(limit)),
        ):
            _put(task, key, value)
        tasks.append(task)
    return tasks


def _prune(prune: dict[str, Any], v: dict[str, Any]) -> None:
    width = v["method"] == "width"
    prune["method"] = v["method"]
    prune["ratio"] = round(float(v["ratio"]), 4)
    _put(prune, "scorer", v["scorer"])
    _put(prune, "targets", list(v["targets"] or []) if width else None)
    _put(prune, "round_to", _int(v["round_to"]) if width else None)
    if v["scorer"] != "angular":
        prune.pop("contiguous", None)
    cal = prune.setdefault("calibration", {})
    _put(cal, "dataset", _text(v["calibration"]))
    _put(cal, "num_samples", _optional(v["num_samples"]))
    if not cal:
        prune.pop("calibration")


def _recover(old: dict[str, Any] | None, v: dict[str, Any]) -> dict[str, Any]:
    rec = copy.deepcopy(old or {})
    rec["mode"] = v["mode"]
    loss = dict(rec.get("loss") or {})
    for term in DEFAULT_LOSS:  # a zero weight the recipe did not name stays out of it
        weight = float(v[term] or 0)
        _put(loss, term, weight if weight or term in loss else None)
    rec["loss"] = loss
    rec["fraction"] = float(v["fraction"])
    _put(rec, "max_steps", _optional(v["max_steps"]))
    data = rec.setdefault("data", {})
    _put(data, "dataset", _text(v["train_data"]))
    if not data:
        rec.pop("data")
    return rec


def _evaluate(old: dict[str, Any] | None, v: dict[str, Any]) -> dict[str, Any]:
    ev = copy.deepcopy(old or {})
    _put(ev, "tasks", _tasks(task_rows(v["tasks"]), ev.get("tasks") or []))
    ev["speed"] = bool(v["speed"])
    return ev


def _publish(old: dict[str, Any] | None, v: dict[str, Any]) -> dict[str, Any] | None:
    repo_id = _text(v["repo_id"])
    if repo_id is None:
        return None
    return {**(old or {}), "repo_id": repo_id, "private": bool(v["private"])}


def recipe_dict(base: dict[str, Any] | None, v: dict[str, Any]) -> dict[str, Any]:
    """The recipe the widgets make, on top of `base` (a loaded recipe), whose other fields are kept."""
    data = copy.deepcopy(base or {})
    model = data.setdefault("model", {})
    _put(model, "source", _text(v["source"]))
    _put(model, "revision", _text(v["revision"]))
    _prune(data.setdefault("prune", {}), v)
    sections = {
        "recover": _recover(data.get("recover"), v) if v["recover_on"] else None,
        "evaluate": _evaluate(data.get("evaluate"), v) if v["eval_on"] else None,
        "publish": _publish(data.get("publish"), v),
    }
    for key, section in sections.items():
        _put(data, key, section)
    return data


def values(args: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(NAMES, args))


def recipe_of(base: dict[str, Any] | None, args: tuple[Any, ...]) -> Recipe:
    return parse_recipe(recipe_dict(base, values(args)), "from the form")


def yaml_view(base: dict[str, Any] | None, *args: Any) -> str:
    """The recipe YAML the widgets make; when it does not validate yet, the reasons lead as comments."""
    data = recipe_dict(base, values(args))
    try:
        return dump_recipe(parse_recipe(data, "from the form"))
    except CompressorError as err:
        comments = "".join(f"# {line}\n" for line in str(err).splitlines())
        return comments + yaml.safe_dump(data, sort_keys=False)


# ---------------------------------------------------------------------------- recipe -> widgets


def widget_values(recipe: Recipe) -> dict[str, Any]:
    p, cal = recipe.prune, recipe.prune.calibration
    rec, ev, pub = recipe.recover or Recover(), recipe.evaluate or Evaluate(), recipe.publish
    return {
        "source": recipe.model.source,
        "revision": recipe.model.revision or "",
        "method": p.method,
        "ratio": p.ratio,
        "scorer": p.scorer_name,
        "targets": list(p.targets or []),
        "round_to": p.round_to,
        "calibration": cal.dataset or "",
        "num_samples": cal.num_samples,
        "recover_on": recipe.recover is not None,
        "mode": rec.mode,
        "ce": rec.loss.get("ce", 0.0),
        "hidden_mse": rec.loss.get("hidden_mse", 0.0),
        "fraction": rec.fraction,
        "max_steps": rec.max_steps,
        "train_data": rec.data.dataset or "",
        "eval_on": recipe.evaluate is not None,
        "tasks": [[t.name, t.dataset, t.split, t.limit] for t in ev.tasks] or None,
        "speed": ev.speed,
        "repo_id": pub.repo_id if pub else "",
        "private": pub.private if pub else False,
    }


def widget_updates(recipe: Recipe) -> list[Any]:
    v = widget_values(recipe)
    updates = {name: gr.update(value=value) for name, value in v.items()}
    updates["scorer"] = gr.update(choices=list(SCORERS[v["method"]]), value=v["scorer"])
    updates["tasks"] = gr.update(value=v["tasks"] or [["", "", "", None]])
    return [updates[name] for name in NAMES]


def load_yaml(text: str) -> tuple[Any, ...]:
    """Pasted or uploaded recipe YAML → (base, status, *widget updates); a bad recipe changes nothing."""

    def refused(message: str) -> tuple[Any, ...]:
        return (gr.update(), error_md(message), *(gr.update() for _ in NAMES))

    try:
        data = yaml.safe_load(text or "")
    except yaml.YAMLError as err:
        return refused(f"the recipe is not valid YAML: {err}")
    if not isinstance(data, dict):
        return refused("a recipe is a YAML mapping with model: and prune: sections")
    try:
        recipe = parse_recipe(data, "(pasted)")
    except CompressorError as err:
        return refused(str(err))
    base = recipe.model_dump(mode="json", exclude_unset=True)
    return (base, "Recipe loaded into the form.", *widget_updates(recipe))


def read_upload(path: str | None) -> str:
    return Path(path).read_text() if path else ""


def method_changed(method: str, scorer: str | None) -> tuple[Any, Any]:
    """The scorer list follows the method (a scorer that fits both is kept); width options show for width."""
    choices = list(SCORERS[method])
    value = scorer if scorer in choices else DEFAULT_SCORER[method]
    return gr.update(choices=choices, value=value), gr.update(visible=method == "width")


# ---------------------------------------------------------------------------- plan and run


def error_md(message: str) -> str:
    return f"**Error**\n\n```text\n{message}\n```"


def unexpected(err: Exception) -> str:
    return f"{type(err).__name__}: {err} (the server log has the details)"


def resolve_token(text: str | None, oauth_token: gr.OAuthToken | None) -> str | None:
    """The password box wins; else the Space login's token; else None (huggingface_hub's own lookup)."""
    return _text(text) or (oauth_token.token if oauth_token is not None else None)


def plan_md(plan: Plan) -> str:
    warnings = "".join(f"\n- ⚠ {w}" for w in plan.warnings)
    return f"```text\n{plan.table()}\n```" + (f"\n\n**Warnings**\n{warnings}" if warnings else "")


def on_plan(
    token: str | None, base: dict[str, Any] | None, oauth_token: gr.OAuthToken | None = None, *args: Any
) -> tuple[str, str]:
    """(status, plan) — the plan table and its warnings, from config.json only."""
    try:
        plan = api.plan(recipe_of(base, args), resolve_token(token, oauth_token))
    except CompressorError as err:
        return error_md(str(err)), ""
    except Exception as err:  # the server log keeps the traceback; the page gets one clear line
        log.exception("plan failed")
        return error_md(unexpected(err)), ""
    return "Plan ready: nothing was downloaded but config.json.", plan_md(plan)


def run_folder(root: Path, recipe: Recipe) -> Path:
    """One folder per recipe (named by its content), so running the same recipe again resumes it."""
    digest = hashlib.sha256(dump_recipe(recipe).encode()).hexdigest()[:10]
    name = re.sub(r"[^\w.-]+", "-", Path(recipe.model.source.rstrip("/")).name).strip("-") or "model"
    return root / f"{name}-{recipe.prune.method}{round(recipe.prune.ratio * 100)}-{digest}"


class _QueueHandler(logging.Handler):
    """Feeds the compressor's log lines of one thread into the stage log."""

    def __init__(self, events: queue.Queue, thread: int) -> None:
        super().__init__(logging.INFO)
        self.events, self.thread = events, thread

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.events.put(("log", record.getMessage()))


@contextmanager
def _logs_to(events: queue.Queue) -> Iterator[None]:
    logger = logging.getLogger("compressor")
    handler = _QueueHandler(events, threading.get_ident())
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _worker(recipe: Recipe, run_dir: Path, token: str | None, events: queue.Queue) -> None:
    with _logs_to(events):
        try:
            summary = api.run(
                recipe, run_dir, token, on_stage=lambda s, state: events.put(("stage", s, state))
            )
            events.put(("done", summary))
        except CompressorError as err:
            events.put(("error", str(err)))
        except Exception as err:  # the server log keeps the traceback; the page gets one clear line
            log.exception("run failed in %s", run_dir)
            events.put(("error", unexpected(err)))


def _stage_fraction(stage: str, state: str) -> float:
    i = api.STAGES.index(stage) if stage in api.STAGES else 0
    return (i + (state != "start")) / len(api.STAGES)


def results(summary: dict[str, Any]) -> tuple[str, str, str]:
    """(eval table, card body, pushed URL) from the run folder's files."""
    from compressor.evaluate.report import EvalReport

    report = Path(summary["run_dir"]) / "reports" / "eval.json"
    table = EvalReport.model_validate_json(report.read_text()).table() if report.is_file() else ""
    card = Path(summary["model"]) / "README.md"
    body = re.sub(r"\A---\n.*?\n---\n", "", card.read_text(), flags=re.S) if card.is_file() else ""
    url = summary.get("url")
    return (
        f"```text\n{table}\n```" if table else "*(no evaluation in this recipe)*",
        body,
        f"Pushed to [{url}]({url})" if url else "*(not pushed: no publish repo in this recipe)*",
    )


def on_run(
    token: str | None,
    base: dict[str, Any] | None,
    oauth_token: gr.OAuthToken | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio recognises the progress tracker by this default)
    *args: Any,
) -> Iterator[tuple[str, str, str, str, str]]:
    """Yields (status, stage log, eval table, card, URL) as the run goes: plan, prune, recover, eval, card, push."""
    try:
        recipe = recipe_of(base, args)
    except CompressorError as err:
        yield error_md(str(err)), "", "", "", ""
        return
    run_dir = run_folder(runs_root(), recipe)
    events: queue.Queue = queue.Queue()
    threading.Thread(
        target=_worker, args=(recipe, run_dir, resolve_token(token, oauth_token), events), daemon=True
    ).start()
    lines = [f"run folder: {run_dir}"]
    progress(0.0, desc="starting")
    yield "Running…", "\n".join(lines), "", "", ""
    while True:
        kind, *rest = events.get()
        if kind == "stage":
            stage, state = rest
            lines.append(f"[{stage}] {state}")
            progress(_stage_fraction(stage, state), desc=f"{stage}: {state}")
        elif kind == "log":
            lines.append(f"    {rest[0]}")
        elif kind == "error":
            yield error_md(rest[0]), "\n".join(lines), "", "", ""
            return
        else:
            try:
                shown = results(rest[0])
            except (OSError, ValueError) as err:  # a damaged report file: the run itself finished
                shown = (error_md(f"cannot show the results: {err}"), "", "")
            yield "Run finished.", "\n".join(lines), *shown
            return
        yield "Running…", "\n".join(lines), "", "", ""


# ---------------------------------------------------------------------------- layout


def _model_widgets() -> dict[str, Any]:
    return {
        "source": gr.Textbox(
            label="model.source",
            info=doc(ModelSource, "source"),
            placeholder="llava-hf/llava-1.5-7b-hf or /path/to/model",
        ),
        "revision": gr.Textbox(
            label="model.revision",
            info=doc(ModelSource, "revision"),
            placeholder="main",
        ),
    }


def _prune_widgets() -> dict[str, Any]:
    w: dict[str, Any] = {
        "method": gr.Radio(
            ["depth", "width"],
            value="width",
            label="prune.method",
            info=doc(Prune, "method"),
        ),
        "ratio": gr.Slider(0.01, 0.99, value=0.3, step=0.01, label="prune.ratio", info=doc(Prune, "ratio")),
        "scorer": gr.Dropdown(
            list(WIDTH_SCORERS),
            value=DEFAULT_SCORER["width"],
            label="prune.scorer",
            info=doc(Prune, "scorer"),
        ),
    }
    with gr.Row() as w["width_row"]:
        w["targets"] = gr.CheckboxGroup(["heads", "mlp"], label="prune.targets", info=doc(Prune, "targets"))
        w["round_to"] = gr.Number(
            64,
            precision=0,
            minimum=1,
            label="prune.round_to",
            info=doc(Prune, "round_to"),
        )
    with gr.Row():
        w["calibration"] = gr.Textbox(label="prune.calibration.dataset", info=doc(Calibration, "dataset"))
        w["num_samples"] = gr.Number(
            None,
            precision=0,
            minimum=0,
            label=f"prune.calibration.num_samples {DEFAULT_IF_ZERO}",
            info=doc(Calibration, "num_samples"),
        )
    return w


def _recover_widgets() -> dict[str, Any]:
    w: dict[str, Any] = {"recover_on": gr.Checkbox(False, label="recover", info=doc(Recipe, "recover"))}
    with gr.Column(visible=False) as w["recover_box"]:
        w["mode"] = gr.Radio(
            ["projector", "lora", "full"], value="lora", label="recover.mode", info=doc(Recover, "mode")
        )
        with gr.Row():
            w["ce"] = gr.Number(0.5, minimum=0, label="recover.loss.ce", info=doc(Recover, "loss"))
            w["hidden_mse"] = gr.Number(0.5, minimum=0, label="recover.loss.hidden_mse")
        with gr.Row():
            w["fraction"] = gr.Slider(
                0.01, 1.0, value=0.05, step=0.01, label="recover.fraction", info=doc(Recover, "fraction")
            )
            w["max_steps"] = gr.Number(
                None,
                precision=0,
                minimum=0,
                label=f"recover.max_steps {DEFAULT_IF_ZERO}",
                info=doc(Recover, "max_steps"),
            )
        w["train_data"] = gr.Textbox(label="recover.data.dataset", info=doc(RecoverData, "dataset"))
    return w


def _evaluate_widgets() -> dict[str, Any]:
    w: dict[str, Any] = {"eval_on": gr.Checkbox(False, label="evaluate", info=doc(Recipe, "evaluate"))}
    with gr.Column(visible=False) as w["eval_box"]:
        gr.Markdown(
            f"**evaluate.tasks** — {doc(Evaluate, 'tasks')}\n\n*name*: {doc(EvalTask, 'name')}\n\n"
            f"*dataset*: {doc(EvalTask, 'dataset')}\n\n*split*: {doc(EvalTask, 'split')} "
            f"*limit*: {doc(EvalTask, 'limit')}"
        )
        w["tasks"] = gr.Dataframe(
            [["", "", "", None]],
            headers=TASK_COLUMNS,
            datatype=["str", "str", "str", "number"],
            column_count=len(TASK_COLUMNS),
            show_label=False,
        )
        w["speed"] = gr.Checkbox(True, label="evaluate.speed", info=doc(Evaluate, "speed"))
    return w


def _publish_widgets() -> dict[str, Any]:
    with gr.Row():
        return {
            "repo_id": gr.Textbox(label="publish.repo_id", info=doc(Publish, "repo_id")),
            "private": gr.Checkbox(False, label="publish.private", info=doc(Publish, "private")),
        }


def _form() -> dict[str, Any]:
    w: dict[str, Any] = {}
    for title, make in (
        ("Model", _model_widgets),
        ("Prune", _prune_widgets),
        ("Recover", _recover_widgets),
        ("Evaluate", _evaluate_widgets),
        ("Publish", _publish_widgets),
    ):
        with gr.Accordion(title, open=True):
            w.update(make())
    for name in NAMES:  # stable handles for the browser tests: #w-source, #w-ratio …
        w[name].elem_id = f"w-{name}"
    return w


def _actions(w: dict[str, Any]) -> None:
    with gr.Row():
        w["token"] = gr.Textbox(type="password", label="Hub token", info=TOKEN_INFO, scale=3, elem_id="token")
        if oauth_enabled():
            gr.LoginButton(scale=1)
    with gr.Row():
        w["plan_btn"] = gr.Button("Plan", variant="secondary", elem_id="plan")
        w["run_btn"] = gr.Button("Run", variant="primary", elem_id="run")
    w["status"] = gr.Markdown(
        "Fill the form, then **Plan** to preview or **Run** to compress.", elem_id="status"
    )


def _recipe_tab(w: dict[str, Any]) -> None:
    w["yaml"] = gr.Code(
        yaml_view({}, *(w[n].value for n in NAMES)),
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


def _results(w: dict[str, Any]) -> None:
    with gr.Tabs() as w["tabs"]:
        with gr.Tab("Recipe", id="recipe"):
            _recipe_tab(w)
        with gr.Tab("Plan", id="plan"):
            w["plan"] = gr.Markdown(elem_id="plan-out")
        with gr.Tab("Run", id="run"):
            w["log"] = gr.Textbox(
                label="Stages", lines=8, max_lines=20, interactive=False, elem_id="stage-log"
            )
            w["url"] = gr.Markdown(elem_id="url")
            w["scores"] = gr.Markdown(elem_id="scores")
        with gr.Tab("Model card", id="card"):
            w["card"] = gr.Markdown(elem_id="card")


def _wire(w: dict[str, Any], base: gr.State) -> None:
    form = [w[n] for n in NAMES]
    gr.on(
        [c.change for c in form], yaml_view, inputs=[base, *form], outputs=w["yaml"], show_progress="hidden"
    )
    w["method"].change(method_changed, [w["method"], w["scorer"]], [w["scorer"], w["width_row"]])
    w["recover_on"].change(lambda on: gr.update(visible=on), w["recover_on"], w["recover_box"])
    w["eval_on"].change(lambda on: gr.update(visible=on), w["eval_on"], w["eval_box"])
    loaded = [base, w["status"], *form]
    # then the YAML again: a recipe that differs only in fields without a widget changes no widget
    w["load"].click(load_yaml, w["paste"], loaded).then(yaml_view, [base, *form], w["yaml"])
    w["upload"].upload(read_upload, w["upload"], w["paste"]).then(load_yaml, w["paste"], loaded).then(
        yaml_view, [base, *form], w["yaml"]
    )
    show = {tab: (lambda tab=tab: gr.Tabs(selected=tab)) for tab in ("plan", "run")}
    w["plan_btn"].click(show["plan"], None, w["tabs"]).then(
        on_plan, [w["token"], base, *form], [w["status"], w["plan"]]
    )
    w["run_btn"].click(show["run"], None, w["tabs"]).then(
        on_run,
        [w["token"], base, *form],
        [w["status"], w["log"], w["scores"], w["card"], w["url"]],
        concurrency_limit=1,
    )


def build_app() -> gr.Blocks:
    """The app's Blocks, not launched: `build_app().queue().launch()`."""
    with gr.Blocks(title="compressor", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        base = gr.State({})  # the loaded recipe: fields the form has no widget for survive
        with gr.Row():
            with gr.Column(scale=3):
                w = _form()
            with gr.Column(scale=2):
                _actions(w)
                _results(w)
        _wire(w, base)
    return demo


def main() -> None:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("compressor").setLevel(logging.INFO)
    build_app().queue().launch(run_history=False)


if __name__ == "__main__":
    main()
