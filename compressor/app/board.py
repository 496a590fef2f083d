"""What the page shows of a run: the stage board (`Board`: each stage's state and progress, the log lines
without server paths), the plots gallery as the stages write its pictures (`PlotWatch`), and the results
(eval table, model card, pushed links) once it ends."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from compressor import api
from compressor.app.messages import _html_escape, _table_text
from compressor.recipe import Recipe

# what a run shows: (status, stage board, stage log, eval table, card, URL, plots)
Shown = tuple[Any, Any, Any, Any, Any, Any, Any]


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
