"""The before/after tables of an EvalReport, as plain text (the CLI prints them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compressor.evaluate.report import EvalReport, SpeedRow


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _grid(rows: list[list[str]], left: int) -> str:
    """Rows of cells, the first `left` columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def scores(report: EvalReport) -> str:
    rows = [["task", "metric", "original", "compressed", "retained"]]
    for task in report.tasks:
        label = f"{task.name} ({task.samples})"
        if not task.metrics:
            rows.append([label, "(no metric in both runs)", "", "", "-"])
        for name, s in task.metrics.items():
            rows.append(
                [
                    label,
                    name + (" *" if s.primary else ""),
                    f"{s.original:.4g}",
                    f"{s.compressed:.4g}",
                    _pct(s.retained),
                ]
            )
            label = ""
        if len(task.metrics) > 1:
            rows.append(["", "task retained", "", "", _pct(task.retained)])
    text = _grid(rows, left=2)
    counted = sum(t.retained is not None for t in report.tasks)
    text += f"\n(* primary metric; samples in parentheses)\naverage retained over {counted} task(s): "
    return text + _pct(report.average_retained)


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or b is None else f"{b / a:.3f}"


def speed(report: EvalReport) -> str:
    a: SpeedRow | None = report.speed_of("original")
    b: SpeedRow | None = report.speed_of("compressed")
    if a is None or b is None:
        return ""
    mb = 1e6

    def row(name: str, x: float | None, y: float | None, fmt: str) -> list[str]:
        def show(v: float | None) -> str:
            return "-" if v is None else format(v, fmt)

        return [name, show(x), show(y), _ratio(x, y)]

    rows = [
        ["speed and memory", "original", "compressed", "compressed/original"],
        row("parameters, whole model", a.params_total, b.params_total, ","),
        row("parameters, language backbone", a.params_backbone, b.params_backbone, ","),
        row("safetensors on disk (MB)", a.disk_bytes / mb, b.disk_bytes / mb, ".1f"),
        row("prefill latency, median (ms)", a.prefill_ms_median, b.prefill_ms_median, ".2f"),
        row("prefill latency, min (ms)", a.prefill_ms_min, b.prefill_ms_min, ".2f"),
        row("decode tokens/s, median", a.decode_tokens_per_s_median, b.decode_tokens_per_s_median, ".1f"),
        row("decode tokens/s, best", a.decode_tokens_per_s_best, b.decode_tokens_per_s_best, ".1f"),
        row(
            "peak memory (MB)",
            None if a.peak_memory_bytes is None else a.peak_memory_bytes / mb,
            None if b.peak_memory_bytes is None else b.peak_memory_bytes / mb,
            ".1f",
        ),
    ]
    return f"{_grid(rows, left=1)}\n({report.speed_method})"


def render(report: EvalReport) -> str:
    parts = [f"original:   {report.original}\ncompressed: {report.compressed}"]
    if report.tasks:
        parts.append(scores(report))
    if report.speed:
        parts.append(speed(report))
    return "\n\n".join(parts)
