"""EvalReport: original against compressed, per task and metric, with retained %, speed and memory.

Plain pydantic, JSON-serialisable with `model_dump(mode="json")`; the run folder keeps it as
`reports/eval.json`, which the model card and the app read.

Retained % is compressed / original × 100 for a metric where higher is better, original / compressed × 100
where lower is better (perplexity), so above 100 always means the compressed model did better. It is None when
the ratio is undefined (a zero score) or meaningless (yes-ratio, parse rates). A task's retained % is the mean
over its primary metrics; the report's average is the mean over tasks.
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from pydantic import BaseModel, Field


def retained(original: float, compressed: float, higher_is_better: bool | None) -> float | None:
    """Retained %, where above 100 means the compressed model did better; None when undefined."""
    if higher_is_better is None:
        return None
    num, den = (compressed, original) if higher_is_better else (original, compressed)
    if den == 0:
        return None
    return 100.0 * num / den


def mean_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return mean(values) if values else None


class Score(BaseModel):
    original: float
    compressed: float
    retained: float | None = Field(description="Percent of the original's score kept (see the module doc).")
    higher_is_better: bool | None
    primary: bool = Field(description="Counts towards the task's retained %.")

    @classmethod
    def of(cls, original: float, compressed: float, higher_is_better: bool | None, primary: bool) -> Score:
        return cls(
            original=original,
            compressed=compressed,
            retained=retained(original, compressed, higher_is_better),
            higher_is_better=higher_is_better,
            primary=primary,
        )


class TaskResult(BaseModel):
    name: str = Field(description="Display name, e.g. vqa, or pope for an lmms-eval task.")
    task: str = Field(description="Registry key of our task, or lmms_eval.")
    dataset: str | None = None
    subset: str | None = None
    split: str | None = None
    revision: str | None = None
    commit: str | None = Field(None, description="Resolved commit of a Hub dataset.")
    limit: int | None = None
    samples: int = Field(description="Samples scored, the same for both models.")
    rows: int | None = Field(None, description="Rows in the split the samples were drawn from.")
    sample: str | None = Field(
        None, description="How the samples were chosen: random (a seeded uniform draw) or first (in order)."
    )
    seed: int | None = Field(None, description="Seed of the random draw.")
    sample_ids: list[int] | None = Field(
        None,
        description="Row indices (0-based, in the split as stored, at `commit` for a Hub dataset) of the rows "
        "scored, in the order scored: the sample can be re-drawn and checked.",
    )
    metrics: dict[str, Score]
    retained: float | None = None
    seconds: float = 0.0
    notes: list[str] = []
    pinned: dict[str, Any] | None = Field(
        None,
        description="For an lmms-eval task, what repeats it exactly: lmms-eval's version, the task, its version, "
        "yaml and sha256, the dataset, its revision and split, the limit, generation settings and model_args.",
    )

    @classmethod
    def build(cls, metrics: dict[str, Score], **fields) -> TaskResult:
        avg = mean_or_none(s.retained for s in metrics.values() if s.primary)
        return cls(metrics=metrics, retained=avg, **fields)


class SpeedRow(BaseModel):
    model: str = Field(description="original or compressed")
    params_total: int | None
    params_backbone: int
    disk_bytes: int = Field(description="Size of the safetensors files.")
    prompt_tokens: int
    new_tokens: int
    repeats: int
    prefill_ms_min: float
    prefill_ms_median: float
    decode_tokens_per_s_best: float
    decode_tokens_per_s_median: float
    peak_memory_bytes: int | None = None
    memory_method: str | None = None


class EvalReport(BaseModel):
    original: str
    compressed: str
    original_commit: str | None = None
    compressed_commit: str | None = None
    device: str
    dtype: str
    tasks: list[TaskResult] = []
    average_retained: float | None = None
    speed: list[SpeedRow] = []
    speed_method: str | None = None
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage.")
    versions: dict[str, str] = Field(default_factory=dict)

    def speed_of(self, model: str) -> SpeedRow | None:
        return next((r for r in self.speed if r.model == model), None)

    def table(self) -> str:
        from compressor.evaluate.table import render

        return render(self)
