"""The run's pictures, drawn from its folder's files alone, and the plotting helpers the study uses too.

Four PNGs go into `RUN/plots/` as the stages end (`update`, called by `api.run`):

- `importance.png`: layer importance from `reports/prune.json`: a depth scorer's score per layer with the
  dropped layers in red; for width pruning, per layer, the mean score of the kept and of the removed units
  (KV groups, MLP channels);
- `widths.png`: query heads and MLP channels kept per layer against the original's (`plan.json` and the
  prune report; a dropped layer keeps nothing);
- `losses.png`: the recovery's loss per logging step, the weighted total and each term (`reports/recover.json`);
- `scores.png`: retained % per task and metric as bars, each labelled with the original's and the compressed
  model's score (`reports/eval.json`).

Each picture has a `*_data(run_dir)` function that returns exactly what it plots (None when the run has no
input for it) and a drawing function. The figures are matplotlib `Figure`s on the Agg canvas (no pyplot, so
no global state: safe in the app's threads); the same data gives the same bytes. The study's plots
(`compressor.study.plot`) use `figure`, `line`, `decorate` and `save`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compressor.runs import report_path

log = logging.getLogger("compressor")

FOLDER = "plots"
NAMES = ("importance", "widths", "losses", "scores")
# which pictures a stage's report feeds
OF_STAGE = {"prune": ("importance", "widths"), "recover": ("losses",), "eval": ("scores",)}

DPI = 100
SIZE = (6.4, 4.0)
KEPT, REMOVED, ORIGINAL, AVERAGE = "tab:blue", "tab:red", "#d9d9d9", "#444444"


def path(run_dir: str | Path, name: str) -> Path:
    """Where the picture `name` (one of NAMES) of a run lives: RUN/plots/NAME.png."""
    return Path(run_dir) / FOLDER / f"{name}.png"


# ---------------------------------------------------------------------------- shared helpers


def figure(size: tuple[float, float] = SIZE, rows: int = 1, cols: int = 1, **kwargs):
    """(figure, axes) on the Agg canvas, at the house size and dpi; axes as `Figure.subplots` gives them."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    return fig, fig.subplots(rows, cols, **kwargs)


def line(ax, xs, ys, label: str, style: str | None = None, **kwargs) -> None:
    """One labelled series as a line; `style` a matplotlib format string ("--", ":"), kwargs as `Axes.plot`'s."""
    ax.plot(list(xs), list(ys), *([style] if style else []), label=label, **kwargs)


def decorate(ax, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None, legend=7):
    """Title, axis labels, a light grid, and a legend (font size `legend`; None: no legend) when there are labels."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if legend is not None and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend)


def save(fig, out: str | Path) -> Path:
    """Lay out, write the PNG (parents created) and return its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(out)  # a reader (the app) never sees half a picture
    return out


def _log_scale_if_wide(ax, values: list[float], axis: str = "y", spread: float = 30.0) -> None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > spread:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def _layer_ticks(ax, n: int) -> None:
    step = max(1, math.ceil(n / 16))
    ax.set_xticks(range(0, n, step))
    ax.set_xlim(-0.6, n - 0.4)


# ---------------------------------------------------------------------------- reading the run folder


def _read(path_: Path) -> Any:
    return json.loads(path_.read_text()) if path_.is_file() else None


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _label(scorer: str) -> str:
    return scorer.replace("_", " ")


def importance_data(run_dir: str | Path) -> dict[str, Any] | None:
    """What importance.png shows, from reports/prune.json.

    depth: {"method", "scorer", "layers", "scores" (None where not finite), "dropped", "block" (scores are per
    first layer of a block of that many layers, angular contiguous) or None}.
    width: {"method", "scorer", "layers", "panels": [{"unit", "kept", "removed"}]}, the mean score of the kept
    and of the removed units per layer (removed None where a layer lost none).
    """
    prune = _read(Path(run_dir) / "reports" / "prune.json")
    if not prune:
        return None
    plan = prune.get("plan") or {}
    common = {
        "method": prune["method"],
        "scorer": prune["scorer"],
        "num_samples": prune.get("num_samples", 0),
    }
    if prune["method"] == "depth":
        scores = prune.get("layer_scores")
        if not scores:
            return None
        num = plan.get("num_layers_before") or len(scores)
        block = len(prune.get("dropped_layers") or []) if len(scores) < num else None
        return {
            **common,
            "num_layers": num,
            "layers": list(range(len(scores))),
            "scores": [_finite(s) for s in scores],
            "dropped": list(prune.get("dropped_layers") or []),
            "block": block,
        }
    panels = []
    for unit, scores_key, kept_key in (
        ("KV groups (attention)", "head_scores", "kept_heads"),
        ("MLP channels", "mlp_scores", "kept_channels"),
    ):
        scores, kept = prune.get(scores_key), prune.get(kept_key)
        if not scores:
            continue
        kept_means, removed_means = [], []
        for i, layer in enumerate(scores):
            keep = set(kept[i]) if kept else set(range(len(layer)))
            kept_means.append(_mean([s for j, s in enumerate(layer) if j in keep]))
            removed_means.append(_mean([s for j, s in enumerate(layer) if j not in keep]))
        panels.append({"unit": unit, "kept": kept_means, "removed": removed_means})
    if not panels:
        return None
    return {**common, "layers": list(range(len(panels[0]["kept"]))), "panels": panels}


def widths_data(run_dir: str | Path) -> dict[str, Any] | None:
    """What widths.png shows: per layer of the original, query heads and MLP channels before and kept.

    {"method", "layers", "heads_before", "heads_kept", "mlp_before", "mlp_kept", "dropped"}; a dropped layer
    keeps 0 of each.
    """
    run = Path(run_dir)
    prune = _read(run / "reports" / "prune.json")
    plan = _read(run / "plan.json") or (prune or {}).get("plan")
    if not prune or not plan:
        return None
    n = plan["num_layers_before"]
    heads, kv, mlp = (
        plan["heads_before"],
        plan["kv_heads_before"] or plan["heads_before"],
        plan["intermediate_before"],
    )
    per_group = heads // kv if kv else 1
    dropped = list(prune.get("dropped_layers") or [])
    if prune["method"] == "depth":
        heads_kept = [0 if i in dropped else heads for i in range(n)]
        mlp_kept = [0 if i in dropped else mlp for i in range(n)]
    else:
        kept_heads, kept_channels = prune.get("kept_heads"), prune.get("kept_channels")
        heads_kept = [len(kept_heads[i]) * per_group if kept_heads else heads for i in range(n)]
        mlp_kept = [len(kept_channels[i]) if kept_channels else mlp for i in range(n)]
    return {
        "method": prune["method"],
        "layers": list(range(n)),
        "heads_before": [heads] * n,
        "heads_kept": heads_kept,
        "mlp_before": [mlp] * n,
        "mlp_kept": mlp_kept,
        "dropped": dropped,
        "kv_heads": (kv, plan.get("kv_heads_after")),
    }


def losses_data(run_dir: str | Path) -> dict[str, Any] | None:
    """What losses.png shows, from reports/recover.json: {"mode", "weights", "series": {name: (steps, values)}}.

    "loss" is the weighted total the optimiser saw; each `loss_<term>` the term's own value, unweighted.
    """
    train = _read(report_path(run_dir, "recover"))
    if not train or not train.get("losses"):
        return None
    keys = ["loss"] + sorted({k for e in train["losses"] for k in e if k.startswith("loss_")})
    series = {}
    for key in keys:
        pts = [
            (e["step"], e[key]) for e in train["losses"] if _finite(e.get(key)) is not None and "step" in e
        ]
        if pts:
            series[key] = ([p[0] for p in pts], [p[1] for p in pts])
    if not series:
        return None
    return {"mode": train.get("mode"), "weights": train.get("loss") or {}, "series": series}


def scores_data(run_dir: str | Path) -> dict[str, Any] | None:
    """What scores.png shows, from reports/eval.json: one row per primary metric.

    {"rows": [{"label", "original", "compressed", "retained"}], "average": average retained % or None};
    retained is None where it is undefined (an original score of 0).
    """
    report = _read(Path(run_dir) / "reports" / "eval.json")
    if not report:
        return None
    rows = []
    for task in report.get("tasks") or []:
        for metric, score in task["metrics"].items():
            if score.get("primary"):
                label = task["name"] if metric in (task["name"], "accuracy") else f"{task['name']} {metric}"
                rows.append(
                    {
                        "label": label,
                        "original": score["original"],
                        "compressed": score["compressed"],
                        "retained": score["retained"],
                    }
                )
    if not rows:
        return None
    return {"rows": rows, "average": report.get("average_retained")}


# ---------------------------------------------------------------------------- drawing


def draw_importance(data: dict[str, Any], out: Path) -> Path:
    from matplotlib.patches import Patch

    samples = f", {data['num_samples']} samples" if data.get("num_samples") else ""
    if data["method"] == "depth":
        fig, ax = figure()
        xs = [x for x, s in zip(data["layers"], data["scores"]) if s is not None]
        ys = [s for s in data["scores"] if s is not None]
        block = data.get("block")
        dropped = set(data["dropped"][:1] if block else data["dropped"])
        ax.bar(xs, ys, color=[REMOVED if x in dropped else KEPT for x in xs], width=0.8)
        if block:
            first = data["dropped"][0]
            ax.axvspan(first - 0.5, first + block - 0.5, color=REMOVED, alpha=0.12, lw=0)
        _log_scale_if_wide(ax, ys)
        _layer_ticks(ax, data.get("num_layers") or len(data["layers"]))
        n_drop, n = len(data["dropped"]), data.get("num_layers") or len(data["layers"])
        ax.legend(
            handles=[Patch(color=KEPT, label="kept"), Patch(color=REMOVED, label="dropped")],
            fontsize=8,
            loc="best",
        )
        decorate(
            ax,
            title=f"Layer importance: {n_drop} of {n} layers dropped (red); {_label(data['scorer'])}{samples}",
            xlabel=f"first layer of a block of {block} (the dropped block shaded)"
            if block
            else "decoder layer",
            ylabel=f"{_label(data['scorer'])} (higher = more important)",
            legend=None,
        )
        return save(fig, out)
    panels = data["panels"]
    fig, axes = figure((6.4, 2.2 + 1.8 * len(panels)), rows=len(panels), cols=1, squeeze=False, sharex=True)
    for ax, panel in zip(axes[:, 0], panels):
        xs = data["layers"]
        has_removed = any(v is not None for v in panel["removed"])
        w = 0.4 if has_removed else 0.8
        kept_x = [x - w / 2 if has_removed else x for x in xs]
        ax.bar(kept_x, [v or 0 for v in panel["kept"]], width=w, color=KEPT, label="kept (mean)")
        if has_removed:
            ax.bar(
                [x + w / 2 for x in xs],
                [v or 0 for v in panel["removed"]],
                width=w,
                color=REMOVED,
                label="removed (mean)",
            )
        _log_scale_if_wide(ax, [*panel["kept"], *panel["removed"]])
        _layer_ticks(ax, len(xs))
        decorate(
            ax, title=panel["unit"] + ("" if has_removed else ": none removed"), ylabel="score", legend=8
        )
    axes[-1, 0].set_xlabel("decoder layer")
    fig.suptitle(
        f"Importance of the kept and the removed units per layer ({_label(data['scorer'])}{samples})",
        fontsize=10,
    )
    return save(fig, out)


def draw_widths(data: dict[str, Any], out: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    fig, axes = figure((6.4, 4.4), rows=2, cols=1, sharex=True)
    xs, dropped = data["layers"], data["dropped"]
    kv_before, kv_after = data["kv_heads"]
    for ax, what, unit in ((axes[0], "heads", "query heads"), (axes[1], "mlp", "MLP channels")):
        before, kept = data[f"{what}_before"], data[f"{what}_kept"]
        ax.bar(xs, before, width=0.8, color=ORIGINAL, label="original")
        ax.bar(xs, kept, width=0.56, color=KEPT, label="kept")
        if dropped:
            ax.plot(
                dropped,
                [0] * len(dropped),
                "x",
                color=REMOVED,
                ms=7,
                mew=2,
                clip_on=False,
                label="dropped layer",
            )
        ax.set_ylim(0, max(before) * 1.3)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        _layer_ticks(ax, len(xs))
        if data["method"] == "depth":
            title = f"{unit}: {before[0]} per layer, in {len(xs) - len(dropped)} of {len(xs)} layers"
        else:
            after = "/".join(str(k) for k in sorted(set(kept)))
            groups = f" ({kv_before} → {kv_after} KV groups)" if what == "heads" and kv_after else ""
            title = f"{unit}: {before[0]} → {after} per layer{groups}"
        decorate(ax, title=title, ylabel=unit, legend=None)
    axes[0].legend(fontsize=7, loc="upper right", ncol=3, framealpha=0.9)
    axes[1].set_xlabel("decoder layer (of the original)")
    return save(fig, out)


def draw_losses(data: dict[str, Any], out: Path) -> Path:
    fig, ax = figure()
    values = []
    for key, (steps, ys) in data["series"].items():
        term = key.removeprefix("loss_")
        if key == "loss":
            label, kwargs = "total (weighted)", {"color": "black", "lw": 2}
        else:
            weight = data["weights"].get(term)
            label, kwargs = (f"{term} (weight {weight:g})" if weight is not None else term), {}
        line(ax, steps, ys, label, "-", marker="o" if len(steps) < 30 else None, ms=3, **kwargs)
        values += ys
    from matplotlib.ticker import MaxNLocator

    _log_scale_if_wide(ax, values, spread=20.0)
    if ax.get_yscale() == "linear" and values and min(values) >= 0:
        ax.set_ylim(0, max(values) * 1.3)  # room for the legend above the curves
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    decorate(
        ax,
        title=f"Recovery ({data['mode']}): loss per logging step",
        xlabel="optimiser step",
        ylabel="loss",
        legend=None,
    )
    ax.legend(fontsize=8, loc="upper right", ncol=min(3, len(data["series"])))
    return save(fig, out)


def _retained_text(row: dict[str, Any]) -> str:
    if row["retained"] is not None:
        return f"{row['retained']:.1f}%"
    return "n/a: the original scored 0" if not row["original"] else "n/a"


def draw_scores(data: dict[str, Any], out: Path) -> Path:
    rows = list(data["rows"])
    labels = [r["label"] for r in rows]
    values = [r["retained"] or 0.0 for r in rows]
    colors = [KEPT] * len(rows)
    texts = [f"{_retained_text(r)}  ({r['original']:.3g} → {r['compressed']:.3g})" for r in rows]
    if data.get("average") is not None:
        labels.append("average")
        values.append(data["average"])
        colors.append(AVERAGE)
        texts.append(f"{data['average']:.1f}%")
    fig, ax = figure((6.4, 1.4 + 0.45 * len(labels)))
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, values, color=colors, height=0.6)
    ax.axvline(100, color="black", lw=1, ls="--")
    top = max(110.0, max(values) * 1.45)
    for y, v, text in zip(ys, values, texts):
        ax.text(v + top * 0.01, y, text, va="center", fontsize=8)
    ax.set_yticks(ys, labels)
    ax.set_xlim(0, top)
    decorate(
        ax,
        title="Original vs compressed: retained % per task (original → compressed)",
        xlabel="retained % of the original's score (dashed: 100 %)",
        legend=None,
    )
    return save(fig, out)


PICTURES: dict[str, tuple[Callable[[str | Path], dict | None], Callable[[dict, Path], Path]]] = {
    "importance": (importance_data, draw_importance),
    "widths": (widths_data, draw_widths),
    "losses": (losses_data, draw_losses),
    "scores": (scores_data, draw_scores),
}


def draw(run_dir: str | Path, name: str) -> Path | None:
    """Draw one picture of a run into RUN/plots/NAME.png; None (and nothing written) when it has no input."""
    data_of, drawer = PICTURES[name]
    data = data_of(run_dir)
    if data is None:
        return None
    return drawer(data, path(run_dir, name))


def update(run_dir: str | Path, redraw=()) -> list[Path]:
    """Draw the pictures named in `redraw` anew and any other missing one whose input exists.

    Never raises: a picture that fails is logged as a warning and the run goes on without it.
    """
    drawn = []
    for name in NAMES:
        if name not in redraw and path(run_dir, name).is_file():
            continue
        try:
            out = draw(run_dir, name)
        except Exception as err:  # a picture is never worth a failed run
            log.warning(
                "plot %s not drawn (the run goes on without it): %s: %s", name, type(err).__name__, err
            )
            path(run_dir, name).unlink(missing_ok=True)  # no stale picture of older data
            continue
        if out is not None:
            drawn.append(out)
    return drawn
