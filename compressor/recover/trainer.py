"""`DistillationSFTTrainer`: TRL's SFTTrainer with a teacher; only `compute_loss` is overridden.

Per training batch:
1. the student runs through TRL's own forward (fused LM head, CE normalised by `num_items_in_batch`) while a
   forward hook on its backbone keeps the final normalised hidden state (and any extra layers);
   with a logit term it runs the plain forward instead, for the full logits;
2. its frozen vision tower runs once under `no_grad`, and the teacher reuses that output (`SharedVision`);
3. the teacher, frozen, in `eval()` and under `no_grad`, runs its backbone only — never its LM head unless a
   logit term needs it;
4. the loss is the weighted sum of the registry's terms (`losses.combine`).
Evaluation stays plain CE, so eval numbers compare across recipes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from compressor.errors import CompressorError
from compressor.recover import args as sft_args
from compressor.recover import losses

log = logging.getLogger(__name__)

Progress = Callable[[int, int, dict[str, Any]], None]


# ---------------------------------------------------------------------------- shared vision tower


def _shapes(args: tuple, kwargs: dict) -> tuple:
    """The tensor inputs of a call, by position or name, as shapes (the other options may differ)."""
    named = [*enumerate(args), *sorted(kwargs.items())]
    return tuple((k, tuple(v.shape)) for k, v in named if isinstance(v, torch.Tensor))


def _to(obj: Any, device=None, dtype=None) -> Any:
    """`obj` with its tensors moved (floating ones cast) and every container rebuilt (callers may mutate it)."""
    if isinstance(obj, torch.Tensor):
        if device is None and dtype is None:
            return obj
        return obj.to(device=device, dtype=dtype if obj.is_floating_point() and dtype else None)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(v, device, dtype) for v in obj)
    if isinstance(obj, dict):  # includes transformers' ModelOutput (a dataclass over an OrderedDict)
        return type(obj)(**{k: _to(v, device, dtype) for k, v in obj.items()})
    return obj


def shareable_paths(spec) -> tuple[list[str], str | None]:
    """Vision modules whose output can be shared, or the reason none can."""
    nested = [v for v in spec.vision if any(p == v or p.startswith(v + ".") for p in spec.projector)]
    if nested:
        return (
            [],
            f"the projector sits inside the vision module {nested[0]}, so each model runs its own tower",
        )
    return list(spec.vision), None


def same_weights(a, b) -> bool:
    """Whether two modules hold the same tensors (compared in `b`'s dtype)."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return False
    return all(torch.equal(sa[k].to(sb[k].device, sb[k].dtype), sb[k]) for k in sa)


class SharedVision:
    """The student's frozen vision tower runs once per batch; the teacher's tower returns that output.

    Both towers get an instance `forward` (like TRL's fused LM head): state dicts and module paths are
    unchanged. The student's runs under `no_grad` (the tower is frozen in every mode) and, while `recording`,
    queues its output; the teacher's pops the queue when the inputs have the same shapes, else runs itself.
    """

    def __init__(self, student_towers: list, teacher_towers: list) -> None:
        self._queue: list[tuple[tuple, Any]] = []
        self._recording = False
        self.hits = 0
        self.misses = 0
        for s, t in zip(student_towers, teacher_towers):
            s.forward = self._student_forward(s.forward)
            t.forward = self._teacher_forward(t, t.forward)

    def _student_forward(self, original):
        def forward(*args, **kwargs):
            with torch.no_grad():
                out = original(*args, **kwargs)
            if self._recording:
                self._queue.append((_shapes(args, kwargs), _to(out)))
            return out

        return forward

    def _teacher_forward(self, tower, original):
        def forward(*args, **kwargs):
            if self._queue and self._queue[0][0] == _shapes(args, kwargs):
                from compressor.models import execution_device

                self.hits += 1
                dtype = next(tower.parameters()).dtype
                return _to(self._queue.pop(0)[1], execution_device(tower), dtype)
            self.misses += 1
            return original(*args, **kwargs)

        return forward

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        self._recording = True
        try:
            yield
        finally:
            self._recording = False
            self._queue.clear()


# ---------------------------------------------------------------------------- the teacher side


@contextlib.contextmanager
def capture(module) -> Iterator[dict[str, Any]]:
    """Keep the last output of `module` (a backbone: `.last_hidden_state`, `.hidden_states`) and the attention
    mask it was called with (`mask`: longer than `input_ids` where the model splices image features in)."""
    got: dict[str, Any] = {}

    def hook(_module, _args, kwargs, output):
        got["output"] = output
        got["mask"] = kwargs.get("attention_mask")

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        yield got
    finally:
        handle.remove()


DROP = ("labels", "num_items_in_batch", "fused_lm_head", "use_cache", "output_hidden_states")


@dataclass
class Distiller:
    """Everything the distillation loss needs besides the student; built by `recover.prepare`."""

    teacher: Any  # the unpruned model (a DeepSpeed engine around it under ZeRO-3)
    weights: dict[str, float]
    student_backbone: Any  # the student's backbone module (a hook there reads its hidden states)
    temperature: float = 2.0
    direction: str = "forward"
    student_layers: tuple[int, ...] = ()  # extra layer pairs: student layer i ...
    teacher_layers: tuple[int, ...] = ()  # ... against teacher layer map[i]
    teacher_device: str | None = None
    vision: SharedVision | None = None
    placed: str | None = None  # how `prepare` placed the teacher, for the report
    # the top-level forward splices the images in (Bunny): both models run whole (their LM heads too), the CE is
    # the model's own (its labels grow with the sequence), and the hidden terms use the backbone's longer mask
    full_forward: bool = False
    _ready: bool = field(default=False, repr=False)

    @property
    def needs_logits(self) -> bool:
        return any(losses.LOSSES.get(n).uses_logits for n, w in self.weights.items() if w > 0)

    def prepare(self, trainer: SFTTrainer) -> None:
        """Place the teacher once the accelerator is set up (first training step).

        A teacher that accelerate dispatched (a device_map over several GPUs, CPU or disk offload) stays where
        it is: `.to()` would break its hooks.
        """
        from compressor.models import place

        if self._ready:
            return
        self.teacher.requires_grad_(False)
        ds = trainer.accelerator.state.deepspeed_plugin
        if ds is not None and ds.zero_stage == 3 and self.teacher_device is None:
            from trl.models import prepare_deepspeed

            self.teacher = prepare_deepspeed(self.teacher, trainer.accelerator)
            self.placed = "partitioned by DeepSpeed ZeRO-3"
        else:  # DDP, FSDP (the teacher is replicated), one device, a device of its own, or dispatched
            self.placed = place(self.teacher, self.teacher_device or sft_args.device(trainer.args))
        self.teacher.eval()
        self._ready = True

    @torch.no_grad()
    def teacher_side(self, inputs: dict[str, Any]) -> losses.Side:
        from compressor.models import input_device

        teacher = getattr(self.teacher, "module", self.teacher)  # the model inside a DeepSpeed engine
        device = input_device(teacher)  # not a parameter's device: an offloaded one is on meta
        t_inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        t_inputs = {k: v for k, v in t_inputs.items() if k not in DROP}
        t_inputs["use_cache"] = False
        if self.teacher_layers:
            t_inputs["output_hidden_states"] = True
        backbone = teacher.base_model
        if self.needs_logits or self.full_forward:
            with capture(backbone) as got:
                logits = teacher(**t_inputs).logits
            out = got["output"]
        else:  # stop at the final normalised hidden state: the LM head never runs
            out, logits = backbone(**t_inputs), None
        hidden = [out.last_hidden_state, *(out.hidden_states[i + 1] for i in self.teacher_layers)]
        return losses.Side(hidden=hidden, logits=logits)


# ---------------------------------------------------------------------------- the trainer


class DistillationSFTTrainer(SFTTrainer):
    """SFTTrainer whose training loss adds distillation terms against a frozen teacher.

    `distiller` is set after construction (by `recover.prepare`); None trains plain SFT.
    """

    distiller: Distiller | None = None
    guard: DivergenceGuard | None = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.guard is not None:
            self.guard.add(loss)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        d = self.distiller
        if d is None or return_outputs or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        d.prepare(self)
        labels, mask = inputs["labels"], inputs["attention_mask"].bool()
        if d.student_layers:
            inputs["output_hidden_states"] = True
        vision = d.vision.recording() if d.vision is not None else contextlib.nullcontext()
        with vision, capture(d.student_backbone) as got:
            if d.full_forward:
                plain = {k: v for k, v in inputs.items() if k not in ("num_items_in_batch", "use_cache")}
                output = model(**plain, use_cache=False)
                logits = output.logits if d.needs_logits else None
                ce = output.loss if "ce" in d.weights else None  # already a per-token mean
            elif d.needs_logits:
                plain = {k: v for k, v in inputs.items() if k not in ("labels", "use_cache")}
                logits = model(**plain, use_cache=False).logits
                ce = losses.cross_entropy(logits, labels) if "ce" in d.weights else None
            else:
                logits, ce = None, super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            teacher = d.teacher_side(inputs)
        out = got["output"]
        student = losses.Side(
            hidden=[out.last_hidden_state, *(out.hidden_states[i + 1] for i in d.student_layers)],
            logits=logits,
        )
        spliced = got.get("mask")
        if d.full_forward and spliced is not None and spliced.shape != mask.shape:
            mask = spliced.bool()
        factors = self._factors(labels, mask, num_items_in_batch)
        if ce is not None and not (d.needs_logits or d.full_forward):  # TRL's CE comes scaled: back to a mean
            ce = ce / factors["ce"]
        student.ce = ce
        batch = losses.Batch(mask=mask, temperature=d.temperature, direction=d.direction)
        loss, parts = losses.combine(d.weights, student, teacher, batch, factors)
        for name, value in parts.items():
            self._metrics["train"][f"loss_{name}"].append(value)
        return loss

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Restore a whole checkpoint's weights through transformers' key mapping, or stop.

        `save_pretrained` writes a checkpoint in the layout the model was read from (llava-hf's checkpoints on
        the Hub: `language_model.model.*`), but `Trainer` (transformers 5.24) reads it back with a plain
        `load_state_dict(strict=False)`: no key matches, nothing loads, it logs every parameter as missing, and
        training goes on from the pruned weights (transformers#43701). Here the keys are renamed as
        `from_pretrained` renames them, and a weight still missing stops the run.
        """
        from peft import PeftModel

        model = self.model if model is None else model
        if isinstance(model, PeftModel) or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)  # adapters / sharded engines
        load_checkpoint_weights(model, resume_from_checkpoint)

    def _factors(self, labels, mask, num_items_in_batch) -> dict[str, float]:
        """Multipliers that turn each term's per-token mean on this micro-batch into its share of the step.

        Like `Trainer`: with `num_items_in_batch` (label tokens of every micro-batch of the step, and of every
        rank when `average_tokens_across_devices`) the loss is not divided by the accumulation steps later, and
        it is multiplied by the number of ranks because DDP averages gradients. CE is weighted by this
        micro-batch's share of the label tokens; the hidden-state and logit terms by its share of the
        non-padding tokens of all ranks (exact across ranks; across accumulation steps each micro-batch counts
        the same).
        """
        across = sft_args.averages_tokens_across_devices(self.args) and num_items_in_batch is not None
        world = self.accelerator.num_processes if across else 1
        n_local = mask.sum()
        n_all = self.accelerator.gather(n_local.reshape(1)).sum() if world > 1 else n_local
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        steps = self.current_gradient_accumulation_steps if scaled else 1
        token_share = float(n_local) / max(float(n_all), 1.0) * world / steps
        factors = dict.fromkeys(self.distiller.weights, token_share)
        if num_items_in_batch is None:
            factors["ce"] = 1.0
        else:
            n_labels = float((labels[:, 1:] != -100).sum())
            factors["ce"] = max(n_labels, 1.0) / max(float(num_items_in_batch), 1.0) * world
        return factors


def load_checkpoint_weights(model, folder: str | Path) -> None:
    """Load `folder`'s safetensors (one file or shards) into `model`, keys renamed as `from_pretrained` would.

    Raises CompressorError naming the parameters the checkpoint lacks (tied weights excepted) or holds extra.
    """
    import json

    from safetensors.torch import load_file
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

    folder = Path(folder)
    index = folder / SAFE_WEIGHTS_INDEX_NAME
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / SAFE_WEIGHTS_NAME).is_file():
        files = [SAFE_WEIGHTS_NAME]
    else:
        raise CompressorError(
            f"{folder} holds no {SAFE_WEIGHTS_NAME}: it is not a whole checkpoint of this run; "
            "delete it and pass --resume again to go on from the one before it"
        )
    expected = model.state_dict()
    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    loaded, unexpected = 0, []
    for name in files:  # one shard at a time: host memory holds a shard, not a second copy of the model
        shard = {}
        for key, tensor in load_file(folder / name, device="cpu").items():
            if key not in expected:
                key, _ = rename_source_key(key, renamings, converters, model.base_model_prefix, expected)
            shard[key] = tensor
        try:
            unexpected += model.load_state_dict(shard, strict=False).unexpected_keys
        except RuntimeError as e:  # a shape mismatch: a checkpoint of another pruning
            raise CompressorError(
                f"checkpoint {folder} does not fit the model being trained ({str(e).splitlines()[-1].strip()}); "
                "delete the run's checkpoints and run without --resume"
            ) from None
        loaded += len(shard)
        expected = {k: v for k, v in expected.items() if k not in shard}
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = [k for k in expected if k not in tied]
    if missing or unexpected:
        raise CompressorError(
            f"checkpoint {folder} does not match the model being trained: {len(missing)} weights missing "
            f"(first: {missing[:3]}), {len(unexpected)} unexpected (first: {unexpected[:3]}). The run stopped "
            "before training; delete its checkpoints and run without --resume"
        )
    log.info("resumed weights: %d tensors from %s", loaded, folder)


# ---------------------------------------------------------------------------- callbacks


class ProgressCallback(TrainerCallback):
    """`progress(step, total, {})` after every optimiser step, and `progress(step, total, logs)` with each log.

    Called on the main process only.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress(state.global_step, state.max_steps, {})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.progress(state.global_step, state.max_steps, dict(logs))


class StepTimer(TrainerCallback):
    """Wall time of each optimiser step, for the report."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


class SaveExtraTrainable(TrainerCallback):
    """In lora mode, writes the trained projector beside each checkpoint (PEFT saves only the adapters)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def on_save(self, args, state, control, model=None, **kwargs):
        from pathlib import Path

        from compressor.recover.trainable import save_extra

        if state.is_world_process_zero and self.names and model is not None:
            save_extra(model, self.names, Path(args.output_dir) / f"checkpoint-{state.global_step}")


# ---------------------------------------------------------------------------- failures that name the fix


class TrainingDiverged(CompressorError):
    """The loss went NaN/inf or exploded: recovery stopped before that step's update was applied or saved."""


def _sft_value(args, name: str) -> Any:
    return getattr(args, name, None)


def divergence_advice(args) -> str:
    """Which settings to lower when the loss diverges, with their current values."""
    lr = float(args.learning_rate)
    tips = [f"lower recover.sft.learning_rate (now {lr:g}; try {lr / 10:g})"]
    clip = float(_sft_value(args, "max_grad_norm") or 0.0)
    tips.append(
        f"lower recover.sft.max_grad_norm (now {clip:g})"
        if clip > 0
        else "set recover.sft.max_grad_norm: 1.0"
    )
    if not _sft_value(args, "warmup_steps") and not _sft_value(args, "warmup_ratio"):
        tips.append("add recover.sft.warmup_steps")
    if _sft_value(args, "fp16"):
        tips.append("train in bfloat16 or float32 (recover.student_dtype; float16 overflows)")
    return ", ".join(tips)


def oom_advice(args, cfg=None) -> str:
    """Which settings to lower when recovery runs out of memory, with their current values."""
    batch = _sft_value(args, "per_device_train_batch_size")
    accum = _sft_value(args, "gradient_accumulation_steps")
    tips = [
        f"lower recover.sft.per_device_train_batch_size (now {batch}; raise gradient_accumulation_steps, now "
        f"{accum}, to keep the effective batch)"
    ]
    checkpointing = _sft_value(args, "activation_checkpointing") or _sft_value(args, "gradient_checkpointing")
    if not checkpointing:
        tips.append("turn on recover.sft.gradient_checkpointing (now off)")
    tips.append(f"lower recover.sft.max_length (now {_sft_value(args, 'max_length')})")
    if cfg is not None:
        tips.append(
            f"compute in bfloat16 (recover.student_dtype / teacher_dtype, now {cfg.student_dtype} / "
            f"{cfg.teacher_dtype})"
        )
        if cfg.uses_teacher:
            tips.append("put the teacher on another device (recover.teacher_device)")
        if cfg.mode == "full":
            tips.append("train fewer weights (recover.mode lora)")
    return ", ".join(tips)


def checkpoint_note(folder: str | None) -> str:
    """What a stopped run leaves to resume from."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(folder) if folder and Path(folder).is_dir() else None
    if last is None:
        return "there is no checkpoint to resume from (recover.sft.save_steps sets how often one is saved)"
    return f"the last checkpoint, {last}, is kept (--resume continues from it)"


class DivergenceGuard(TrainerCallback):
    """Stops training at the first optimiser step whose loss is NaN or inf, exceeds `factor` × the first step's
    loss, or whose gradients are not finite: before that step's update is applied, so neither the weights in
    memory nor any checkpoint take it. A checkpoint saved just before that step (its weights gave the bad loss) is
    renamed `…-diverged`, so that `--resume` starts from the last one whose weights trained on finely.

    The trainer reports each micro-batch's loss (`add`); under several processes the verdict is all-reduced,
    so every rank stops at the same step.
    """

    def __init__(self, factor: float | None = 20.0) -> None:
        self.factor = factor
        self.first: float | None = None
        self.trainer = None
        self._loss = None

    def add(self, loss) -> None:
        loss = loss.detach().float().reshape(())
        self._loss = loss if self._loss is None else self._loss + loss

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        loss, self._loss = self._loss, None
        if loss is None:
            return
        grads = [
            p.grad
            for p in (model.parameters() if model is not None else [])
            if p.grad is not None and type(p.grad) is torch.Tensor
        ]
        norm = (
            torch.nn.utils.get_total_norm(grads).to(loss.device)
            if grads
            else torch.zeros((), device=loss.device)
        )
        stats = torch.stack([loss, norm.float()])
        accelerator = getattr(self.trainer, "accelerator", None)
        if accelerator is not None and accelerator.num_processes > 1:
            stats = accelerator.reduce(stats, "mean")
        value, grad_norm = stats.tolist()
        step = state.global_step + 1
        if not math.isfinite(value):
            why = f"the loss is {value}"
        elif not math.isfinite(grad_norm):
            why = f"the gradient norm is {grad_norm} (loss {value:.4g})"
        elif (
            self.factor is not None and self.first is not None and value > self.factor * max(self.first, 1e-8)
        ):
            why = (
                f"the loss exploded to {value:.4g}, over {self.factor:g} × the first step's {self.first:.4g}"
            )
        else:
            if self.first is None:
                self.first = value
            return
        aside = self._set_aside(args, state)
        raise TrainingDiverged(
            f"recovery stopped at step {step} of {state.max_steps}: {why}. That step's update was not applied and "
            f"nothing was written to the output; {aside}{checkpoint_note(args.output_dir)}. To fix it: "
            f"{divergence_advice(args)}"
        )

    def _set_aside(self, args, state) -> str:
        """Rename a checkpoint saved right before the bad step (its weights gave the bad loss); say so."""
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.global_step == 0 or not folder.is_dir() or self.trainer is None:
            return ""
        if self.trainer.accelerator.is_main_process:
            folder.rename(folder.with_name(folder.name + "-diverged"))
        self.trainer.accelerator.wait_for_everyone()
        return f"{folder.name}, whose weights gave this loss, was renamed {folder.name}-diverged; "
