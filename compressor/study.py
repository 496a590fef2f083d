"""`python -m compressor study STUDY.yaml`: a grid of recipes, every cell an ordinary `api.run`.

A study file is a base recipe and groups of cells::

    name: seed-miniature
    reference: reference-smollm2-llava-v1   # optional: the reference build it measures on (default: the current)
    keep_weights: false        # optional: delete a cell's weights once it is scored (default true; --drop-weights)
    base:                      # an ordinary recipe; "{reference}" is the built reference MLLM's folder
      model: {source: "{reference}/model"}
      prune: {method: width, ratio: 0.3}
      evaluate: {tasks: [...]}
    groups:
      - name: width-vs-depth   # one finding
        set: {recover: null}   # dotted recipe keys set for every cell of the group
        grid:                  # any recipe field, as a dotted key, with a list: the cartesian product
          prune.method: [width, depth]
          prune.ratio: [0.15, 0.30, 0.45, 0.60]
        cells:                 # optional explicit variants, crossed with the grid (e.g. a mode and its lr)
          - {recover.mode: projector, recover.sft.learning_rate: 1.0e-3}

Each cell is validated as a recipe before anything runs, gets its own run folder named from its settings and
a hash of its recipe (a cell that two groups share runs once), and is resumable: a killed study picks up where
it stopped, a finished cell is never recomputed. The study folder gets `results.csv`, `results.md` (tables
shaped like the seed's, the seed's published numbers beside ours) and PNG plots; `--render` rebuilds them from
the run folders alone, without running anything.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError

log = logging.getLogger("compressor")

# The seed's published average retained % (arXiv 2604.24380, project page tables; see shared/research).
SEED = {
    "no recovery": {
        "LLaVA-v1.5-7B": {"width": {0.15: 90.87, 0.30: 79.88}, "depth": {0.15: 72.22, 0.30: 69.18}},
        "Bunny-v1.0-3B": {"width": {0.15: 90.87, 0.30: 75.58}, "depth": {0.15: 88.84, 0.30: 69.03}},
    },
    # best recipe: layerwise + SFT + L2 hidden-state KD below 45 %, widthwise + SFT + L2 from 45 %
    "best recipe": {
        "LLaVA-v1.5-7B": {0.15: 98.10, 0.30: 96.38, 0.45: 83.99, 0.60: 78.13},
        "Bunny-v1.0-3B": {0.15: 98.98, 0.30: 94.37, 0.45: 90.48, 0.60: 83.86},
    },
}

# Columns of the results: (column, task name in the eval report, metric)
METRICS = (
    ("open_acc", "vqa", "accuracy"),
    ("yes_no_acc", "yes_no", "accuracy"),
    ("perplexity", "perplexity", "perplexity"),
)


def add_arguments(p) -> None:
    p.add_argument("study", help="study .yaml (see compressor.study)")
    p.add_argument("--run-dir", help="the study's folder (default runs/STUDY_NAME); a rerun resumes")
    p.add_argument(
        "--render", action="store_true", help="only rebuild results.csv, the tables and plots from the runs"
    )
    p.add_argument("--group", action="append", help="run only this group (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and stop")
    p.add_argument(
        "--drop-weights",
        action="store_true",
        help="delete each cell's weights (*.safetensors, checkpoints) once it is scored; its reports, plan and "
        "recipe stay, so the results render and the cell is not rerun (the study file's keep_weights: false)",
    )
    p.add_argument(
        "--reference", help="folder of the built reference MLLM, for {reference} (default: the cache)"
    )
    p.add_argument(
        "--token", help="Hub token for Hub sources and pushes (default: HF_TOKEN); never logged or saved"
    )


# ---------------------------------------------------------------------------- the study file


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if node.get(k) is None:
            node[k] = {}
        if not isinstance(node[k], dict):
            raise CompressorError(f"study key {dotted!r}: {k!r} is not a section of the recipe")
        node = node[k]
    node[keys[-1]] = value


def _substitute(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, path in names.items():
            value = value.replace("{" + name + "}", path)
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    return value


@dataclass
class Cell:
    recipe: Any  # Recipe
    data: dict[str, Any]
    settings: dict[str, Any]  # the dotted keys this cell sets (grid + cells + set)
    groups: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.data, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def name(self) -> str:
        return f"{describe(self.recipe, short=True)}-{self.key}".replace(" ", "_").replace("/", "_")


def describe(recipe, short: bool = False) -> str:
    """A human name of a cell: method, ratio, recovery mode, loss, data fraction, then (unless `short`, the form
    run folders are named by, kept as the first study named them) calibration, data mix, matched layers, seed."""
    p, r = recipe.prune, recipe.recover
    parts = [p.method, f"{100 * p.ratio:.0f}%"]
    if short:
        if r is None:
            return " ".join([*parts, "no recovery"])
        loss = "+".join(k for k, w in r.loss.items() if w > 0)
        return " ".join([*parts, r.mode, loss, f"data {100 * r.fraction:g}%"])
    if p.calibration.modality != "image":
        parts.append(f"calibration {p.calibration.modality}")
    if r is None:
        parts.append("no recovery")
    else:
        loss = "+".join(k for k, w in r.loss.items() if w > 0)
        parts += [r.mode, loss, f"data {100 * r.fraction:g}%"]
        if len(r.sources) > 1:
            parts.append("+".join(f"{s.weight:g}" for s in r.sources) + " mix")
        if r.hidden_layers:
            parts.append(f"layers {','.join(map(str, r.hidden_layers))}")
        parts.append(f"seed {r.seed}")
    return " ".join(parts)


@dataclass
class Study:
    name: str
    path: Path
    groups: list[tuple[str, list[Cell]]]
    notes: dict[str, str]
    keep_weights: bool = True

    def cells(self) -> list[Cell]:
        """Unique cells in order of first appearance (a cell shared by two groups runs once)."""
        seen: dict[str, Cell] = {}
        for group, cells in self.groups:
            for c in cells:
                if c.key in seen:
                    seen[c.key].groups.append(group)
                else:
                    c.groups = [group]
                    seen[c.key] = c
        return list(seen.values())


def load_study(path: str | Path, names: dict[str, str] | None = None) -> Study:
    """Read and expand a study file; every cell is validated as a recipe now, before anything runs."""
    import copy

    from compressor.recipe import parse_recipe, read_recipe_file

    path = Path(path)
    data = read_recipe_file(path)
    unknown = set(data) - {"name", "reference", "base", "groups", "notes", "keep_weights"}
    if unknown:
        raise CompressorError(
            f"study {str(path)!r}: unknown top-level keys {sorted(unknown)}; known: name, reference, base, groups, "
            "notes, keep_weights"
        )
    keep_weights = data.get("keep_weights", True)
    if not isinstance(keep_weights, bool):
        raise CompressorError(
            f"study {str(path)!r}: keep_weights is {keep_weights!r}; write keep_weights: true (the default: every "
            "cell keeps its pruned and recovered weights) or false (drop them once the cell is scored)"
        )
    if not isinstance(data.get("base"), dict) or not data.get("groups"):
        raise CompressorError(f"study {str(path)!r} needs a base: recipe and a non-empty groups: list")
    base = data["base"]
    if data.get("reference") is not None:
        from compressor.reference import check_version

        check_version(str(data["reference"]))
    needed = {n for n in ("reference",) if "{" + n + "}" in json.dumps(base) + json.dumps(data["groups"])}
    names = dict(names or {})
    if "reference" in needed and "reference" not in names:
        from compressor.reference import REFERENCE_VERSION, find_reference

        names["reference"] = str(find_reference(version=data.get("reference") or REFERENCE_VERSION).root)
    groups = []
    for g in data["groups"]:
        gname = g.get("name")
        if not gname or set(g) - {"name", "grid", "cells", "set", "finding"}:
            raise CompressorError(
                f"study {str(path)!r}: each group needs a name and may have grid, cells, set, finding; got {g}"
            )
        grid = g.get("grid") or {}
        for k, v in grid.items():
            if not isinstance(v, list) or not v:
                raise CompressorError(f"study group {gname!r}: grid key {k!r} must be a non-empty list")
        variants = g.get("cells") or [{}]
        cells = []
        for variant in variants:
            for combo in itertools.product(*grid.values()):
                settings = {**(g.get("set") or {}), **variant, **dict(zip(grid, combo))}
                tree = copy.deepcopy(base)
                for k, v in settings.items():
                    _set(tree, k, v)
                tree = _substitute(tree, names)
                recipe = parse_recipe(tree, f"(study {path.name}, group {gname}, cell {settings})")
                cells.append(Cell(recipe, tree, settings))
        groups.append((gname, cells))
    return Study(data.get("name") or path.stem, path, groups, data.get("notes") or {}, keep_weights)


# ---------------------------------------------------------------------------- running


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_study(
    study: Study,
    root: Path,
    token: str | None = None,
    groups: list[str] | None = None,
    keep_weights: bool | None = None,
) -> Path:
    """Run every cell not yet finished, in order, with progress and an ETA; then render the results.

    `keep_weights` (default: the study file's, true unless it says otherwise) false deletes a cell's weights once
    it is scored (`drop_weights`).
    """
    keep = study.keep_weights if keep_weights is None else keep_weights
    from compressor import api

    cells = [c for c in study.cells() if not groups or set(c.groups) & set(groups)]
    for cell in cells:  # every cell planned (config only, seconds) before any runs: a bad one fails now
        if not _finished(cell, root / "cells" / cell.name):
            try:
                api.plan(cell.recipe, token=token)
            except CompressorError as err:
                raise CompressorError(
                    f"study cell {describe(cell.recipe)} ({', '.join(cell.groups)}): {err}"
                ) from None
    root.mkdir(parents=True, exist_ok=True)
    (root / "cells").mkdir(exist_ok=True)
    spent: list[float] = []
    failed: list[str] = []
    for i, cell in enumerate(cells, 1):
        folder = root / "cells" / cell.name
        done = _finished(cell, folder)
        left = sum(1 for c in cells[i - 1 :] if not _finished(c, root / "cells" / c.name))
        eta = f", ETA {_fmt_time(left * sum(spent) / len(spent))}" if spent and left else ""
        log.info(
            "study %s: cell %d/%d%s — %s (%s)",
            study.name,
            i,
            len(cells),
            eta,
            describe(cell.recipe),
            "done, skipped" if done else "running",
        )
        if done:
            continue
        t = time.perf_counter()
        try:
            api.run(cell.recipe, folder, token=token, eval_cache=root / "original-answers")
        except CompressorError as err:  # the other cells still run; the study fails at the end, naming it
            log.error("study %s: cell %s failed: %s", study.name, describe(cell.recipe), err)
            failed.append(f"{describe(cell.recipe)}: {err}")
            continue
        spent.append(time.perf_counter() - t)
        dropped = [] if keep else drop_weights(folder)
        (folder / "cell.json").write_text(
            json.dumps(
                {"groups": cell.groups, "settings": cell.settings, "seconds": spent[-1]}
                | ({"weights_dropped": dropped} if dropped else {}),
                indent=1,
            )
        )
        render(study, root)  # partial results are readable while the study runs
    out = render(study, root)
    if failed:
        raise CompressorError(
            f"study {study.name}: {len(failed)} cell(s) failed, the others finished (rerun to retry them):\n"
            + "\n".join(failed)
        )
    return out


def drop_weights(folder: Path) -> list[str]:
    """Delete a scored cell's weights (safetensors, checkpoints); returns what went, relative to `folder`.

    A study's cells are about 750 MB each on the reference MLLM, and its tables need only the reports: the plan,
    recipe, reports, configs and cards stay, so the cell still renders and still counts as finished.
    """
    import shutil

    gone = []
    for ckpt in sorted(folder.glob("*.checkpoints/checkpoint-*")):
        shutil.rmtree(ckpt)
        gone.append(str(ckpt.relative_to(folder)))
    for weights in sorted([*folder.rglob("*.safetensors"), *folder.rglob("*.bin"), *folder.rglob("*.gguf")]):
        weights.unlink()
        gone.append(str(weights.relative_to(folder)))
    return gone


def _finished(cell: Cell, folder: Path) -> bool:
    from compressor.api import RunFolder

    run = RunFolder(folder)
    return run.done("eval") if cell.recipe.evaluate is not None else run.done("prune")


# ---------------------------------------------------------------------------- results


def _row(cell: Cell, folder: Path) -> dict[str, Any] | None:
    from compressor.api import RunFolder

    run = RunFolder(folder)
    if not run.done("eval"):
        return None
    report = json.loads(run.report("eval").read_text())
    plan = json.loads(run.plan.read_text())
    train = json.loads(run.report("train").read_text()) if run.done("train") else None
    meta = json.loads((folder / "cell.json").read_text()) if (folder / "cell.json").is_file() else {}
    r = cell.recipe.recover
    row: dict[str, Any] = {
        "cell": cell.name,
        "groups": " ".join(cell.groups),
        "method": cell.recipe.prune.method,
        "scorer": cell.recipe.prune.scorer_name,
        "ratio": cell.recipe.prune.ratio,
        "achieved_ratio": round(plan.get("achieved_ratio", float("nan")), 4),
        "recovery": "none" if r is None else r.mode,
        "loss": "" if r is None else "+".join(f"{k}={w:g}" for k, w in r.loss.items() if w > 0),
        "fraction": "" if r is None else r.fraction,
        "seed": "" if r is None else r.seed,
        "calibration": cell.recipe.prune.calibration.modality,
        "train_steps": "" if train is None else train["steps"],
        "train_seconds": "" if train is None else round(train["seconds"], 1),
    }
    tasks = {t["name"]: t for t in report["tasks"]}
    acc_retained = []
    for col, task, metric in METRICS:
        score = tasks.get(task, {}).get("metrics", {}).get(metric)
        if score is None:
            continue
        row[f"{col}_original"] = round(score["original"], 4)
        row[f"{col}_compressed"] = round(score["compressed"], 4)
        row[f"{col}_retained"] = None if score["retained"] is None else round(score["retained"], 2)
        if col != "perplexity" and score["retained"] is not None:
            acc_retained.append(score["retained"])
    row["avg_retained"] = round(sum(acc_retained) / len(acc_retained), 2) if acc_retained else None
    speed = {s["model"]: s for s in report.get("speed", [])}
    if speed:
        row["params_original"] = speed["original"]["params_total"]
        row["params_compressed"] = speed["compressed"]["params_total"]
        row["decode_tok_s_original"] = round(speed["original"]["decode_tokens_per_s_median"], 1)
        row["decode_tok_s_compressed"] = round(speed["compressed"]["decode_tokens_per_s_median"], 1)
    row["cell_seconds"] = round(meta.get("seconds", 0.0), 1)
    return row


def collect(study: Study, root: Path) -> list[dict[str, Any]]:
    rows = []
    for cell in study.cells():
        row = _row(cell, root / "cells" / cell.name)
        if row is not None:
            rows.append(row)
    return rows


def render(study: Study, root: Path) -> Path:
    """results.csv, results.md and the plots, from the run folders alone."""
    rows = collect(study, root)
    if not rows:  # e.g. `--render` after the reference changed: keep what an earlier render wrote
        raise CompressorError(
            f"study {study.name!r}: no finished cell in {str(root)!r}, so nothing was rendered and any results.md "
            "there is left as it was; run the study first (python -m compressor study FILE [--group G])"
        )
    root.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with (root / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    plots = plot(study, rows, root)
    (root / "results.md").write_text(markdown(study, rows, plots))
    log.info(
        "study %s: %d of %d cells finished; results in %s", study.name, len(rows), len(study.cells()), root
    )
    return root


def _pct(v: Any) -> str:
    return "—" if v in (None, "") else f"{v:.1f}"


# settings that change when a run writes its checkpoints and logs, never what it learns: no column, no series
BOOKKEEPING = frozenset(
    {
        "recover.sft.save_steps",
        "recover.sft.save_strategy",
        "recover.sft.save_total_limit",
        "recover.sft.logging_steps",
    }
)


def _varied(cells: list[Cell]) -> list[str]:
    """The dotted keys whose value differs between the group's cells (bookkeeping settings aside)."""
    keys = [k for c in cells for k in c.settings if k not in BOOKKEEPING]
    keys = list(dict.fromkeys(keys))
    return [k for k in keys if len({json.dumps(c.settings.get(k), sort_keys=True) for c in cells}) > 1]


def _short(key: str, value: Any) -> str:
    if isinstance(value, dict) and "dataset" in value:  # one data source
        return Path(str(value["dataset"])).name
    if isinstance(value, dict):
        return "+".join(f"{k}" if w == 1 else f"{w:g}·{k}" for k, w in value.items())
    if isinstance(value, list) and value and all(isinstance(v, dict) and "dataset" in v for v in value):
        return " + ".join(
            f"{v.get('weight', 1):g}·{Path(v['dataset']).name}" for v in value
        )  # weighted sources
    return f"{key.split('.')[-1]}={value}"


def _table_value(key: str, value: Any) -> str:
    """A setting as a table cell: terms and sources shortened, nothing set as "—", a path as its last part."""
    if isinstance(value, (dict, list)):
        return _short(key, value)
    if value is None:
        return "—"
    return Path(value).name if isinstance(value, str) and "/" in value else str(value)


def _setting(cell: Cell, dotted: str) -> Any:
    """A cell's value of a dotted recipe key: what it sets, else what its recipe (the base) holds."""
    if dotted in cell.settings:
        return cell.settings[dotted]
    node: Any = cell.data
    for k in dotted.split("."):
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


SEED_KEY = "recover.seed"
# the columns a group over seeds averages: (row key, scale for display)
AVERAGED = ("open_acc_compressed", "yes_no_acc_compressed", "perplexity_compressed", "avg_retained")


def seed_groups(
    cells: list[Cell], by_cell: dict[str, dict[str, Any]]
) -> list[tuple[Cell, list[dict[str, Any]]]]:
    """Cells that differ only in recover.seed, together: (the first such cell, the finished rows of all)."""
    buckets: dict[str, tuple[Cell, list[dict[str, Any]]]] = {}
    for c in cells:
        key = json.dumps({k: v for k, v in c.settings.items() if k != SEED_KEY}, sort_keys=True)
        first, rows = buckets.setdefault(key, (c, []))
        if c.name in by_cell:
            rows.append(by_cell[c.name])
    return list(buckets.values())


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and half the range (with two seeds: the distance of each from the mean)."""
    return sum(values) / len(values), (max(values) - min(values)) / 2


def _averaged_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for several seeds: each averaged column's mean, with its spread under `<col>_spread`."""
    out = dict(rows[0])
    for col in AVERAGED:
        values = [r[col] for r in rows if r.get(col) is not None]
        if values:
            out[col], out[col + "_spread"] = mean_spread(values)
    for col in ("open_acc", "yes_no_acc", "perplexity"):
        orig = rows[0].get(f"{col}_original")
        comp = out.get(f"{col}_compressed")
        if orig and comp:
            out[f"{col}_retained"] = 100 * (orig / comp if col == "perplexity" else comp / orig)
    out["seeds"] = len(rows)
    return out


def _pm(value: float, spread: float | None, scale: float = 1.0, digits: int = 1) -> str:
    text = f"{scale * value:.{digits}f}"
    return text if spread is None else f"{text} ± {scale * spread:.{digits}f}"


def _weights_note(study: Study) -> list[str]:
    """The reference's own caveat about its weights (e.g. dequantised from Q4_1), when the original is one."""
    cells = study.cells()
    report = Path(cells[0].recipe.model.source) / "reference_report.json" if cells else None
    if report is None or not report.is_file():
        return []
    data = json.loads(report.read_text())
    return [f"The original: {data['language_model']}; {data['weights_note']}.", ""]


def markdown(study: Study, rows: list[dict[str, Any]], plots: list[Path]) -> str:
    by_cell = {r["cell"]: r for r in rows}
    out = [f"# Study {study.name}", ""]
    if rows:
        r0 = rows[0]
        out += [
            f"Reference (original): open accuracy {100 * r0.get('open_acc_original', 0):.1f} %, yes/no accuracy "
            f"{100 * r0.get('yes_no_acc_original', 0):.1f} %, held-out perplexity "
            f"{r0.get('perplexity_original', float('nan')):.2f}, {r0.get('params_original') or 0:,} parameters, "
            f"{r0.get('decode_tok_s_original', '—')} decode tokens/s.",
            "",
            *_weights_note(study),
            "Columns: retained % of the original's score (perplexity: original / compressed); AVG-% is the mean of "
            "the two accuracies' retained %, as the seed averages its benchmarks.",
            "",
        ]
    for gname, cells in study.groups:
        got = [by_cell[c.name] for c in cells if c.name in by_cell]
        out += [f"## {gname}", ""]
        if study.notes.get(gname):
            out += [study.notes[gname].strip(), ""]
        varied = _varied(cells)
        head = [
            "method",
            "ratio",
            *(k.split(".")[-1] for k in varied if k not in ("prune.method", "prune.ratio")),
        ]
        head += [
            "open acc",
            "yes/no acc",
            "ppl",
            "AVG-%",
            "params",
            "decode tok/s",
            "seed AVG-% (LLaVA / Bunny)",
        ]
        over_seeds = SEED_KEY in varied
        if over_seeds:
            head = [h for h in head if h != "seed"]
            head.insert(len(head) - 1, "seeds")  # before the seed paper's column
        out += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        entries = (
            [(c, _averaged_row(rs)) for c, rs in seed_groups(cells, by_cell) if rs]
            if over_seeds
            else [(c, by_cell[c.name]) for c in cells if c.name in by_cell]
        )
        for c, r in entries:
            vals = [r["method"], f"{100 * r['ratio']:.0f}% ({100 * r['achieved_ratio']:.1f}%)"]
            vals += [
                _table_value(k, _setting(c, k))
                for k in varied
                if k not in ("prune.method", "prune.ratio", SEED_KEY)
            ]
            sp = r.get
            vals += [
                f"{_pm(r.get('open_acc_compressed', 0), sp('open_acc_compressed_spread'), 100)} "
                f"({_pct(r.get('open_acc_retained'))}%)",
                f"{_pm(r.get('yes_no_acc_compressed', 0), sp('yes_no_acc_compressed_spread'), 100)} "
                f"({_pct(r.get('yes_no_acc_retained'))}%)",
                f"{_pm(r.get('perplexity_compressed', float('nan')), sp('perplexity_compressed_spread'), 1, 2)} "
                f"({_pct(r.get('perplexity_retained'))}%)",
                _pm(r["avg_retained"], sp("avg_retained_spread"))
                if r.get("avg_retained") is not None
                else "—",
                f"{r.get('params_compressed') or 0:,}",
                str(r.get("decode_tok_s_compressed", "—")),
            ]
            if over_seeds:
                vals.append(str(r["seeds"]))
            vals.append(seed_beside(r))
            out.append("| " + " | ".join(vals) + " |")
        if not got:
            out.append("| (no finished cell yet) |" + " |" * (len(head) - 1))
        out.append("")
    for p in plots:
        out += [f"![{p.stem}]({p.name})", ""]
    return "\n".join(out)


def seed_beside(row: dict[str, Any]) -> str:
    """The seed's published AVG-% for the same method, ratio and kind of recovery, where it published one."""
    ratio = round(row["ratio"], 2)
    if row["recovery"] == "none":
        vals = [SEED["no recovery"][m][row["method"]].get(ratio) for m in ("LLaVA-v1.5-7B", "Bunny-v1.0-3B")]
    elif "hidden_mse" in row["loss"] and "ce" in row["loss"]:
        best = "depth" if ratio < 0.45 else "width"
        vals = [
            SEED["best recipe"][m].get(ratio) if row["method"] == best else None for m in SEED["best recipe"]
        ]
    else:
        vals = [None, None]
    return "—" if all(v is None for v in vals) else " / ".join(_pct(v) for v in vals)


def plot(study: Study, rows: list[dict[str, Any]], root: Path) -> list[Path]:
    """Retained % against the ratio (or the data fraction), one line per method/recovery setting, with the
    seed's published curves drawn grey beside ours where the seed measured the same thing."""
    if not rows:
        return []
    from compressor import plots

    paths = []
    by_cell = {r["cell"]: r for r in rows}
    for gname, cells in study.groups:
        got = [(c, by_cell[c.name]) for c in cells if c.name in by_cell]
        varied = _varied(cells)
        x_key = next((k for k in ("prune.ratio", "recover.fraction") if k in varied), None)
        if x_key is None or len({json.dumps(c.settings.get(x_key)) for c, _ in got}) < 2:
            continue  # a line needs two x values
        fig, ax = plots.figure()
        series: dict[str, list[tuple[float, float]]] = {}
        for c, r in got:
            if r.get("avg_retained") is None:
                continue
            label = ", ".join(_short(k, _setting(c, k)) for k in varied if k != x_key) or r["method"]
            series.setdefault(label, []).append((100 * float(_setting(c, x_key)), r["avg_retained"]))
        for label, pts in sorted(series.items()):
            pts.sort()
            plots.line(ax, [p[0] for p in pts], [p[1] for p in pts], f"ours: {label}", marker="o")
        if x_key == "prune.ratio":
            no_recovery = all(r["recovery"] == "none" for _, r in got)
            for model, style in (("LLaVA-v1.5-7B", "--"), ("Bunny-v1.0-3B", ":")):
                curves = (
                    {f"{m} (no recovery)": v for m, v in SEED["no recovery"][model].items()}
                    if no_recovery
                    else {"best recipe": SEED["best recipe"][model]}
                )
                for what, curve in curves.items():
                    xs = sorted(curve)
                    plots.line(
                        ax,
                        [100 * x for x in xs],
                        [curve[x] for x in xs],
                        f"seed {model.split('-')[0]} {what}",
                        style,
                        color="gray",
                        alpha=0.8,
                    )
            xlabel = "compression ratio (% of language-backbone parameters removed)"
        else:
            ax.set_xscale("log")
            xlabel = "recovery data (% of easy-VQA train)"
        plots.decorate(
            ax,
            title=f"{study.name}: {gname}",
            xlabel=xlabel,
            ylabel="average retained % (easy-VQA open + yes/no)",
            legend=7,
        )
        paths.append(plots.save(fig, root / f"{gname}.png"))
    return paths


def main(args) -> int:
    study = load_study(args.study, {"reference": args.reference} if args.reference else None)
    root = Path(args.run_dir or Path("runs") / study.name)
    if args.dry_run:
        for i, cell in enumerate(study.cells(), 1):
            print(f"{i:3d}. {describe(cell.recipe):55s} groups: {', '.join(cell.groups)}")
        return 0
    if args.render:
        render(study, root)
    else:
        from compressor.tokens import token_from

        run_study(
            study,
            root,
            token=token_from(args),
            groups=args.group,
            keep_weights=False if args.drop_weights else None,
        )
    print((root / "results.md").read_text())
    return 0
