"""The model card, rendered only from the run folder's files (so it can be re-rendered without re-running).

Reads `recipe.yaml`, `plan.json`, `source.json`, `reports/{prune,recover,eval}.json` (an old run folder's `reports/train.json`) and the final model folder's
config.json and safetensors sizes (`recovered/` after recovery, else `pruned/`); writes nothing. It embeds the
run's importance and retention pictures (`plots/*.png`, see `compressor.plots`) by links relative to the repo,
which `place_pictures` copies into the model folder so that the push carries them.
Front matter goes through `huggingface_hub.ModelCardData`, so it is what the Hub expects.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError
from compressor.runs import report_path

CITATION = """@inproceedings{huang2025investigating,
  title     = {Investigating Structural Pruning and Recovery Techniques for Compressing Multimodal Large Language Models: An Empirical Study},
  author    = {Huang, Yiran and Thede, Lukas and Mancini, Massimiliano and Xu, Wenjia and Akata, Zeynep},
  booktitle = {German Conference on Pattern Recognition (GCPR)},
  year      = {2025},
  eprint    = {2507.20749},
  archivePrefix = {arXiv}
}"""

TASK_TYPES = {  # the Hub's task types, for model-index
    "vqa": "visual-question-answering",
    "yes_no": "visual-question-answering",
    "multiple_choice": "multiple-choice",
    "perplexity": "text-generation",
    "teacher_agreement": "text-generation",
    "lmms_eval": "image-text-to-text",
}


# The pictures the card shows (compressor.plots names), with their alt text; pushed at plots/NAME.png.
PICTURES = {
    "importance": "Layer importance per layer, the removed units marked",
    "scores": "Retained % of the original's score per task",
}


def pictures(run_dir: str | Path) -> list[str]:
    """The card's pictures that the run folder has, as paths relative to it and to the pushed repo."""
    from compressor import plots

    return [f"{plots.FOLDER}/{name}.png" for name in PICTURES if plots.path(run_dir, name).is_file()]


def place_pictures(run_dir: str | Path, model_dir: str | Path) -> list[str]:
    """Copy the card's pictures into the model folder (at the paths the card links); older ones are removed."""
    from compressor import plots

    target = Path(model_dir) / plots.FOLDER
    shutil.rmtree(target, ignore_errors=True)
    placed = pictures(run_dir)
    for rel in placed:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(run_dir) / rel, Path(model_dir) / rel)
    return placed


def _picture(run: dict[str, Any], name: str) -> str:
    """A Markdown image (a link relative to the repo, which renders on the Hub), or nothing."""
    rel = f"plots/{name}.png"
    return f"\n\n![{PICTURES[name]}]({rel})" if rel in run.get("pictures", []) else ""


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Everything the card needs, from the run folder's files."""
    run = Path(run_dir)
    if not (run / "recipe.yaml").is_file() or not (run / "reports" / "prune.json").is_file():
        raise CompressorError(
            f"{run} is not a finished run folder (recipe.yaml and reports/prune.json are missing): "
            "run `compressor run RECIPE.yaml` first"
        )
    recovered = _read(report_path(run, "recover"))
    return {
        "checkpoint": checkpoint_info(run / ("recovered" if recovered else "pruned")),
        "recipe_yaml": (run / "recipe.yaml").read_text(),
        "plan": _read(run / "plan.json"),
        "source": _read(run / "source.json") or {},
        "prune": _read(run / "reports" / "prune.json"),
        "recover": recovered,
        "eval": _read(run / "reports" / "eval.json"),
        "export": _read(run / "reports" / "export.json"),
        "pictures": pictures(run),
    }


def checkpoint_info(folder: Path) -> dict[str, Any]:
    """The saved model's dtype (its config.json) and the bytes of its safetensors files."""
    config = _read(folder / "config.json") or {}
    dtype = None
    for where in (config, config.get("text_config") or {}):
        dtype = dtype or where.get("dtype") or where.get("torch_dtype")
    files = sorted(folder.glob("*.safetensors"))
    return {"dtype": dtype, "disk_bytes": sum(f.stat().st_size for f in files) if files else None}


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}%"


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _dataset_name(dataset: str | None) -> str | None:
    """A Hub dataset id as is; a local path by its last part (local paths never reach the card)."""
    if not dataset:
        return None
    if Path(dataset).exists() or dataset.startswith(("/", ".", "~")) or dataset.count("/") != 1:
        return Path(dataset).name
    return dataset


def _recovery_phrase(train: dict[str, Any] | None) -> str:
    """How the model was recovered, in the summary: distillation only when a loss term used the teacher."""
    if not train:
        return ""
    if set(k for k, w in (train.get("loss") or {}).items() if w) - {"ce"}:
        return ", then recovered by training against the original as teacher (distillation)"
    return ", then fine-tuned on instruction data with the cross-entropy loss alone (no teacher)"


# Recipe keys whose values may be local paths: in the card and the pushed recipe.yaml a local path is
# replaced by its last part, so no local path (user names, mount points) leaves the machine.
PATH_KEYS = ("source", "dataset", "image_folder", "output_dir", "python", "logging_dir")


def public_recipe(text: str) -> str:
    """The recipe YAML with each local path shown by its last part (`./data/coco` → `coco`)."""
    import yaml

    data = yaml.safe_load(text) or {}

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (_dataset_name(v) if k in PATH_KEYS and isinstance(v, str) else clean(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    return yaml.safe_dump(clean(data), sort_keys=False)


def public_report(data: Any) -> Any:
    """A report (JSON) with every local path shown by its last part, like the recipe: the reports that travel
    with the model name Hub ids and file names, never this machine's folders."""
    if isinstance(data, dict):
        return {k: public_report(v) for k, v in data.items()}
    if isinstance(data, list):
        return [public_report(v) for v in data]
    if isinstance(data, str):
        if data.startswith(("/", "./", "../", "~")):
            return Path(data).name
        # a local path inside a sentence (a note): its last part
        return re.sub(r"(?<![\w:/])(?:~|\.{1,2})?/(?:[^\s/'\"]+/)+([^\s/'\"]*)", lambda m: m.group(1), data)
    return data


def _hub_dataset(dataset: str | None) -> str | None:
    name = _dataset_name(dataset)
    return name if name and name == dataset else None


def _eval_rows(report: dict[str, Any]) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(task, metric name, score) for every metric of an EvalReport."""
    return [
        (task, name, score) for task in report.get("tasks", []) for name, score in task["metrics"].items()
    ]


def front_matter(run: dict[str, Any], repo_id: str | None):
    from huggingface_hub import EvalResult, ModelCardData

    plan, prune, source = run["plan"], run["prune"], run["source"]
    tags = ["pruned", "compressor", f"{plan['method']}-pruning", plan["scorer"].replace("_", "-")]
    datasets = []
    for dataset in (source.get("calibration"), ((run["recover"] or {}).get("data") or {}).get("source")):
        hub_id = _hub_dataset(dataset)
        if hub_id and hub_id not in datasets:
            datasets.append(hub_id)
    if run["recover"]:
        tags += ["distillation"] if set(run["recover"].get("loss", {})) - {"ce"} else ["sft"]
    results = []
    name = repo_id or "compressed-model"
    for task, metric, score in _eval_rows(run["eval"] or {}):
        if score.get("primary"):
            dataset = _dataset_name(task.get("dataset")) or task["name"]
            results.append(
                EvalResult(
                    task_type=TASK_TYPES.get(task["task"], "image-text-to-text"),
                    dataset_type=dataset,
                    dataset_name=dataset,
                    dataset_split=task.get("split"),
                    dataset_config=task.get("subset"),
                    metric_type=metric,
                    metric_name=f"{task['name']} {metric}",
                    metric_value=round(float(score["compressed"]), 6),
                )
            )
    return ModelCardData(
        # a Hub id only: a local folder's path never reaches the card
        base_model=_hub_dataset(source.get("id") or prune.get("source", {}).get("id")),
        base_model_relation="finetune",
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        license=source.get("license"),
        tags=tags,
        datasets=datasets or None,
        model_name=name,
        eval_results=results or None,
    )


def _removed_section(
    plan: dict[str, Any], prune: dict[str, Any], checkpoint: dict[str, Any] | None = None
) -> str:
    p = plan["params"]
    rows = [
        (
            "method",
            f"{plan['method']} pruning, scorer `{plan['scorer']}`"
            + (f" on {prune.get('num_samples', 0)} calibration samples" if prune.get("num_samples") else ""),
        ),
        (
            "compression (share of language-backbone parameters)",
            f"{plan['requested_ratio']:.1%} requested, {plan['achieved_ratio']:.1%} achieved",
        ),
    ]
    if plan["method"] == "depth":
        rows.append(
            (
                "decoder layers",
                f"{plan['num_layers_before']} → {plan['num_layers_after']}; removed "
                f"{prune.get('dropped_layers')}",
            )
        )
    else:
        rows += [
            (
                "query heads / KV groups",
                f"{plan['heads_before']} / {plan['kv_heads_before']} → "
                f"{plan['heads_after']} / {plan['kv_heads_after']} (head_dim {plan['head_dim']})",
            ),
            ("MLP intermediate size", f"{plan['intermediate_before']} → {plan['intermediate_after']}"),
        ]
    rows += [
        (
            "language backbone parameters",
            f"{_fmt_params(p['backbone_before'])} → {_fmt_params(p['backbone_after'])}",
        ),
        ("whole model parameters", f"{_fmt_params(p['total_before'])} → {_fmt_params(p['total_after'])}"),
    ]
    checkpoint = checkpoint or {}
    if checkpoint.get("disk_bytes") is not None:
        rows.append(
            (
                "checkpoint",
                f"{checkpoint.get('dtype') or 'unknown dtype'} safetensors, {_fmt_bytes(checkpoint['disk_bytes'])} "
                "on disk",
            )
        )
    return "| | details |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _recovery_section(train: dict[str, Any] | None) -> str:
    if not train:
        return "No recovery training: this is the pruned model as is."
    loss = " + ".join(f"{w:g}·{name}" for name, w in train.get("loss", {}).items())
    teacher = " against the original model as teacher" if set(train.get("loss", {})) - {"ce"} else ""
    data = train.get("data") or {}
    trainable = train.get("trainable") or {}
    choice = train.get("mode_choice") or {}
    lines = [
        f"- trainable: `{train.get('mode')}` ({_fmt_params(trainable.get('trainable_params'))} parameters)"
        + (f", chosen by `recover.mode: auto`: {choice['reason']}" if choice.get("reason") else ""),
        f"- loss: {loss}{teacher}",
    ]
    sources = data.get("sources") or []
    if len(sources) > 1:
        lines.append(
            f"- data: {len(sources)} sources mixed by weight, {data.get('used')} rows, {train.get('steps')} steps"
        )
        lines += [
            f"  - {_dataset_name(s.get('dataset'))}: {s.get('share', 0):.0%} of the rows (weight {s.get('weight'):g}; "
            f"{s.get('drawn')} rows drawn, {s.get('fraction', 1):.0%} of its {s.get('rows')})"
            for s in sources
        ]
    else:
        lines.append(
            f"- data: {_dataset_name(data.get('source'))}, {data.get('fraction', 1):.0%} of it ({data.get('used')} "
            f"rows), {train.get('steps')} steps"
        )
    precision = train.get("precision") or {}
    if precision.get("compute"):
        lines.append(
            f"- precision: frozen weights in {precision['compute']}, trainable weights in "
            f"{precision.get('trainable', 'float32')}; saved in {precision.get('saved')}"
            + (" (the original's dtype)" if precision.get("saved") == precision.get("source") else "")
        )
    shared = train.get("shared_vision") or {}
    if shared:
        lines.append(
            "- vision tower: run once per batch and shared by the student and the teacher"
            if shared.get("enabled")
            else f"- vision tower: not shared between the student and the teacher ({shared.get('reason')})"
        )
    if train.get("final_loss") is not None:
        lines.append(f"- final training loss: {train['final_loss']:.4g}")
    return "\n".join(lines)


def _gate_line(run: dict[str, Any]) -> str:
    """The quality gate of the recipe (publish.require) and how the scores fared ("" without one)."""
    import yaml

    from compressor import gate

    recipe = yaml.safe_load(run["recipe_yaml"]) or {}
    require = (recipe.get("publish") or {}).get("require") or {}
    if not require:
        return ""
    verdicts = gate.check(require, run["eval"] or {})
    state = (
        "passed" if not gate.failed(verdicts) else "NOT met (this model was not pushed by `compressor run`)"
    )
    items = "\n".join(f"- {v.describe()}" for v in verdicts)
    return f"**Quality gate** (`publish.require`): {state}.\n\n{items}\n\n"


def _scores_section(report: dict[str, Any] | None) -> str:
    if not report or not report.get("tasks"):
        return "Not evaluated."
    lines = ["| task | metric | original | compressed | retained |", "| --- | --- | --- | --- | --- |"]
    for task, metric, score in _eval_rows(report):
        name = f"{task['name']} ({_dataset_name(task.get('dataset'))}, {task.get('samples')} samples)"
        mark = "" if score.get("primary") else " (info)"
        lines.append(
            f"| {name} | {metric}{mark} | {_num(score['original'])} | {_num(score['compressed'])} | "
            f"{_pct(score.get('retained'))} |"
        )
    lines.append(f"| **average over tasks** | | | | **{_pct(report.get('average_retained'))}** |")
    lines += [_lmms_pins(task["pinned"]) for task in report["tasks"] if task.get("pinned")]
    return "\n".join(lines)


def _lmms_pins(p: dict[str, Any]) -> str:
    """One line that repeats an lmms-eval comparison exactly (local paths by their last part only)."""
    margs = ",".join(
        a for a in (p.get("model_args") or {}).get("original", "").split(",") if "pretrained=" not in a
    )
    dataset = _dataset_name(p.get("dataset_override") or p.get("dataset"))
    revision = (p.get("dataset_kwargs") or {}).get("revision") or "default revision"
    gen = {k: v for k, v in (p.get("generation") or {}).items() if k != "until"}
    return (
        f"\n- {p['task']}: lmms-eval {p.get('lmms_eval')}, task version {p.get('task_version')}, "
        f"{p.get('task_yaml')} sha256 {str(p.get('task_yaml_sha256'))[:12]}, task hash {str(p.get('task_hash'))[:12]}; "
        f"dataset {dataset} ({revision}), split {p.get('split')}, limit {p.get('limit') or 'none'}; "
        f"generation {json.dumps(gen, sort_keys=True)}; model {p.get('model')} with {margs or 'no model_args'}"
    )


SPEED_ROWS = (
    ("parameters", "params_total", _fmt_params),
    ("language backbone parameters", "params_backbone", _fmt_params),
    ("safetensors on disk", "disk_bytes", lambda b: f"{b / 1e6:.1f} MB"),
    ("prefill latency (median)", "prefill_ms_median", lambda v: f"{v:.1f} ms"),
    ("decode tokens/s (median)", "decode_tokens_per_s_median", lambda v: f"{v:.1f}"),
    ("peak memory", "peak_memory_bytes", lambda b: f"{b / 1e6:.0f} MB"),
)


def _speed_section(report: dict[str, Any] | None) -> str:
    rows = {r["model"]: r for r in (report or {}).get("speed") or []}
    if not {"original", "compressed"} <= set(rows):
        return "Not measured."
    a, b = rows["original"], rows["compressed"]
    lines = ["| | original | compressed | compressed / original |", "| --- | --- | --- | --- |"]
    for label, key, fmt in SPEED_ROWS:
        if a.get(key) is None or b.get(key) is None:
            continue
        ratio = b[key] / a[key] if a[key] else None
        lines.append(
            f"| {label} | {fmt(a[key])} | {fmt(b[key])} | {'' if ratio is None else f'{ratio:.2f}×'} |"
        )
    if report.get("speed_method"):
        lines.append(
            f"\nMeasured on {report.get('device')} in {report.get('dtype')}: {report['speed_method']}."
        )
    return "\n".join(lines)


def _spec(plan: dict[str, Any]):
    from compressor.arch.spec import family_spec

    return family_spec(plan["family"])


def _loading_sentence(plan: dict[str, Any]) -> str:
    spec = _spec(plan)
    if spec.remote_code:
        return (
            f"It loads with `{spec.auto_class}` and `trust_remote_code=True`: it runs the {spec.family} modeling "
            "code that this repo carries beside its config (the source repo's own, at the commit it was pruned from)."
        )
    return f"It loads with plain `transformers` (`{spec.auto_class}`), no custom code."


def _usage(plan: dict[str, Any], name: str) -> str:
    spec = _spec(plan)
    if spec.processor == "bunny":
        return f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer, AutoImageProcessor
model = AutoModelForCausalLM.from_pretrained("{name}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{name}")
image_processor = AutoImageProcessor.from_pretrained("{name}")
# as in Bunny's own README: -200 marks the image in input_ids, pixels go in `images=`
```"""
    remote = ", trust_remote_code=True" if spec.remote_code else ""
    return f"""```python
from transformers import {spec.auto_class}, AutoProcessor
model = {spec.auto_class}.from_pretrained("{name}"{remote})
processor = AutoProcessor.from_pretrained("{name}")
```"""


def render(run_dir: str | Path, repo_id: str | None = None) -> str:
    """The README.md of the compressed model."""
    from huggingface_hub import ModelCard

    run = load_run(run_dir)
    plan, prune, source = run["plan"], run["prune"], run["source"]
    base = _dataset_name(source.get("id")) or "the original model"  # a local folder by its last part
    name = repo_id or "compressed-model"
    summary = (
        f"This is **{base}** with {plan['achieved_ratio']:.0%} of its language-backbone parameters removed by "
        f"{plan['method']} pruning"
        + _recovery_phrase(run["recover"])
        + ". The vision tower and the projector are kept. "
        + _loading_sentence(plan)
    )
    if run["eval"] and run["eval"].get("average_retained") is not None:
        summary += f" It keeps {run['eval']['average_retained']:.1f}% of the original's scores on average."
    body = f"""
# {name}

{summary}

Made with compressor from `{base}`{f" at commit `{source['commit']}`" if source.get("commit") else ""}.

## What was removed

{_removed_section(plan, prune, run.get("checkpoint"))}{_picture(run, "importance")}

## Recovery

{_recovery_section(run["recover"])}

## Scores, original vs compressed

{_scores_section(run["eval"])}{_picture(run, "scores")}

{_gate_line(run)}## Speed and memory

{_speed_section(run["eval"])}

## How to use

{_usage(plan, name)}
{_gguf_section(run, repo_id)}
## Recipe

The recipe, with local paths shown by their last part (`python -m compressor run recipe.yaml` reproduces this model from the same data):

```yaml
{public_recipe(run["recipe_yaml"]).rstrip()}
```

## Citation

The pruning and recovery methods follow:

```bibtex
{CITATION}
```
"""
    data = front_matter(run, repo_id)
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content


def gguf_repo_id(recipe_yaml: str, repo_id: str | None) -> str | None:
    """The GGUF repo of a run whose model goes to `repo_id`: the recipe's export.gguf.repo_id, else
    `<repo_id>-GGUF`; None without an export.gguf section or anywhere to push."""
    import yaml

    gguf = ((yaml.safe_load(recipe_yaml) or {}).get("export") or {}).get("gguf")
    if gguf is None:
        return None
    return gguf.get("repo_id") or (f"{repo_id}-GGUF" if repo_id else None)


def _check_rows(report: dict[str, Any]) -> str:
    rows = [
        "| file | question | top-1 agreement | near-ties | largest log-probability gap (nats) | passed |",
        "|---|---|---|---|---|---|",
    ]
    for c in report.get("checks", []):
        what = "image question" if c.get("kind") == "image" else "text"
        gap = f"{c['max_logprob_diff']:.3f}" + (
            f" (≤ {c['max_gap']})" if c.get("max_gap") is not None else ""
        )
        rows.append(
            f"| {c['file']}{' + ' + c['mmproj'] if c.get('mmproj') else ''} | {what} | "
            f"{c['top1_agreement']:.0%} of {c['positions']} (≥ {c['min_agreement']:.0%}) | {c.get('near_ties', 0)} | "
            f"{gap} | {'yes' if c['passed'] else 'no'} |"
        )
    notes = list(
        dict.fromkeys(
            n for c in report.get("checks", []) for n in (c.get("note"), c.get("spacing_note")) if n
        )
    )
    return "\n".join(rows) + "".join(f"\n\nNote: {n}." for n in notes)


def _gguf_section(run: dict[str, Any], repo_id: str | None) -> str:
    """The model card's llama.cpp section: where the GGUF files are and how the export's check went."""
    report = run.get("export")
    if not report:
        return ""
    gguf_repo = gguf_repo_id(run["recipe_yaml"], repo_id)
    where = (
        f"GGUF files for llama.cpp (and the tools built on it) are in [{gguf_repo}](/{gguf_repo})"
        if gguf_repo
        else "This model was also exported to GGUF for llama.cpp (not published)"
    )
    files = ", ".join(f"`{f['file']}`" for f in report.get("files", []))
    mmproj = (
        f" with the projector `{report['mmproj']}`"
        if report.get("mmproj")
        else f" (no mmproj: {report['mmproj_note']})"
        if report.get("mmproj_note")
        else ""
    )
    passed = all(c.get("passed") for c in report.get("checks", [])) and bool(report.get("checks"))
    return f"""
## llama.cpp (GGUF)

{where}: {files}{mmproj}. Each was loaded in llama.cpp and compared with this model in transformers
({"every check passed" if passed else "not every check passed"}):

{_check_rows(report)}
"""


def _gguf_usage(report: dict[str, Any]) -> str:
    texts = [f for f in report.get("files", []) if f.get("kind") == "text"]
    pick = next((f for f in texts if f["quant"] == "q8_0"), texts[0] if texts else None)
    model = pick["file"] if pick else "MODEL.gguf"
    if report.get("mmproj"):
        mmproj = report["mmproj"]
        return f"""```bash
llama-mtmd-cli -m {model} --mmproj {mmproj} --image picture.png -p "Describe the picture."
llama-server -m {model} --mmproj {mmproj}
```"""
    return f"""```bash
llama-cli -m {model}
llama-server -m {model}
```

Text only: {report.get("mmproj_note") or "no mmproj was written"}."""


def render_gguf(run_dir: str | Path, gguf_repo: str, model_repo: str) -> str:
    """The README.md of the GGUF repo: `base_model` is the compressed model's repo (quantized from it), the files
    with their sizes and bits per weight, the check in llama.cpp, and the commands that run them."""
    from huggingface_hub import ModelCard, ModelCardData

    run = load_run(run_dir)
    report = run.get("export")
    if not report:
        raise CompressorError(f"{run_dir} has no reports/export.json: run the export stage first")
    from compressor.export.report import ExportReport

    files = ExportReport.model_validate(report).files
    rows = ["| file | kind | type | size | bits/weight | fallback tensors |", "|---|---|---|---|---|---|"]
    for f in files:
        rows.append(
            f"| {f.file} | {f.kind} | {f.quant} | {_fmt_bytes(f.bytes)} | {f.bits_per_weight:.2f} | "
            f"{len(f.fallbacks)} |"
        )
    fallbacks = [
        f"- `{f.file}`: `{b.tensor}` is {b.got}, not {b.wanted} ({b.why})" for f in files for b in f.fallbacks
    ]
    converter = report.get("converter") or {}
    passed = all(c.get("passed") for c in report.get("checks", [])) and bool(report.get("checks"))
    body = f"""
# {gguf_repo}

GGUF files of [{model_repo}](/{model_repo}) for llama.cpp (llama-server, llama-mtmd-cli) and the tools built on
it, written by compressor with llama.cpp's own converter (`convert_hf_to_gguf.py` from xllamacpp
{converter.get("xllamacpp", "?")}, sha256 `{converter.get("convert_hf_to_gguf_sha256", "?")[:16]}…`).

## Files

{chr(10).join(rows)}
{chr(10) + "Tensors stored in another type than their quant asks for:" + chr(10) + chr(10).join(fallbacks) + chr(10) if fallbacks else ""}
## Checked in llama.cpp

Each text file was loaded in llama.cpp ({"every check passed" if passed else "not every check passed"}) and
compared with the model in transformers (fp32): on a fixed text, teacher-forced (at each position both see the
same prefix), and, with the mmproj, on the answer to a fixed image question (transformers reads llama.cpp's answer
teacher-forced). A position agrees when both pick the same next token, or when transformers ranks llama.cpp's
token within 0.02 nats of its own (a near-tie).

{_check_rows(report)}

## How to run

{_gguf_usage(report)}
"""
    data = ModelCardData(
        base_model=model_repo,
        base_model_relation="quantized",
        library_name="gguf",
        pipeline_tag="image-text-to-text",
        license=(run["source"] or {}).get("license"),
        tags=["gguf", "llama.cpp", "compressor", "pruned"],
        model_name=gguf_repo,
    )
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content


def validate(content: str) -> None:
    """Check the card's metadata the way the Hub will (see `hub.validate_card`)."""
    from compressor import hub

    hub.validate_card(content)
