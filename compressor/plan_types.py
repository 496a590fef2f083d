"""The plan's report types: what the memory estimate (`compressor.hardware`), `recover.mode: auto` and the speed
probe (`compressor.speed_probe`) put into a `Plan`.

They live below all three so that `plan.py`, which carries them, and the modules that fill them import this
module instead of each other. Data only (pydantic models and the rows of the plan's table that show them); no
torch, no config reading.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StageMemory(BaseModel):
    model_config = ConfigDict(frozen=True)

    stage: str  # "scoring", "recovery", "evaluation"
    detail: str  # e.g. "taylor, 10 x 1024 tokens" or "lora, batch 4 x 2048"
    gpu_bytes: int  # peak tensor bytes on a GPU (16-bit compute where the recipe's dtypes are auto)
    cpu_bytes: int  # the same stage on the CPU (float32 where auto)
    parts: dict[str, int]  # the GPU peak's terms: weights, teacher, grads, optimizer, activations, logits ...


class MemoryEstimate(BaseModel):
    """Peak memory of each stage, from config.json alone, and the hardware that fits the largest."""

    model_config = ConfigDict(frozen=True)

    stages: list[StageMemory]
    gpu: str | None  # the smallest single GPU that fits every stage; None when none does
    flavor: str  # the smallest Hugging Face Jobs flavour that fits
    notes: list[str] = []

    @property
    def peak_gpu_bytes(self) -> int:
        return max((s.gpu_bytes for s in self.stages), default=0)

    @property
    def peak_cpu_bytes(self) -> int:
        return max((s.cpu_bytes for s in self.stages), default=0)


class RecoveryChoice(BaseModel):
    """What `recover.mode: auto` chose for a plan, and why."""

    model_config = ConfigDict(frozen=True)

    mode: str  # projector, lora or full
    reason: str
    device: str | None = (
        None  # the device the memory was checked against, e.g. "cpu" or "cuda:0 (NVIDIA H100)"
    )
    need_bytes: int | None = None  # full training's peak there, with the allocator's margin and fixed costs
    capacity_bytes: int | None = None


class ProbeRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str  # "original", "planned: width 30%", "alternative: depth 30%"
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    params: int  # decoder + LM head, a tied embedding once
    ideal: float  # original params / these params
    tokens_per_s: dict[int, float]  # batch -> median decode tokens/s
    speedup: dict[int, float]  # batch -> tokens/s ÷ the original's
    prefill_tokens_per_s: float  # batch 1, `prefill_tokens` tokens in one forward (time to first token)
    prefill_speedup: float

    def shape(self) -> str:
        return f"{self.layers} L, q {self.heads} / kv {self.kv_heads}, MLP {self.mlp}"


class SpeedProbe(BaseModel):
    """`plan --speed`: decode and prefill speed of the planned shape and the other method's, measured here."""

    model_config = ConfigDict(frozen=True)

    device: str
    dtype: str
    method: str
    rows: list[ProbeRow]
    note: str | None = None


def speed_rows(probe_: SpeedProbe) -> list[tuple[str, str]]:
    """Rows for the plan table."""
    batches = list(probe_.rows[0].tokens_per_s)
    out = [("speed here", probe_.method)]
    for r in probe_.rows:
        speeds = " / ".join(f"{r.tokens_per_s[b]:.1f}" for b in batches)
        ups = " / ".join(f"{r.speedup[b]:.2f}x" for b in batches)
        out.append(
            (
                f"  {r.label}",
                f"{r.shape()}: decode {speeds} tok/s at batch {' / '.join(map(str, batches))} ({ups}), "
                f"prefill {r.prefill_tokens_per_s:.0f} tok/s ({r.prefill_speedup:.2f}x); ideal {r.ideal:.2f}x",
            )
        )
    return out
