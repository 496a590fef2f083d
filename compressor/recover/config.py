"""The `recover:` section of a recipe: how the pruned student is trained back against its teacher.

Imported by the CLI at start-up, so it stays light: TRL is imported only to validate a non-empty `sft:`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compressor.errors import CompressorError, invalid, words

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DEFAULT_LOSS = {"ce": 0.5, "hidden_mse": 0.5}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraOptions(_Strict):
    r: int = Field(
        16,
        ge=1,
        description="LoRA rank (the seed's Mini-InternVL scripts used 16).",
        json_schema_extra=words(flag="recover --lora-r"),
    )
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    target: str | None = Field(
        None,
        description="Regex of the decoder's linear layers that get adapters, relative to the decoder, e.g. "
        r"'layers\.\d+\.self_attn\.(q|v)_proj'. It is anchored on the decoder path, so the vision tower never "
        "gets adapters. Default: every attention and MLP projection of every layer.",
    )

    @field_validator("target")
    @classmethod
    def _regex_compiles(cls, v: str | None) -> str | None:
        import re

        if v is not None:
            try:
                re.compile(v)
            except re.error as err:
                raise ValueError(f"target {v!r} is not a valid regex: {err}") from None
        return v


class RecoverData(_Strict):
    dataset: str | None = Field(
        None,
        description="Training rows with images + messages (or text-only messages): a Hub dataset id, a local folder "
        "(json/jsonl/parquet or save_to_disk), or a LLaVA json file (llava_v1_5_mix665k.json) with image_folder.",
        json_schema_extra=words(flag="recover --data", label="Training data"),
    )
    split: str = Field(
        "train", description="Dataset split to train on.", json_schema_extra=words(flag="recover --split")
    )
    image_folder: str | None = Field(
        None,
        description="Image root for a LLaVA json file.",
        json_schema_extra=words(flag="recover --image-folder"),
    )
    weight: float = Field(
        1.0,
        gt=0.0,
        description="In a list of sources: this source's share of the training rows is weight / sum of weights.",
        json_schema_extra=words(flag="recover --data DATA:WEIGHT"),
    )
    fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Share of this source's rows drawn (a seeded uniform subset); default recover.fraction.",
    )


class Recover(_Strict):
    mode: Literal["auto", "projector", "lora", "full"] = Field(
        "auto",
        description="What trains. projector: only the multimodal projector (the seed's cheap recovery, enough "
        "up to about 15 percent compression); lora: LoRA on the language model + the projector, merged into a "
        "plain checkpoint at the end; full: language model + projector. The vision tower is frozen in every mode. "
        "auto (default): projector up to 15 percent, full above it, lora when the plan's memory estimate says full "
        "training does not fit this machine's device; the plan says which it chose and why.",
        json_schema_extra=words(flag="recover --mode", label="What trains"),
    )
    loss: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_LOSS),
        description="Weighted loss terms: ce (SFT cross-entropy), hidden_mse (MSE of the final normalised "
        "hidden states, the seed's best), hidden_cosine, logit_kl (KL at temperature T, times T^2). "
        "Default 0.5*ce + 0.5*hidden_mse, as in the seed. Only ce: plain SFT, no teacher is loaded.",
        json_schema_extra=words(flag="recover --loss"),
    )
    temperature: float = Field(2.0, gt=0.0, description="logit_kl temperature T (the seed's default is 2).")
    kl_direction: Literal["forward", "reverse"] = Field(
        "forward", description="logit_kl: forward KL(teacher||student) or reverse KL(student||teacher)."
    )
    hidden_layers: tuple[int, ...] = Field(
        (),
        description="Extra student decoder layers whose outputs are also matched (hidden_mse/hidden_cosine) "
        "against teacher layer layer_map[i]; the final normalised state is always matched.",
    )
    layer_map: tuple[int, ...] | None = Field(
        None,
        description="Teacher layer of each student layer. Default: the prune report's kept_layers for a "
        "depth-pruned student, else the identity.",
    )
    fraction: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="Share of the dataset trained on, a seeded uniform subset (in the seed 5 percent kept over 95 "
        "percent of the scores).",
        json_schema_extra=words(flag="recover --fraction", label="Share of the training data"),
    )
    seed: int = Field(
        42,
        description="Seed of the data subset, the shuffling, LoRA initialisation and training.",
        json_schema_extra=words(flag="recover --seed"),
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        description="Stop after this many optimiser steps (default: one pass over the subset).",
        json_schema_extra=words(flag="recover --max-steps", label="Training steps"),
    )
    divergence_factor: float | None = Field(
        20.0,
        gt=1.0,
        description="Stop when a step's loss exceeds this many times the first step's (an exploding loss); a NaN "
        "or inf loss or gradient always stops. The step's update is not applied, the last good checkpoint is "
        "kept and the error says which setting to lower. null: stop on NaN/inf only.",
    )
    lora: LoraOptions = Field(default_factory=LoraOptions)
    student_dtype: Dtype = Field(
        "auto",
        description="Compute dtype of the student's frozen weights. auto: bfloat16 on a GPU that supports it, "
        "float16 on one that doesn't, float32 on the CPU. Trainable weights are always float32 master copies; "
        "with a 16-bit compute dtype, mixed precision (sft.bf16 / sft.fp16) is switched on.",
    )
    teacher_dtype: Dtype = Field(
        "auto",
        description="Teacher load dtype; auto = bfloat16 (float16 without bf16) on a GPU, float32 on the CPU.",
    )
    save_dtype: Dtype = Field(
        "auto",
        description="dtype of the saved checkpoint. auto: the original model's (its config's dtype / "
        "torch_dtype), so a compressed model is never bigger on disk than its source.",
    )
    teacher_device: str | None = Field(
        None,
        description="Where the teacher lives: a device (cuda:1, cpu), or auto for accelerate's device_map "
        "(spread over the GPUs, then CPU and disk offload; never moved afterwards). Default: the student's GPU "
        "when it fits there, else auto.",
    )
    share_vision: bool = Field(
        True,
        description="Run the frozen vision tower once per batch and feed its output to both models "
        "(where the projector sits outside the vision module).",
    )
    data: RecoverData | tuple[RecoverData, ...] = Field(
        default_factory=RecoverData,
        description="One source (a mapping), or a list of sources with weights (e.g. the task's image rows and "
        "general text rows, 3:1), each with its own split and fraction, interleaved reproducibly; text-only and "
        "image rows mix in one batch.",
    )
    sft: dict[str, Any] = Field(
        default_factory=dict,
        description="Any TRL SFTConfig field (learning_rate, num_train_epochs, per_device_train_batch_size, "
        "gradient_accumulation_steps, bf16, gradient_checkpointing, report_to, save_steps, ...), checked by "
        "building the SFTConfig when the recipe loads.",
    )

    @field_validator("loss")
    @classmethod
    def _known_terms(cls, v: dict[str, float]) -> dict[str, float]:
        from compressor.recover.losses import LOSSES

        for name, weight in v.items():
            LOSSES.get(name)  # raises "unknown loss 'x' (did you mean ...); known: ..."
            if weight < 0:
                raise ValueError(f"loss weight {name}={weight} must be >= 0")
        if not any(w > 0 for w in v.values()):
            raise ValueError(
                "loss needs at least one term with a positive weight, e.g. {ce: 0.5, hidden_mse: 0.5}"
            )
        return v

    @field_validator("data")
    @classmethod
    def _sources(cls, v: RecoverData | tuple[RecoverData, ...]) -> RecoverData | tuple[RecoverData, ...]:
        if isinstance(v, tuple):
            if not v:
                raise ValueError(
                    "data is an empty list; give one source, or a list of {dataset, weight} mappings"
                )
            if any(d.dataset is None for d in v):
                raise ValueError("every source in a data list needs its dataset")
            if len(v) == 1:
                return v[0]
        return v

    @field_validator("hidden_layers", "layer_map")
    @classmethod
    def _non_negative(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and any(i < 0 for i in v):
            raise ValueError(f"layer indices {list(v)} must be >= 0")
        return v

    @model_validator(mode="after")
    def _sft_builds(self) -> Recover:
        if self.sft:
            from compressor.recover.args import check_sft

            check_sft(self)
        return self

    @property
    def sources(self) -> tuple[RecoverData, ...]:
        """The training sources, one or several (each with its weight and fraction resolved)."""
        items = self.data if isinstance(self.data, tuple) else (self.data,)
        return tuple(d.model_copy(update={"fraction": d.fraction or self.fraction}) for d in items)

    @property
    def uses_teacher(self) -> bool:
        from compressor.recover.losses import LOSSES

        return any(LOSSES.get(n).uses_teacher for n, w in self.loss.items() if w > 0)


def parse_recover(data: Any, where: str = "(in memory)") -> Recover:
    """A `recover:` mapping → Recover, or a CompressorError naming each bad field."""
    try:
        return Recover.model_validate(data or {})
    except ValidationError as err:
        raise invalid(err, f"invalid recover section {where}", Recover, prefix="recover") from None


def parse_sources(values: list[str]) -> list[dict[str, Any]]:
    """`--data` values, each `SOURCE` or `SOURCE:WEIGHT` → [{"dataset", "weight"}] (one entry without weight)."""
    out: list[dict[str, Any]] = []
    for value in values:
        source, sep, weight = value.rpartition(":")
        if sep and source and not weight.startswith(("/", "\\")):  # a Windows drive or URL keeps its colon
            try:
                out.append({"dataset": source, "weight": float(weight)})
                continue
            except ValueError:
                if len(values) > 1:
                    raise CompressorError(
                        f"--data {value!r}: the weight after the last ':' must be a number, e.g. "
                        "--data vqa-rows:3 --data text-rows:1"
                    ) from None
        out.append({"dataset": value})
    return out


def parse_loss(text: str) -> dict[str, float]:
    """`ce=0.5,hidden_mse=0.5` → {"ce": 0.5, "hidden_mse": 0.5} (names are checked by Recover)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise CompressorError(
                f"--loss term {part!r} must be NAME=WEIGHT, e.g. ce=0.5,hidden_mse=0.5"
            ) from None
    if not out:
        raise CompressorError("--loss is empty; give e.g. ce=0.5,hidden_mse=0.5")
    return out
