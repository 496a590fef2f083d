"""The page's words and looks: the widgets' order (`NAMES`), their labels and the recipe keys they set, the help
texts (each a pydantic field's own description), the intro and the CSS."""

from __future__ import annotations

from pydantic import BaseModel

from compressor.recipe import DEPTH_SCORERS, FIELD_WORDS, WIDTH_SCORERS

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


JOBS_INFO = "On Hub hardware billed to you, for runs that need a GPU; it pushes to the output repo."


# Each widget → the recipe key it sets (named in its help text). Its label is that field's own (the field's
# json_schema_extra, where the CLI flag and the error messages read it too), except for the two loss weights:
# they are entries of recover.loss, not fields of their own.
KEYS = {
    "source": "model.source",
    "revision": "model.revision",
    "method": "prune.method",
    "ratio": "prune.ratio",
    "scorer": "prune.scorer",
    "targets": "prune.targets",
    "round_to": "prune.round_to",
    "calibration": "prune.calibration.dataset",
    "num_samples": "prune.calibration.num_samples",
    "recover_on": "recover",
    "mode": "recover.mode",
    "ce": "recover.loss",
    "hidden_mse": "recover.loss",
    "fraction": "recover.fraction",
    "max_steps": "recover.max_steps",
    "train_data": "recover.data.dataset",
    "eval_on": "evaluate",
    "tasks": "evaluate.tasks",
    "speed": "evaluate.speed",
    "export_on": "export.gguf",
    "quants": "export.gguf.quants",
    "repo_id": "publish.repo_id",
    "private": "publish.private",
}
_LOSS_LABELS = {"ce": "Cross-entropy weight", "hidden_mse": "Hidden-state distillation weight"}
_ZERO_IS_DEFAULT = ("num_samples", "max_steps")


def _label(name: str, key: str) -> str:
    text = _LOSS_LABELS.get(name) or FIELD_WORDS[key]["label"]
    return f"{text} {DEFAULT_IF_ZERO}" if name in _ZERO_IS_DEFAULT else text


# Each widget's label (plain words) and the recipe key it sets.
LABELS = {name: (_label(name, key), key) for name, key in KEYS.items()}


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
