"""The Gradio app: widgets ⇄ Recipe, then Plan (config.json only) or Run (the whole pipeline) via compressor.api.

`python app.py` serves it (GRADIO_SERVER_PORT and GRADIO_SERVER_NAME are honoured); tests call `build_app()`
and launch it with `launch_options()`. Torch and transformers are imported only inside the callbacks, through
compressor.api, so the UI starts fast. Labels are plain words; each info text is the pydantic field's
description and names the recipe key. The form opens on a valid preset (the embedded default
`demo/tiny-llava` when the configured Hub serves it, else the smallest recipe of recipes/). The Hub token comes
from the password box or the login button (a Space's OAuth, or Gradio's local stand-in, which signs in as the
machine's saved Hub user); it is never logged, shown or written to a file.

A run executes in a child process of its own (`Child`: its own process group and temporary folder), so Cancel,
or the visitor closing the page, really stops it; its run folder stays resumable (api.run writes each stage's
record atomically). One run goes at a time per app instance (`LINE`); the visitors after it see their place
("2nd in line") and their run starts when the one ahead ends. Each visitor's runs live in their own folder.
With "Run on Hugging Face Jobs" the run goes to a Job instead (compressor.jobs, with the visitor's own token and
a flavour suggested from the plan's memory estimate); the page follows its stage and logs, Cancel cancels it,
and the pushed model's link comes at the end. The API (README, "The app's API") is the named endpoints
`/plan`, `/run`, `/run_on_jobs` and `/cancel`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import yaml
from pydantic import BaseModel

from compressor import api, warm
from compressor.errors import FLAGS, CompressorError
from compressor.evaluate.config import EvalTask, Evaluate
from compressor.plan import Plan
from compressor.recipe import (
    DEFAULT_SCORER,
    DEPTH_SCORERS,
    WIDTH_SCORERS,
    Calibration,
    Export,
    GGUFExport,
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
    "export_on",
    "quants",
    "repo_id",
    "private",
)
INTRO = """# compressor
Structurally prune the language backbone of a multimodal LLM (drop decoder layers, or remove attention
heads and MLP channels), recover it, evaluate it against the original and push it to the Hub.
**Plan** reads `config.json` only; **Run** does the whole job in a run folder that resumes after a crash."""
DEFAULT_IF_ZERO = "(0 or empty: default)"
TOKEN_INFO = "Hub token (read for private/gated sources, write to publish); never stored or shown."
# Each widget's label (plain words) and the recipe key it sets (named in its help text and in error messages).
LABELS = {
    "source": ("Model", "model.source"),
    "revision": ("Revision", "model.revision"),
    "method": ("Pruning method", "prune.method"),
    "ratio": ("Share of parameters to remove", "prune.ratio"),
    "scorer": ("Importance scorer", "prune.scorer"),
    "targets": ("What to prune", "prune.targets"),
    "round_to": ("Round MLP widths to a multiple of", "prune.round_to"),
    "calibration": ("Calibration data", "prune.calibration.dataset"),
    "num_samples": (f"Calibration samples {DEFAULT_IF_ZERO}", "prune.calibration.num_samples"),
    "recover_on": ("Recover after pruning", "recover"),
    "mode": ("What trains", "recover.mode"),
    "ce": ("Cross-entropy weight", "recover.loss"),
    "hidden_mse": ("Hidden-state distillation weight", "recover.loss"),
    "fraction": ("Share of the training data", "recover.fraction"),
    "max_steps": (f"Training steps {DEFAULT_IF_ZERO}", "recover.max_steps"),
    "train_data": ("Training data", "recover.data.dataset"),
    "eval_on": ("Evaluate against the original", "evaluate"),
    "tasks": ("Evaluation tasks", "evaluate.tasks"),
    "speed": ("Measure speed", "evaluate.speed"),
    "export_on": ("Export to GGUF", "export.gguf"),
    "quants": ("GGUF types", "export.gguf.quants"),
    "repo_id": ("Output repo on the Hub", "publish.repo_id"),
    "private": ("Private repo", "publish.private"),
}
HERE = Path(__file__).resolve().parent
EMBEDDED_DEFAULT = "demo/tiny-llava"
# Tables and messages wrap instead of scrolling off to the right in one-line code blocks.
CSS = """
.wrap-text pre, .wrap-text code { white-space: pre-wrap !important; word-break: break-word; }
.error-box { border-left: 4px solid #d33; padding: 0.4em 0.8em; background: rgba(221, 51, 51, 0.06); }
.stage-board progress { width: 12em; vertical-align: middle; }
"""


FOLLOW_LOG = """() => { requestAnimationFrame(() => { const t = document.querySelector('#stage-log textarea');
  if (t) t.scrollTop = t.scrollHeight; }); }"""


def doc(model: type[BaseModel], field: str) -> str:
    """A field's description: the one place its documentation lives."""
    return model.model_fields[field].description or ""


def info(name: str, text: str) -> str:
    """The help under a widget: the field's own doc, then the recipe key it sets."""
    return f"{text} (recipe: {LABELS[name][1]})" if text else f"recipe: {LABELS[name][1]}"


def label(name: str) -> str:
    return LABELS[name][0]


def oauth_enabled() -> bool:
    """True in a Space with `hf_oauth: true` (SYSTEM=spaces, as Gradio checks, and the OAuth client's id)."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("OAUTH_CLIENT_ID"))


def login_available() -> bool:
    """A login button in a Space with OAuth, and outside a Space where Gradio's local stand-in can sign in
    (it signs in as the machine's saved Hub user, so it needs a saved token or HF_TOKEN)."""
    if oauth_enabled():
        return True
    from huggingface_hub import get_token

    return os.environ.get("SYSTEM") != "spaces" and get_token() is not None


def runs_root() -> Path:
    return Path(os.environ.get("COMPRESSOR_RUNS") or "runs")


def launch_options() -> dict[str, Any]:
    """What `launch()` needs besides host and port (Gradio 6 takes the page's CSS there)."""
    return {"css": CSS, "run_history": False}


# ---------------------------------------------------------------------------- presets


def presets() -> dict[str, Path]:
    """Label → recipe file: the embedded default first, then recipes/ (beside app.py, as in the Space)."""
    found = {f"Embedded default: tiny LLaVA ({EMBEDDED_DEFAULT})": Path(api.__file__).with_name("demo.yaml")}
    for path in sorted((HERE / "recipes").glob("*.yaml")):
        found[path.stem] = path
    return found


def embedded_default_served() -> bool:
    """Does the Hub the app talks to serve the embedded default? Asked only of a Hub other than
    huggingface.co (e.g. `python -m compressor serve-hub` with the default published, as `make demo` does)."""
    from huggingface_hub import HfApi, constants

    if "huggingface.co" in constants.ENDPOINT:
        return False
    try:
        return HfApi().repo_exists(EMBEDDED_DEFAULT)
    except Exception:  # an unreachable or odd Hub: fall back to a recipe file
        return False


def default_preset(choices: dict[str, Path]) -> str:
    """The embedded default when it is served, else the smallest model among the recipe files."""
    names = list(choices)
    if embedded_default_served() or len(names) == 1:
        return names[0]
    small = [n for n in names[1:] if "256m" in n or "0.5b" in n]
    return (small or names[1:])[0]


def load_preset(name: str) -> Recipe:
    from compressor.recipe import load_recipe

    return load_recipe(presets()[name])


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
    ratio = v["ratio"]
    _put(prune, "ratio", round(float(ratio), 4) if isinstance(ratio, int | float) else ratio)
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


def _export(old: dict[str, Any] | None, v: dict[str, Any]) -> dict[str, Any] | None:
    """export.gguf with the ticked types (its other keys, e.g. repo_id, kept); unticked: no gguf export."""
    ex = copy.deepcopy(old or {})
    if not v["export_on"]:
        ex.pop("gguf", None)
        return ex or None
    # no type ticked: an empty list, which the recipe refuses with the known types ("give at least one quant")
    ex["gguf"] = {**(ex.get("gguf") or {}), "quants": list(v["quants"] or [])}
    return ex


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
        "export": _export(data.get("export"), v),
        "publish": _publish(data.get("publish"), v),
    }
    for key, section in sections.items():
        _put(data, key, section)
    return data


def values(args: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(NAMES, args))


def recipe_of(base: dict[str, Any] | None, args: tuple[Any, ...]) -> Recipe:
    return parse_recipe(recipe_dict(base, values(args)), "from the form")


def yaml_view(base: dict[str, Any] | None, *args: Any) -> tuple[str, str]:
    """(the recipe YAML the widgets make, the form check). A form that does not validate yet keeps its
    YAML with the reasons as leading comments, and the check says what to change in the page's words."""
    data = recipe_dict(base, values(args))
    try:
        recipe = parse_recipe(data, "from the form")
        refusal = export_refusal(recipe)
        return dump_recipe(recipe), error_md(refusal, "Check the form") if refusal else ""
    except CompressorError as err:
        comments = "".join(f"# {line}\n" for line in str(err).splitlines())
        return comments + yaml.safe_dump(data, sort_keys=False), error_md(
            str(err).replace("invalid recipe from the form: ", ""), "Check the form"
        )


# ---------------------------------------------------------------------------- recipe -> widgets


def widget_values(recipe: Recipe) -> dict[str, Any]:
    p, cal = recipe.prune, recipe.prune.calibration
    rec, ev, pub = recipe.recover or Recover(), recipe.evaluate or Evaluate(), recipe.publish
    gguf = recipe.export.gguf if recipe.export is not None else None
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
        "export_on": gguf is not None,
        "quants": list((gguf or GGUFExport()).quants),
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


def on_preset(name: str | None) -> tuple[Any, ...]:
    """A preset (a recipe file) → (base, status, *widget updates), as if its YAML had been pasted."""
    if not name or name not in presets():
        return (gr.update(), gr.update(), *(gr.update() for _ in NAMES))
    loaded = load_yaml(presets()[name].read_text())
    if loaded[0] is not None and not isinstance(loaded[0], dict):  # refused: keep its error
        return loaded
    return (loaded[0], f"Preset **{name}** loaded into the form.", *loaded[2:])


def read_upload(path: str | None) -> str:
    """The uploaded recipe's text; the uploaded file (in Gradio's cache) is removed once read."""
    if not path:
        return ""
    upload = Path(path)
    try:
        return upload.read_text()
    finally:
        upload.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            upload.parent.rmdir()  # Gradio's folder for this one upload


def method_changed(method: str, scorer: str | None) -> tuple[Any, Any]:
    """The scorer list follows the method (a scorer that fits both is kept); width options show for width."""
    choices = list(SCORERS[method])
    value = scorer if scorer in choices else DEFAULT_SCORER[method]
    return gr.update(choices=choices, value=value), gr.update(visible=method == "width")


# ---------------------------------------------------------------------------- plan and run

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


def error_md(message: str, title: str = "Error") -> str:
    """An error as wrapped text in the page's words (never a one-line code block that cuts it off)."""
    lines = "\n\n".join(_escape(line) for line in for_page(message).splitlines() if line.strip())
    return f"**{title}:** {lines}"


def unexpected(err: Exception) -> str:
    return f"{type(err).__name__}: {err} (the server log has the details)"


MOCK_OAUTH_TOKEN = "mock-oauth-token-for-local-dev"  # Gradio's local stand-in: not a Hub token


def resolve_token(text: str | None, oauth_token: gr.OAuthToken | None) -> str | None:
    """The password box wins; else the Space login's token; else None (huggingface_hub's own lookup, which
    is also the user the local login stand-in shows)."""
    if _text(text):
        return _text(text)
    if oauth_token is None or oauth_token.token == MOCK_OAUTH_TOKEN:
        return None
    return oauth_token.token


def _table_text(text: str) -> str:
    return f"```text\n{text}\n```"


def plan_md(plan: Plan) -> str:
    """The plan table (its warnings once, as a list under it)."""
    table = "\n".join(line for line in plan.table().splitlines() if not line.startswith("warning: "))
    warnings = "".join(f"\n- ⚠ {_escape(w)}" for w in plan.warnings)
    return _table_text(table) + (f"\n\n**Warnings**\n{warnings}" if warnings else "")


def on_plan(
    token: str | None, base: dict[str, Any] | None, oauth_token: gr.OAuthToken | None = None, *args: Any
) -> tuple[str, str]:
    """(status, plan) — the plan table and its warnings, from config.json only. An export this server cannot
    run (a k-quant without llama-quantize) is the status's error, above the plan it would have."""
    try:
        recipe = recipe_of(base, args)
        plan = api.plan(recipe, resolve_token(token, oauth_token))
    except CompressorError as err:
        return error_md(str(err)), ""
    except Exception as err:  # the server log keeps the traceback; the page gets one clear line
        log.exception("plan failed")
        return error_md(unexpected(err)), ""
    refusal = export_refusal(recipe)
    if refusal:
        return error_md(refusal), plan_md(plan)
    return "Plan ready: nothing was downloaded but config.json.", plan_md(plan)


def export_refusal(recipe: Recipe) -> str | None:
    """Why a Run of `recipe` here would refuse its export.gguf section before any work (api.check_export),
    naming the widget; None when it would not (or the recipe exports nothing)."""
    try:
        api.check_export(recipe)
    except CompressorError as err:
        return f"“{label('quants')}” ({LABELS['quants'][1]}): {err}"
    return None


def visitor_root(root: Path, request: gr.Request | None, profile: gr.OAuthProfile | None) -> Path:
    """Each visitor's own runs: a signed-in user's folder (their runs resume across visits), else the browser
    session's. No visitor sees, resumes or pushes another's run, and a run is pushed only with the token of
    the visitor who runs it (the token is passed per run, never kept)."""
    user = getattr(profile, "username", None) if profile is not None else None
    who = f"user-{user}" if user else f"session-{getattr(request, 'session_hash', None) or uuid.uuid4().hex}"
    return root / re.sub(r"[^\w.-]+", "-", who)


def run_folder(root: Path, recipe: Recipe) -> Path:
    """One folder per recipe (named by its content), so running the same recipe again resumes it."""
    digest = hashlib.sha256(dump_recipe(recipe).encode()).hexdigest()[:10]
    name = re.sub(r"[^\w.-]+", "-", Path(recipe.model.source.rstrip("/")).name).strip("-") or "model"
    return root / f"{name}-{recipe.prune.method}{round(recipe.prune.ratio * 100)}-{digest}"


# ---------------------------------------------------------------------------- the run's own process


def _child() -> None:
    """A run's own process. `python -c` runs this function's source (so the child imports compressor, not
    Gradio): it reads {"recipe", "run_dir", "token"} as one JSON line on stdin, runs `api.run`, and writes
    the run's events as JSON lines on the stdout it was given (print() and library output go to stderr,
    the server's log): ["stage", stage, state], ["progress", stage, step, total, logs], ["log", level,
    message], then ["done", summary] or ["error", message]. The token arrives on stdin, never in the
    arguments or the environment. When the app goes away its end of stdin closes, and the run stops too."""
    import json
    import logging
    import os
    import signal
    import sys
    import threading
    import traceback

    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    lock = threading.Lock()

    def send(*event: object) -> None:
        with lock:
            events.write(json.dumps(event, default=str) + "\n")
            events.flush()

    job = json.loads(sys.stdin.readline())

    def orphaned() -> None:  # the app closed its end (or died): stop the whole run, workers included
        sys.stdin.read()
        os.killpg(os.getpgrp(), signal.SIGTERM)

    threading.Thread(target=orphaned, daemon=True).start()

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            send("log", record.levelno, record.getMessage())

    logger = logging.getLogger("compressor")
    logger.addHandler(Forward(logging.INFO))
    logger.setLevel(logging.INFO)
    import yaml

    from compressor import api
    from compressor.errors import CompressorError
    from compressor.recipe import parse_recipe

    try:
        recipe = parse_recipe(yaml.safe_load(job["recipe"]), "(run)")
        summary = api.run(
            recipe,
            job["run_dir"],
            job["token"],
            on_stage=lambda stage, state: send("stage", stage, state),
            on_progress=lambda stage, step, total, logs: send("progress", stage, step, total, logs),
        )
        send("done", summary)
    except CompressorError as err:
        send("error", str(err))
    except Exception as err:  # the server log keeps the traceback; the page gets one clear line
        traceback.print_exc()
        send("error", f"{type(err).__name__}: {err} (the server log has the details)")


CHILD_SOURCE = inspect.getsource(_child) + "\n_child()\n"
STOP_GRACE_S = 10.0  # after SIGTERM, how long a run's processes get before SIGKILL


class Child:
    """One run in its own process group: its events arrive on `events`; `stop()` ends it, workers included.

    The process is forked by compressor.warm from a server that imported torch, transformers and TRL once (a run
    starts in well under a second, not after a 9 s import); its environment is this one's plus TMPDIR, and the
    token reaches it on stdin only. Its temporary files go to a folder of its own (TMPDIR), removed when it
    ends or is stopped."""

    def __init__(self, recipe: Recipe, run_dir: Path, token: str | None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="compressor-run-"))
        env = {**os.environ, "TMPDIR": str(self.tmp), "PYTHONUNBUFFERED": "1"}
        self.proc = warm.Popen(  # forked from a process that has imported torch & co. already
            [sys.executable, "-c", CHILD_SOURCE],
            stdin=warm.PIPE,
            stdout=warm.PIPE,
            env=env,
            start_new_session=True,  # its own process group: stop() reaches the data loader's workers too
            text=True,
        )
        job = {"recipe": dump_recipe(recipe), "run_dir": str(run_dir.absolute()), "token": token}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()  # stdin stays open: the child stops itself when it closes
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put(["exit"])

    def stop(self) -> None:
        """SIGTERM to the run's process group, SIGKILL after STOP_GRACE_S; then its temporary folder goes."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- the line of waiting runs


class Ticket:
    """A visitor's place in the line: their session, their Cancel, and their run once it goes."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.cancel = threading.Event()


class Line:
    """One heavy run at a time per app instance; the visitors after it wait, first come, first served.

    The ticket at the head runs; `place` is 0 for it, 1 for the next ("2nd in line") and so on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tickets: list[Ticket] = []

    def join(self, key: str) -> Ticket:
        """A new ticket at the end; a CompressorError when this session already has one (one run per page)
        or the line is full (each waiting visitor holds one of the server's worker threads)."""
        with self._cond:
            if any(t.key == key for t in self._tickets):
                raise CompressorError(
                    "this page already has a run going or waiting: cancel it, or wait for it"
                )
            if len(self._tickets) > max_waiting():
                raise CompressorError(
                    f"{len(self._tickets) - 1} runs are waiting already, the most this app takes: try again "
                    "later (or duplicate the Space to run on your own)"
                )
            ticket = Ticket(key)
            self._tickets.append(ticket)
            return ticket

    def place(self, ticket: Ticket) -> int:
        with self._cond:
            return self._tickets.index(ticket)

    def wait(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)

    def leave(self, ticket: Ticket) -> None:
        with self._cond:
            if ticket in self._tickets:
                self._tickets.remove(ticket)
            self._cond.notify_all()

    def cancel(self, key: str) -> bool:
        """Cancel the session's run (or its place in the line); False when it has none."""
        with self._cond:
            found = [t for t in self._tickets if t.key == key]
            for ticket in found:
                ticket.cancel.set()
            self._cond.notify_all()
            return bool(found)

    def __len__(self) -> int:
        with self._cond:
            return len(self._tickets)


LINE = Line()


def max_waiting() -> int:
    """How many runs may wait behind the one going (COMPRESSOR_MAX_WAITING, default 8)."""
    return int(os.environ.get("COMPRESSOR_MAX_WAITING") or 8)


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


class Board:
    """What the page shows of a run: each stage's state and progress, and the log lines (no server paths)."""

    def __init__(self, recipe: Recipe, run_dir: Path) -> None:
        skipped = api.skipped_stages(recipe)
        self.state = {s: "not in this recipe" if s in skipped else "waiting" for s in api.STAGES}
        self.detail: dict[str, str] = {}
        self.bar: dict[str, tuple[int, int]] = {}
        self.run_dir = run_dir
        self.lines = [f"run folder: {run_dir.name}"]
        self.seen: set[str] = set()

    def hide_paths(self, text: str) -> str:
        """Server paths out: the run folder by its name, the Hub cache and the runs root by a word."""
        from huggingface_hub import constants

        for path, word in (
            (self.run_dir.resolve(), self.run_dir.name),
            (self.run_dir, self.run_dir.name),
            (Path(constants.HF_HUB_CACHE), "<hub cache>"),
            (Path(constants.HF_HOME), "<hf home>"),
        ):
            text = text.replace(str(path), word)
        return text

    def event(self, kind: str, *rest: Any) -> None:
        if kind == "stage":
            stage, state = rest
            self.state[stage] = {"start": "running", "skip": "done before (resumed)", "done": "done"}[state]
            if state != "start":
                self.bar.pop(stage, None)
            self.lines.append(f"[{stage}] {state}")
        elif kind == "progress":
            stage, step, total, logs = rest
            self.bar[stage] = (step, total)
            if stage == "prune":
                self.detail[stage] = f"{logs.get('desc', 'scoring')}: {step}/{total}"
            elif logs:
                terms = ", ".join(
                    f"{k} {v:.4g}" for k, v in logs.items() if isinstance(v, int | float) and k != "epoch"
                )
                losses = ", ".join(
                    f"{k} {v:.4g}"
                    for k, v in logs.items()
                    if k.startswith(("loss", "train_loss")) and isinstance(v, int | float)
                )
                self.detail[stage] = f"step {step}/{total}: {losses or terms}"
                self.lines.append(f"    step {step}/{total}: {terms}")
            else:
                self.detail[stage] = f"step {step}/{total}" + (
                    f" (last log: {self.detail[stage].split(': ', 1)[1]})"
                    if ": " in self.detail.get(stage, "")
                    else ""
                )
        elif kind == "log":
            level, message = rest
            message = self.hide_paths(message)
            if level >= logging.WARNING:
                if message in self.seen:  # a warning once, however many times the stages repeat it
                    return
                self.seen.add(message)
                message = f"warning: {message}"
            self.lines.append(f"    {message}")

    def stopped(self, why: str) -> None:
        """The running stage did not finish: `why` is "cancelled" or "failed"."""
        for stage, state in self.state.items():
            if state == "running":
                self.state[stage] = why
                self.bar.pop(stage, None)

    def fraction(self) -> float:
        done = sum(s.startswith("done") or s == "not in this recipe" for s in self.state.values())
        running = [s for s, v in self.state.items() if v == "running"]
        part = 0.0
        if running and running[0] in self.bar:
            step, total = self.bar[running[0]]
            part = step / total if total else 0.0
        return min(1.0, (done + part) / len(self.state))

    def html(self) -> str:
        rows = []
        for stage, state in self.state.items():
            mark = {
                "running": "▶",
                "waiting": "·",
                "not in this recipe": "–",
                "cancelled": "✕",
                "failed": "✕",
            }
            mark = mark.get(state, "✓")
            bar = ""
            if stage in self.bar and state == "running":
                step, total = self.bar[stage]
                bar = f'<progress value="{step}" max="{max(total, 1)}"></progress> '
            detail = self.detail.get(stage, "") if state == "running" else ""
            rows.append(
                f'<tr data-stage="{stage}" data-state="{state}"><td>{mark}</td><td><b>{stage}</b></td>'
                f"<td>{state}</td><td>{bar}{_html_escape(detail)}</td></tr>"
            )
        return f'<table class="stage-board">{"".join(rows)}</table>'

    def text(self) -> str:
        return "\n".join(self.lines)


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


def results(summary: dict[str, Any]) -> tuple[str, str, str]:
    """(eval table, card body, pushed URL) from the run folder's files."""
    from compressor.evaluate.report import EvalReport

    report = Path(summary["run_dir"]) / "reports" / "eval.json"
    table = EvalReport.model_validate_json(report.read_text()).table() if report.is_file() else ""
    card = Path(summary["model"]) / "README.md"
    body = re.sub(r"\A---\n.*?\n---\n", "", card.read_text(), flags=re.S) if card.is_file() else ""
    return (
        _table_text(table) if table else "*(no evaluation in this recipe)*",
        body,
        pushed_md(summary.get("url"), summary.get("gguf_url"))
        or "*(not pushed: no output repo in this recipe)*",
    )


def pushed_md(url: str | None, gguf_url: str | None = None) -> str:
    """The pushed model's link, and its GGUF repo's when the recipe exported one ("" when nothing was pushed)."""
    links = [f"Pushed to [{url}]({url})"] if url else []
    if gguf_url:
        links.append(f"GGUF files: [{gguf_url}]({gguf_url})")
    return "\n\n".join(links)


def _heavy_stage_done(run_dir: Path) -> bool:
    return any((run_dir / "reports").glob("*.json"))


# The pictures api.run writes into the run folder as stages end (compressor/plots.py), in the page's order.
PLOTS = (
    ("importance", "Layer importance"),
    ("widths", "Kept widths per layer"),
    ("losses", "Recovery losses"),
    ("scores", "Scores: % retained"),
)


def plot_files(run_dir: Path) -> list[tuple[Path, str]]:
    """(picture, caption) for each of RUN/plots/*.png written so far."""
    found = [(run_dir / "plots" / f"{name}.png", caption) for name, caption in PLOTS]
    return [(path, caption) for path, caption in found if path.is_file()]


class PlotWatch:
    """The plots gallery of one run: `update()` is a new value when a picture appears or changes, else
    gr.skip(); `images` is the whole value, for a run's last output (a plain value: what an API caller gets).

    The pictures go to the page as images (Gradio caches a copy), never as paths into the runs folder."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.seen: tuple[Any, ...] | None = None
        self.images: list[tuple[Any, str]] | None = None

    def update(self) -> Any:
        from PIL import Image

        try:
            found = plot_files(self.run_dir)
            key = tuple((path.name, path.stat().st_mtime_ns, path.stat().st_size) for path, _ in found)
            if key == self.seen:
                return gr.skip()
            images = []
            for path, caption in found:
                with Image.open(path) as image:
                    image.load()
                    images.append((image.copy(), caption))
        except OSError:  # a picture being written: the next update shows it
            return gr.skip()
        self.seen, self.images = key, images or None
        return gr.update(value=self.images, visible=bool(images))

    def last(self) -> Iterator[Shown]:
        """What the run's last output needs first: the gallery shown, if a picture came at the very end."""
        update = self.update()
        if update != gr.skip():
            yield (*(gr.skip() for _ in range(6)), update)


# what a run shows: (status, stage board, stage log, eval table, card, URL, plots)
Shown = tuple[Any, Any, Any, Any, Any, Any, Any]


def waiting_md(place: int) -> str:
    ahead = "the run ahead of you ends" if place == 1 else f"the {place} runs ahead of you end"
    return (
        f"**Waiting: {ordinal(place + 1)} in line.** One run goes at a time here; yours starts when {ahead}. "
        "Cancel leaves the line."
    )


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
        yield error_md(str(err)), *(gr.skip() for _ in range(6))
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
        yield error_md(str(err)), "", "", "", "", "", gr.skip()
        return
    yield from run_stream(recipe, resolve_token(token, oauth_token), request, profile, progress)


def recipe_from_yaml(text: str | None) -> Recipe:
    """A recipe's YAML text (as the API takes it) → Recipe, or a CompressorError that says what is wrong."""
    try:
        data = yaml.safe_load(text or "")
    except yaml.YAMLError as err:
        raise CompressorError(f"the recipe is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise CompressorError("a recipe is a YAML mapping with model: and prune: sections")
    return parse_recipe(data, "(api)")


def api_plan(recipe: str, token: str | None) -> tuple[str, str]:
    """API `/plan`: a recipe's YAML and a Hub token (or empty) → (status, plan table with its warnings)."""
    try:
        parsed = recipe_from_yaml(recipe)
    except CompressorError as err:
        return error_md(str(err)), ""
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
        yield error_md(str(err)), "", "", "", "", "", gr.skip()
        return
    yield from run_stream(parsed, _text(token), request, None, progress)


def _form_values(recipe: Recipe) -> tuple[Any, ...]:
    v = widget_values(recipe)
    return tuple(v[n] for n in NAMES)


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


# ---------------------------------------------------------------------------- Hugging Face Jobs

JOBS_INFO = "On Hub hardware billed to you, for runs that need a GPU; it pushes to the output repo."
JOB_LOG_LINES = 400  # the job's log lines the page keeps (the Hub keeps them all)

# session → the Cancel of the Job that page follows (a Job runs on the Hub, not in LINE)
_JOBS: dict[str, threading.Event] = {}


def flavor_choices() -> list[str]:
    from compressor import jobs

    return [jobs.AUTO, *jobs.flavors()]


def jobs_token(
    text: str | None, oauth_token: gr.OAuthToken | None, profile: gr.OAuthProfile | None
) -> str | None:
    """The visitor's own token for a Job: the token box, else the Space login's. Outside a Space, Gradio's
    local login stand-in signs in as the machine's saved Hub user, whose token (None: huggingface_hub's
    lookup) is then the signed-in user's. Never the server's token for a visitor who did not sign in."""
    token = resolve_token(text, oauth_token)
    if token is None and (profile is None or oauth_enabled()):
        raise CompressorError(
            "a Hugging Face Job runs with your own token: sign in with the button, or paste a write token in "
            "the Hub token box"
        )
    return token


def flavor_suggestion(on: bool, token: str | None, base: dict[str, Any] | None, *args: Any) -> Any:
    """The flavour dropdown (shown with the Jobs option) set to the smallest flavour that fits the plan."""
    if not on:
        return gr.update(visible=False)
    from compressor import jobs
    from compressor.hardware import suggest_flavor

    try:
        plan = api.plan(recipe_of(base, args), _text(token))
    except Exception as err:  # the Plan button says what is wrong; the dropdown keeps "auto"
        log.info("no flavour suggestion: %s", err)
        return gr.update(visible=True, value=jobs.AUTO, info="auto: the smallest flavour that fits the plan.")
    flavor = suggest_flavor(plan)
    memory = getattr(plan, "memory", None)
    peak = f" (estimated peak {_size(memory.peak_gpu_bytes)} on a GPU)" if memory and memory.gpu else ""
    return gr.update(visible=True, value=flavor, info=f"Suggested for this plan: {flavor}{peak}.")


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


def _follow_logs(job: Any, token: str | None, lines: queue.Queue) -> None:
    from compressor import jobs

    try:
        for line in jobs.logs(job, token, follow=True):
            lines.put(line)
    except Exception as err:  # the status poll still sees the job end; the page says the logs stopped
        lines.put(f"(the logs stopped: {err})")
    lines.put(None)


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
            yield error_md(str(err)), "", "", "", "", "", gr.skip()
            return
        log.info("job %s submitted (%s)", job.id, job.flavor)
        lines: list[str] = []
        incoming: queue.Queue = queue.Queue()
        threading.Thread(target=_follow_logs, args=(job, token, incoming), daemon=True).start()
        state, polled, cancelled, logs_open, pushed, pushed_gguf = None, 0.0, False, True, None, None
        while True:
            with contextlib.suppress(queue.Empty):
                line = incoming.get(timeout=0.5)
                while True:
                    if line is None:
                        logs_open = False
                    else:
                        lines.append(line.rstrip("\n"))
                        if match := jobs.PUSHED.match(line.strip()):
                            pushed = match.group(1)
                        elif match := jobs.PUSHED_GGUF.match(line.strip()):
                            pushed_gguf = match.group(1)
                    line = incoming.get_nowait()
            del lines[:-JOB_LOG_LINES]
            if cancel.is_set() and not cancelled:
                cancelled = True
                try:
                    state = jobs.cancel(job, token)
                except CompressorError as err:
                    yield error_md(f"cannot cancel job {job.id}: {err}"), *(gr.skip() for _ in range(6))
            if time.monotonic() - polled > 2.0 or (state is not None and state.done and not logs_open):
                polled = time.monotonic()
                try:
                    state = jobs.status(job, token)
                except CompressorError as err:
                    yield (
                        error_md(f"lost track of job {job.id} ({err}); its page: {job.url}"),
                        *(gr.skip() for _ in range(6)),
                    )
                    return
            stage = state.stage if state else "SUBMITTED"
            if state is not None and state.done and (not logs_open or time.monotonic() - polled > 1.5):
                break
            progress(None, desc=f"job {stage.lower()}")
            status = (
                f"**Job {_escape(job.id)}: {stage.lower()}** on {job.flavor}. It runs on the Hub: leaving this "
                f"page does not stop it ([its page]({job.url})); Cancel does."
            )
            yield status, job_board(job, stage), "\n".join(lines), "", "", "", gr.skip()
        url = pushed
        if state.stage == "COMPLETED" and url is None:
            with contextlib.suppress(CompressorError):
                url = jobs.pushed_url(job, token)
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
        yield error_md(str(err)), "", "", "", "", "", gr.skip()
        return
    yield from job_stream(recipe, flavor, token, _session(request), progress)


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
        yield error_md(str(err)), "", "", "", "", "", gr.skip()
        return
    yield from job_stream(parsed, _text(flavor), _text(token), _session(request), progress)


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or uuid.uuid4().hex


def run_controls(running: bool) -> tuple[Any, Any]:
    """(Run, Cancel): Run is disabled and Cancel enabled while a run goes."""
    return gr.update(interactive=not running), gr.update(interactive=running)


def suggest_repo(user: str | None, source: str | None, method: str | None, ratio: Any) -> str | None:
    """`USER/NAME-METHODPCT`, e.g. alice/tiny-llava-width30, from the model's name and the pruning."""
    if not user or not _text(source):
        return None
    name = re.sub(r"[^\w.-]+", "-", Path(source.strip().rstrip("/")).name).strip("-.") or "model"
    try:
        pct = f"{round(float(ratio) * 100)}"
    except (TypeError, ValueError):
        pct = ""
    return f"{user}/{name}-{method or 'pruned'}{pct}"[:96]


def on_load(
    source: str, method: str, ratio: Any, repo_id: str, profile: gr.OAuthProfile | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """(repo box, sign-in note, auto state): signed in, the output repo defaults to the user's namespace."""
    user = profile.username if profile is not None else None
    if user is None:
        return gr.update(), "", {"user": None, "repo": None}
    suggestion = suggest_repo(user, source, method, ratio)
    current = _text(repo_id)
    take = suggestion and (current is None or current.split("/")[0] != user)
    return (
        gr.update(value=suggestion) if take else gr.update(),
        f"Signed in as **{_escape(user)}**: the output repo defaults to your namespace.",
        {"user": user, "repo": suggestion if take else None},
    )


def follow_repo(auto: dict[str, Any] | None, source: str, method: str, ratio: Any, repo_id: str):
    """The suggested repo follows the model and the pruning, until the visitor types their own."""
    auto = dict(auto or {})
    if not auto.get("user") or _text(repo_id) != auto.get("repo"):
        return gr.update(), auto
    suggestion = suggest_repo(auto["user"], source, method, ratio)
    auto["repo"] = suggestion
    return gr.update(value=suggestion), auto


# ---------------------------------------------------------------------------- layout


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
            ["projector", "lora", "full"],
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
            v["train_data"], label=label("train_data"), info=info("train_data", doc(RecoverData, "dataset"))
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


if __name__ == "__main__":
    main()
