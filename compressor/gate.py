"""The quality gate (`publish.require`): scores a compressed model must keep before it is pushed.

Keys: `average_retained` (the report's mean over tasks), a task name (that task's retained share, the mean of its
primary metrics) or `TASK.METRIC` (one metric's retained share). Values are shares of the original's score:
0.95 means 95 % retained. Retained is compressed / original, original / compressed for perplexity, so a higher
share is always better and one threshold direction fits every metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AVERAGE = "average_retained"


@dataclass(frozen=True)
class Verdict:
    key: str
    threshold: float  # share, e.g. 0.95
    got: float | None  # share retained; None when the report has no such score or it is undefined
    passed: bool

    def describe(self) -> str:
        got = "no score" if self.got is None else f"{100 * self.got:.1f} %"
        return f"{self.key} >= {100 * self.threshold:.1f} %: {got} ({'passed' if self.passed else 'NOT met'})"


def check_key(key: str) -> None:
    """A key's form (the recipe checks the task names against its evaluate section)."""
    if key != AVERAGE and (not key or key.count(".") > 1 or any(not p for p in key.split("."))):
        raise ValueError(
            f"publish.require key {key!r} must be average_retained, a task name (e.g. vqa) or TASK.METRIC "
            "(e.g. vqa.accuracy)"
        )


def _retained(report: dict[str, Any], key: str) -> list[float | None]:
    if key == AVERAGE:
        return [report.get(AVERAGE)]
    task, _, metric = key.partition(".")
    found = [t for t in report.get("tasks") or [] if t.get("name") == task]
    if not metric:
        return [t.get("retained") for t in found] or [None]
    return [((t.get("metrics") or {}).get(metric) or {}).get("retained") for t in found] or [None]


def check(require: dict[str, float], report: dict[str, Any]) -> list[Verdict]:
    """One verdict per key; a task that appears several times must pass each time."""
    out = []
    for key, threshold in require.items():
        values = _retained(report, key)
        shares = [None if v is None else v / 100.0 for v in values]
        got = None if any(s is None for s in shares) else min(shares)
        out.append(Verdict(key, threshold, got, got is not None and got >= threshold))
    return out


def failed(verdicts: list[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if not v.passed]
