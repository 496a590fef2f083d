"""Form ⇄ recipe: the presets the form opens on, the widgets' values → a Recipe (on top of a loaded recipe,
whose fields without a widget are kept), the recipe's YAML and the form check, and a Recipe (a preset, pasted
or uploaded YAML) → the widgets' values."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from compressor import api
from compressor.app.messages import error_md
from compressor.app.texts import LABELS, NAMES, SCORERS, label
from compressor.errors import CompressorError, page_words
from compressor.evaluate.config import Evaluate
from compressor.recipe import DEFAULT_SCORER, GGUFExport, Recipe, dump_recipe, parse_recipe, recipe_from_text
from compressor.recover.config import DEFAULT_LOSS, Recover

# How the page titles a form that does not validate (the CLI's title is "invalid recipe from the form").
FORM_TITLE = "the form does not make a valid recipe yet"

# The project's root: app.py, compressor/ and recipes/ sit together there (the checkout, the Space, the Docker
# image), so recipes/ is beside app.py as before.
HERE = Path(__file__).resolve().parents[2]


EMBEDDED_DEFAULT = "demo/tiny-llava"


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
    text = _text(v["train_data"])
    if isinstance(rec.get("data"), list) or (text and "," in text):  # several sources: SOURCE:WEIGHT, ...
        if text != sources_text(rec.get("data")):
            from compressor.recover.config import parse_sources

            old = {d.get("dataset"): d for d in rec.get("data") or [] if isinstance(d, dict)}
            given = parse_sources([t.strip() for t in (text or "").split(",") if t.strip()])
            rec["data"] = [{**old.get(g["dataset"], {}), **g} for g in given]
        if not rec["data"]:
            rec.pop("data")
        return rec
    data = rec.setdefault("data", {})
    _put(data, "dataset", text)
    if not data:
        rec.pop("data")
    return rec


def sources_text(data: Any) -> str | None:
    """Several recovery sources as the form shows them: `SOURCE:WEIGHT, SOURCE:WEIGHT`."""
    if not isinstance(data, list):
        return None
    return ", ".join(f"{d.get('dataset')}:{d.get('weight', 1):g}" for d in data if isinstance(d, dict))


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
    return parse_recipe(recipe_dict(base, values(args)), "from the form", FORM_TITLE)


def export_refusal(recipe: Recipe) -> str | None:
    """Why a Run of `recipe` here would refuse its export.gguf section before any work (api.check_export),
    naming the widget; None when it would not (or the recipe exports nothing)."""
    try:
        api.check_export(recipe)
    except CompressorError as err:
        return f"“{label('quants')}” ({LABELS['quants'][1]}): {err}"
    return None


def yaml_view(base: dict[str, Any] | None, *args: Any) -> tuple[str, str]:
    """(the recipe YAML the widgets make, the form check). A form that does not validate yet keeps its
    YAML with the reasons as leading comments, and the check says what to change in the page's words."""
    data = recipe_dict(base, values(args))
    try:
        recipe = parse_recipe(data, "from the form", FORM_TITLE)
        refusal = export_refusal(recipe)
        return dump_recipe(recipe), error_md(refusal, "Check the form") if refusal else ""
    except CompressorError as err:
        comments = "".join(f"# {line}\n" for line in page_words(err).splitlines())
        return comments + yaml.safe_dump(data, sort_keys=False), error_md(
            page_words(err).removeprefix(f"{FORM_TITLE}: "), "Check the form"
        )


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
        "train_data": (
            sources_text([d.model_dump(exclude_unset=True) for d in rec.data])
            if isinstance(rec.data, tuple)
            else rec.data.dataset or ""
        ),
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
        recipe = recipe_from_text(text, "(pasted)")
    except CompressorError as err:
        return refused(page_words(err))
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
