"""The one file that knows TRL's `SFTConfig` field names: our defaults, the user's `recover.sft`, the build."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError
from compressor.registry import closest

if TYPE_CHECKING:
    from trl import SFTConfig

    from compressor.recover.config import Recover

log = logging.getLogger(__name__)

# Fields that other `recover` options own: setting them under `sft:` is refused with the right place to go.
OWNED = {
    "output_dir": "--out (checkpoints go to OUT.checkpoints)",
    "seed": "recover.seed",
    "data_seed": "recover.seed",
    "max_steps": "recover.max_steps (--max-steps)",
    "resume_from_checkpoint": "--resume",
    "remove_unused_columns": "nothing: the lazy image dataset needs its index column",
    "dataset_kwargs": "nothing: images are processed on the fly",
    "packing": "nothing: TRL cannot pack image datasets",
    "padding_free": "nothing: TRL cannot pad-free image datasets",
}
# The trainer must never push: a token would be written into recipe.yaml and the card, and checkpoints would
# reach the Hub outside the one atomic commit of the finished model (`publish:` does that).
_PUSH = "publish: (repo_id, private) and --token or HF_TOKEN; the finished model is pushed in one commit"
OWNED |= dict.fromkeys(
    [
        "push_to_hub",
        "hub_model_id",
        "hub_token",
        "hub_strategy",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
    ],
    _PUSH,
)
# Mixed precision follows recover.student_dtype: 16-bit frozen weights need autocast around fp32 trainable ones.
PRECISION = {"bfloat16": {"bf16": True, "fp16": False}, "float16": {"bf16": False, "fp16": True}}

# Deprecated transformers names that would lose to our default under the new name: renamed before the build.
ALIASES = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}

# Learning rate per trainable mode when `sft.learning_rate` is not set (the seed: 2e-5 for the LLM; LoRA and a
# lone projector take larger steps).
LEARNING_RATE = {"projector": 1e-4, "lora": 2e-4, "full": 2e-5}


BATCH = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4}  # our defaults: 16 rows a step


def rows_per_step(sft: dict[str, Any]) -> int:
    """Training rows per optimiser step on one device: a recipe's `recover.sft` over our defaults."""
    merged = {**BATCH, **sft}
    return int(merged["per_device_train_batch_size"]) * int(merged["gradient_accumulation_steps"])


def _bf16_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _no_accelerator() -> bool:
    import torch

    return not torch.accelerator.is_available()


def defaults(cfg: Recover, compute: str | None = None) -> dict[str, Any]:
    """SFTConfig values we choose; the user's `recover.sft` overrides any of them.

    `compute`: the student's compute dtype; 16 bits turn on the matching autocast (bf16 / fp16).
    """
    return {
        "learning_rate": LEARNING_RATE.get(cfg.mode, LEARNING_RATE["full"]),  # auto: checked as full
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.03,
        "weight_decay": 0.0,
        "num_train_epochs": 1,
        **BATCH,
        "max_length": 2048,
        "logging_steps": 10,
        "save_strategy": "steps",
        "save_steps": 200,
        "save_total_limit": 2,
        "report_to": "none",
        "bf16": _bf16_available(),
        "activation_checkpointing": True,  # TRL's default, under the name that transformers 5.24 prefers
        "label_names": ["labels"],
        # without it, processes started by torchrun on a machine with no GPU each train alone (no DDP)
        "use_cpu": _no_accelerator(),
        **PRECISION.get(compute or "", {}),
    }


def _owned(cfg: Recover, output_dir: str | Path) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "max_steps": cfg.max_steps or -1,
        "remove_unused_columns": False,
        "dataset_kwargs": {"skip_prepare_dataset": True},
    }


def _field_names() -> set[str]:
    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig) if f.init}


def check_fields(sft: dict[str, Any]) -> None:
    """Refuse unknown SFTConfig fields and fields that other options own, naming the fix."""
    names = _field_names()
    for key in sft:
        if key in OWNED:
            raise CompressorError(f"sft.{key} is set by {OWNED[key]}; remove it from sft")
        if key not in names:
            raise CompressorError(
                f"sft.{key} is not an SFTConfig field{closest(key, names)}; see "
                "https://huggingface.co/docs/trl/sft_trainer#trl.SFTConfig"
            )


def build(
    cfg: Recover,
    output_dir: str | Path,
    assistant_only_loss: bool = False,
    compute: str | None = None,
    **overrides: Any,
) -> SFTConfig:
    """Our defaults < the recipe's `recover.sft` < `overrides`, plus the fields the recipe owns.

    `compute` is the student's compute dtype (see `trainable.compute_dtype`).
    """
    from trl import SFTConfig

    check_fields(cfg.sft)
    sft = {ALIASES.get(k, k): v for k, v in cfg.sft.items()}
    values = {**defaults(cfg, compute), "assistant_only_loss": assistant_only_loss, **sft, **overrides}
    need = PRECISION.get(compute or "")
    if need and not any(values.get(k) for k in ("bf16", "fp16")):
        raise CompressorError(
            f"recover.student_dtype {compute} keeps the frozen weights in 16 bits and the trainable ones in "
            f"float32, which needs autocast: set sft.{'bf16' if compute == 'bfloat16' else 'fp16'}: true (the "
            "default), or student_dtype: float32"
        )
    values.update(_owned(cfg, output_dir))
    try:
        args = SFTConfig(**values)
    except (TypeError, ValueError) as err:
        bad = [k for k, v in cfg.sft.items() if k in str(err) or repr(v) in str(err) or str(v) in str(err)]
        where = f"sft.{bad[0]}" if bad else "sft"
        raise CompressorError(f"{where}: {err}") from None
    _check_launch(args)
    return args


def _check_launch(args: SFTConfig) -> None:
    """Refuse a multi-process launch that would train one independent copy per process."""
    import os

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and args.world_size != launched:
        raise CompressorError(
            f"{launched} processes were launched but the trainer sees a world of {args.world_size}: each would "
            "train alone. On a machine without GPUs set sft.use_cpu: true (the default there)"
        )


def check_sft(cfg: Recover) -> None:
    """Build the SFTConfig once (in a throw-away folder) so that a bad `recover.sft` fails at load time."""
    import tempfile

    compute = None if cfg.student_dtype == "auto" else cfg.student_dtype  # auto depends on the machine
    with tempfile.TemporaryDirectory(prefix="compressor-sft-check-") as tmp:
        build(cfg, tmp, compute=compute)


def sharded(args: SFTConfig) -> bool:
    """FSDP or DeepSpeed ZeRO-3: no process holds the whole model."""
    ds = args.deepspeed_plugin
    return bool(args.fsdp) or (ds is not None and ds.zero_stage == 3)


def device(args: SFTConfig) -> str:
    return str(args.device)


def world_size(args: SFTConfig) -> int:
    return int(args.world_size)


def assistant_only(args: SFTConfig) -> bool:
    return bool(args.assistant_only_loss)


def averages_tokens_across_devices(args: SFTConfig) -> bool:
    return bool(args.average_tokens_across_devices)


def summary(args: SFTConfig) -> dict[str, Any]:
    """The SFTConfig values a report should show (those we or the user set)."""
    keys = ["learning_rate", "lr_scheduler_type", "warmup_steps", "per_device_train_batch_size"]
    keys += ["gradient_accumulation_steps", "num_train_epochs", "max_steps", "max_length", "bf16"]
    keys += ["gradient_checkpointing", "assistant_only_loss", "report_to", "seed", "world_size"]
    return {k: getattr(args, k) for k in keys if hasattr(args, k)}
