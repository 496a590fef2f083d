"""What trains in each recovery mode. The vision tower is frozen in every mode.

- projector: only the multimodal projector (`spec.projector`).
- lora: PEFT LoRA on the decoder's linear layers (a regex anchored on the decoder path, so the vision tower
  never gets adapters) + the projector, trained in place; `merge` folds the adapters back in at the end.
- full: the language model (embeddings, decoder, LM head) + the projector.

Precision (what transformers users expect): frozen weights stay in the compute dtype (bf16 on a GPU that has
it, fp16 on one that doesn't, fp32 on the CPU, or `recover.student_dtype`); every trainable weight — the
projector, LoRA adapters (PEFT upcasts them), the language model in full mode — is a float32 master copy, and
16-bit compute comes from autocast (`SFTConfig(bf16/fp16=True)`). AdamW never steps pure-bf16 weights, where
updates of lr 2e-5 round away.

Parameters are matched by name: a path owns a parameter whose name is the path or starts with "path.", which
covers projector entries that are bare parameters (LLaVA-NeXT's `image_newline`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from compressor.arch import ArchSpec, Backbone
from compressor.errors import CompressorError

EXTRA_FILE = (
    "extra_trainable.safetensors"  # projector weights beside a LoRA checkpoint (PEFT saves only adapters)
)


def compute_dtype(requested: str = "auto") -> str:
    """The dtype frozen weights compute in: `requested`, or bf16 / fp16 on a GPU (bf16 where supported), fp32 on CPU."""
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def load_dtype(mode: str, compute: str) -> str:
    """The dtype to load the student in: float32 for full mode (nearly every weight gets a float32 master copy,
    so loading in 16 bits would only round the source), else the compute dtype (frozen weights stay as loaded)."""
    return "float32" if mode == "full" else compute


def set_precision(model, trainable_names: list[str], compute: str) -> None:
    """Trainable parameters to float32 (master copies), the frozen ones to `compute`, in place."""
    import torch

    target = getattr(torch, compute)
    chosen = set(trainable_names)
    with torch.no_grad():
        for name, p in model.named_parameters():
            want = torch.float32 if name in chosen else target
            if p.is_floating_point() and p.dtype != want:
                p.data = p.data.to(want)


def dtypes_of(model) -> dict[str, list[str]]:
    """The dtypes of the trainable and of the frozen parameters, for the report."""
    out: dict[str, set[str]] = {"trainable": set(), "frozen": set()}
    for p in {id(p): p for p in model.parameters()}.values():
        out["trainable" if p.requires_grad else "frozen"].add(str(p.dtype).removeprefix("torch."))
    return {k: sorted(v) for k, v in out.items()}


@dataclass
class Trainable:
    mode: str
    trainable: int = 0
    total: int = 0
    names: list[str] = field(default_factory=list)  # trained base-model parameters (not LoRA adapters)
    lora_modules: int = 0
    dtypes: dict[str, list[str]] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "trainable_params": self.trainable,
            "total_params": self.total,
            "trainable_share": round(self.trainable / max(self.total, 1), 6),
            "lora_modules": self.lora_modules,
            "dtypes": self.dtypes,
        }


def _under(name: str, paths: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in paths)


def vision_names(model, spec: ArchSpec) -> list[str]:
    """Parameters of the vision tower, less any projector inside it (Qwen's merger)."""
    return [
        n for n, _ in model.named_parameters() if _under(n, spec.vision) and not _under(n, spec.projector)
    ]


def lora_target(spec: ArchSpec, backbone: Backbone, target: str | None) -> str:
    """The PEFT `target_modules` regex: `target` (relative to the decoder) anchored on the decoder path."""
    if target is None:
        mlp = "|".join(re.escape(n) for n in (*backbone.mlp_in, backbone.mlp_out))
        attn = "|".join(re.escape(n) for n in (backbone.q, backbone.k, backbone.v, backbone.o))
        target = (
            rf"layers\.\d+\.({re.escape(backbone.attention)}\.({attn})|{re.escape(backbone.mlp)}\.({mlp}))"
        )
    return rf"{re.escape(spec.decoder)}\.(?:{target})"


def setup(model, spec: ArchSpec, backbone: Backbone, mode: str, lora=None, compute: str | None = None):
    """Freeze and unfreeze `model` for `mode`; returns (model to train — a PeftModel for lora —, Trainable).

    With `compute`, the frozen weights are cast to it and the trainable ones to float32 (see the module doc).
    """
    import torch

    model.requires_grad_(False)
    names = dict(model.named_parameters())
    if mode == "projector":
        chosen = [n for n in names if _under(n, spec.projector)]
    elif mode == "full":
        chosen = [n for n in names if not _under(n, spec.vision) or _under(n, spec.projector)]
    elif mode == "lora":
        chosen = [n for n in names if _under(n, spec.projector)]
    else:
        raise CompressorError(f"unknown recovery mode {mode!r}; known: projector, lora, full")
    if not chosen and mode != "lora":
        raise CompressorError(
            f"no parameter of {spec.family} matches {mode} mode (projector {spec.projector})"
        )
    info = Trainable(mode=mode, names=chosen)
    if compute is not None:
        set_precision(model, chosen, compute)
    if mode == "lora":
        model, info.lora_modules = _add_lora(model, spec, backbone, lora)
    for n in chosen:
        names[n].requires_grad_(True)
    for n in vision_names(model if mode != "lora" else model.get_base_model(), spec):
        if names[n].requires_grad:
            raise RuntimeError(f"internal error: vision parameter {n} is trainable in {mode} mode")
    params = {id(p): p for p in model.parameters()}.values()
    low = sorted({str(p.dtype) for p in params if p.requires_grad and p.dtype != torch.float32})
    if compute is not None and low:
        raise RuntimeError(
            f"internal error: trainable parameters in {low} in {mode} mode; they must be float32"
        )
    info.dtypes = dtypes_of(model)
    info.trainable = sum(p.numel() for p in params if p.requires_grad)
    info.total = sum(p.numel() for p in params)
    return model, info


def _add_lora(model, spec: ArchSpec, backbone: Backbone, lora):
    from peft import LoraConfig, get_peft_model

    pattern = lora_target(spec, backbone, lora.target)
    matched = [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]
    if not matched:
        raise CompressorError(
            f"lora.target {lora.target!r} matches no module under {spec.decoder}; module names there look like "
            f"{spec.decoder}.layers.0.{backbone.attention}.{backbone.q}"
        )
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=pattern,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config), len(matched)


def merge(model):
    """A plain transformers model: LoRA folded into the weights (no `lora_` keys), or the model as is."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model


def save_extra(model, names: list[str], folder) -> None:
    """Save the trained base-model parameters that a PEFT checkpoint leaves out (the projector in lora mode)."""
    from safetensors.torch import save_file

    params = dict(_base(model).named_parameters())
    tmp = folder / (EXTRA_FILE + ".tmp")  # whole or absent: its presence marks the checkpoint complete
    save_file({n: params[n].detach().cpu().contiguous() for n in names}, str(tmp))
    tmp.replace(folder / EXTRA_FILE)


def load_extra(model, folder) -> bool:
    """Load what `save_extra` wrote into `model`; False when the checkpoint has no such file."""
    import torch
    from safetensors.torch import load_file

    path = folder / EXTRA_FILE
    if not path.is_file():
        return False
    params = dict(_base(model).named_parameters())
    with torch.no_grad():
        for n, value in load_file(str(path)).items():
            params[n].copy_(value.to(params[n].device, params[n].dtype))
    return True


def _base(model):
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model
