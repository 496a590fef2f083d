"""Recovery training: the pruned student learns back from the original model (its teacher) with TRL.

`run` loads both with transformers' Auto classes, trains with `DistillationSFTTrainer`, merges LoRA and
writes a plain checkpoint + processor + `train_report.json` into `out` atomically. Trainer checkpoints go to
`OUT.checkpoints/` beside it, so a killed run resumes (`resume=True`) and ends with the same weights.
Heavy imports stay inside functions: the CLI imports this package at start-up.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from compressor.errors import CompressorError
from compressor.recover.config import Recover

log = logging.getLogger(__name__)

TRAIN_REPORT = "train_report.json"
PRUNE_REPORT = "prune_report.json"

__all__ = ["TRAIN_REPORT", "Recover", "Session", "TrainReport", "checkpoint_dir", "prepare", "run"]

Progress = Callable[[int, int, dict[str, Any]], None]


class TrainReport(BaseModel):
    mode: str
    loss: dict[str, float]
    steps: int
    epochs: float
    seconds: float
    seconds_per_step: float | None
    final_loss: float | None
    losses: list[dict[str, float]]  # one entry per logging step: step, loss, loss_<term>, learning_rate ...
    trainable: dict[str, Any]
    data: dict[str, Any]
    teacher: dict[str, Any] | None
    shared_vision: dict[str, Any]
    layer_pairs: list[tuple[int, int]]
    resumed_from: str | None
    world_size: int
    sft: dict[str, Any]
    # compute / trainable / saved dtypes and the source's; where each model lived (devices, offloaded modules)
    precision: dict[str, Any] = {}
    placement: dict[str, Any] = {}
    mode_choice: dict[str, Any] | None = None  # what recover.mode auto chose here, and why


def checkpoint_dir(out: str | Path) -> Path:
    """Where the trainer checkpoints of a run writing `out` live (kept until the run succeeds)."""
    out = Path(out)
    return out.parent / f"{out.name}.checkpoints"


def save_dtype(
    cfg: Recover, teacher_dir: Path | None, student_dir: Path, fallback: str
) -> tuple[str, str | None]:
    """(dtype to save in, the source's declared dtype): the recipe's save_dtype, else the original's.

    The original is the teacher when it is loaded; else the student's folder, which `compressor prune` saves in
    the original's dtype.
    """
    from compressor.models import source_dtype

    source = (source_dtype(teacher_dir) if teacher_dir is not None else None) or source_dtype(student_dir)
    if cfg.save_dtype != "auto":
        return cfg.save_dtype, source
    return source or fallback, source


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def layer_pairs(
    cfg: Recover, student_layers: int, teacher_layers: int, kept_layers: list[int] | None
) -> list[tuple[int, int]]:
    """(student layer, teacher layer) for each extra matched layer; the final states are always matched."""
    mapping = list(cfg.layer_map) if cfg.layer_map is not None else kept_layers or list(range(student_layers))
    if len(mapping) != student_layers:
        raise CompressorError(
            f"recover.layer_map has {len(mapping)} entries but the student has {student_layers} layers; "
            "give one teacher layer per student layer"
        )
    pairs = []
    for i in cfg.hidden_layers:
        if i >= student_layers - 1:
            raise CompressorError(
                f"recover.hidden_layers: {i} is not an inner layer of the {student_layers}-layer student "
                f"(0..{student_layers - 2}); the final normalised state is always matched"
            )
        if mapping[i] >= teacher_layers - 1:
            raise CompressorError(
                f"recover.layer_map[{i}] = {mapping[i]} is not an inner layer of the {teacher_layers}-layer "
                "teacher"
            )
        pairs.append((i, mapping[i]))
    return pairs


def _checkpoints(work: Path) -> list[Path]:
    """The Trainer's checkpoint folders in `work`, oldest step first."""
    import re

    if not work.is_dir():
        return []
    found = [p for p in work.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def whole_checkpoint(folder: Path, mode: str) -> bool:
    """Whether a checkpoint was written to the end: the Trainer writes trainer_state.json after the weights,
    optimizer, scheduler and RNG states, and a LoRA run's projector file comes after that (`SaveExtraTrainable`)."""
    from compressor.recover.trainable import EXTRA_FILE

    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(state, dict)
        and "global_step" in state
        and (mode != "lora" or (folder / EXTRA_FILE).is_file())
    )


def last_whole_checkpoint(work: Path, mode: str) -> str | None:
    """The newest checkpoint written to the end; newer ones that a killed run left half-written are skipped
    (the resumed run writes them again)."""
    for folder in reversed(_checkpoints(work)):
        if whole_checkpoint(folder, mode):
            return str(folder)
        log.warning(
            "%s was not written to the end (the run was killed while saving it): skipped", folder.name
        )
    return None


def _prepare_run_dir(out: Path, resume: bool, mode: str) -> tuple[Path, str | None]:
    work = checkpoint_dir(out)
    if resume:
        last = last_whole_checkpoint(work, mode)
        if last is None:
            raise CompressorError(
                f"nothing to resume: {work} holds no whole trainer checkpoint; run without --resume"
                + (" after deleting that folder" if _checkpoints(work) else "")
            )
        return work, last
    if _checkpoints(work):
        raise CompressorError(
            f"{work} holds checkpoints of an interrupted run: pass --resume to continue it, or delete the folder"
        )
    work.mkdir(parents=True, exist_ok=True)
    return work, None


@dataclass
class Session:
    """A recovery run set up and ready to train: `prepare` builds it, `finish` trains and saves."""

    cfg: Recover
    out: Path
    work: Path
    last: str | None
    trainer: Any  # DistillationSFTTrainer
    student: Any  # the transformers model inside the trainer's (possibly PEFT-wrapped) model
    teacher: Any
    processor: Any
    trainable: Any  # trainable.Trainable
    pairs: list[tuple[int, int]]
    shared: dict[str, Any]
    data: dict[str, Any]
    teacher_info: dict[str, Any] | None
    prune_report: dict[str, Any]
    timer: Any
    vision: Any = None
    precision: dict[str, Any] | None = None
    train_data: Any = None  # data.TrainData: what the trainer read, per source
    mode_choice: dict[str, Any] | None = None

    def finish(self) -> TrainReport:
        """Train (resuming when asked), then write the plain checkpoint + processor + report into `out`."""
        import time

        import torch

        from compressor.recover.trainer import checkpoint_note, oom_advice

        start = time.perf_counter()
        try:
            result = self.trainer.train(resume_from_checkpoint=self.last)
        except torch.OutOfMemoryError:
            state, args = self.trainer.state, self.trainer.args
            raise CompressorError(
                f"recovery ran out of memory at step {state.global_step + 1} of {state.max_steps} "
                f"({sft_device(args)}); nothing was written to the output and "
                f"{checkpoint_note(args.output_dir)}. To fit: {oom_advice(args, self.cfg)}"
            ) from None
        report = self._report(time.perf_counter() - start, result)
        self._save(report)
        return report

    def _report(self, seconds: float, result) -> TrainReport:
        from compressor.recover import args as sft_args

        state, targs = self.trainer.state, self.trainer.args
        if self.vision is not None:
            self.shared.update(hits=self.vision.hits, misses=self.vision.misses)
        losses = [
            {k: float(v) for k, v in e.items() if isinstance(v, (int, float))}
            for e in state.log_history
            if "loss" in e
        ]
        timed = self.timer.seconds[1:] or self.timer.seconds  # the first step pays for warm-up
        return TrainReport(
            mode=self.cfg.mode,
            loss=dict(self.cfg.loss),
            steps=state.global_step,
            epochs=round(float(state.epoch or 0.0), 4),
            seconds=round(seconds, 3),
            seconds_per_step=round(sum(timed) / len(timed), 4) if timed else None,
            final_loss=losses[-1]["loss"] if losses else float(result.training_loss),
            losses=losses,
            trainable=self.trainable.report(),
            data={**self.data, **self._read(), "assistant_only_loss": sft_args.assistant_only(targs)},
            teacher=self.teacher_info,
            shared_vision=self.shared,
            layer_pairs=self.pairs,
            resumed_from=Path(self.last).name if self.last else None,
            world_size=sft_args.world_size(targs),
            sft=sft_args.summary(targs),
            precision={
                **(self.precision or {}),
                **{f"{k}_dtypes": v for k, v in self.trainable.dtypes.items()},
            },
            placement=self._placement(),
            mode_choice=self.mode_choice,
        )

    def _read(self) -> dict[str, Any]:
        """What the trainer read: rows per source and how many batches mixed image and text-only rows."""
        t = self.train_data
        if t is None or len(t.sources) < 2:
            return {}
        return {"seen": dict(t.seen), "mixed_batches": t.mixed_batches[0], "batches": t.mixed_batches[1]}

    def _placement(self) -> dict[str, Any]:
        from compressor.models import placement

        teacher = getattr(self.teacher, "module", self.teacher)  # the model inside a DeepSpeed engine
        out = {"student": placement(self.student)}
        if teacher is not None:
            out["teacher"] = placement(teacher)
            distiller = getattr(self.trainer, "distiller", None)
            if distiller is not None and distiller.placed:
                out["teacher"]["how"] = distiller.placed
        return out

    def _save(self, report: TrainReport) -> None:
        from compressor.models import cast_checkpoint, commit_output, save_model
        from compressor.recover import args as sft_args
        from compressor.recover import trainable

        trainer = self.trainer
        sharded = sft_args.sharded(trainer.args)
        gathered = self.work / "final"
        if sharded:  # FSDP / ZeRO-3: the Trainer gathers the full weights (a collective on every rank)
            trainer.save_model(str(gathered))
        if trainer.accelerator.is_main_process:
            from compressor.hub import publishable

            final = trainable.merge(trainer.model)
            dtype = (self.precision or {}).get("saved")

            def write(folder: Path) -> None:
                if sharded:  # only the model's files: the Trainer also writes training_args.bin (a pickle)
                    for f in gathered.iterdir():
                        if publishable(f.name):
                            shutil.move(str(f), folder / f.name)
                    if dtype is not None:
                        cast_checkpoint(folder, dtype)
                    self.processor.save_pretrained(folder)
                else:
                    save_model(final, self.processor, folder, dtype=dtype)
                (folder / TRAIN_REPORT).write_text(report.model_dump_json(indent=1))
                if (self.work / "runs").is_dir():  # TensorBoard logs (report_to: tensorboard) outlive the run
                    shutil.move(str(self.work / "runs"), folder / "runs")
                if self.prune_report:
                    (folder / PRUNE_REPORT).write_text(json.dumps(self.prune_report, indent=1))

            commit_output(self.out, write)
            shutil.rmtree(self.work, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()


def sft_device(args) -> str:
    from compressor.recover import args as sft_args

    return sft_args.device(args)


def run(
    student_dir: str | Path,
    teacher_src: str | Path | None,
    cfg: Recover,
    data_source: str | None,
    out: str | Path,
    resume: bool = False,
    progress: Progress | None = None,
    token: str | None = None,
    **options: Any,
) -> TrainReport:
    """Train the student in `student_dir` against `teacher_src` (a folder or Hub id) on `data_source`.

    `data_source` overrides `cfg.data.dataset`. `progress` is called as `progress(step, total_steps, {})`
    after every optimiser step and with the logs at each logging step. `options`: see `prepare`.
    """
    session = prepare(student_dir, teacher_src, cfg, data_source, out, resume, progress, token, **options)
    return session.finish()


def prepare(
    student_dir: str | Path,
    teacher_src: str | Path | None,
    cfg: Recover,
    data_source: str | None,
    out: str | Path,
    resume: bool = False,
    progress: Progress | None = None,
    token: str | None = None,
    overwrite: bool = False,
    teacher_revision: str | None = None,
    trust_remote_code: bool = False,
    callbacks: list | None = None,
    teacher_options: dict[str, Any] | None = None,
    mode_choice: dict[str, Any] | None = None,
) -> Session:
    """Load the student and the teacher, choose what trains, build the data and the trainer.

    `mode_choice`: what the plan's `recover.mode: auto` chose (kept in the report; `cfg` carries the mode);
    `overwrite` replaces a non-empty `out`; `callbacks` are extra `TrainerCallback`s; `teacher_options` go to
    the teacher's `from_pretrained` (e.g. `max_memory`, `offload_folder` with `teacher_device: auto`).
    """
    from transformers import set_seed

    from compressor import hub
    from compressor.arch import spec_for
    from compressor.models import load_model, load_processor, prepare_output
    from compressor.recover import args as sft_args
    from compressor.recover import data, trainable
    from compressor.recover.trainer import (
        DistillationSFTTrainer,
        Distiller,
        DivergenceGuard,
        ProgressCallback,
        SaveExtraTrainable,
        StepTimer,
    )

    student_dir, out = Path(student_dir), prepare_output(out, overwrite)
    config = _read_json(student_dir / "config.json")
    if config is None:
        raise CompressorError(
            f"{student_dir} has no config.json: give the folder written by `compressor prune`"
        )
    sources = cfg.sources
    if data_source is not None:  # one source given outright replaces the recipe's
        sources = (sources[0].model_copy(update={"dataset": data_source, "weight": 1.0}),)
    if sources[0].dataset is None:
        raise CompressorError("no training data: pass --data DATA or set recover.data.dataset in the recipe")
    if cfg.uses_teacher and teacher_src is None:
        raise CompressorError(
            f"loss {cfg.loss} needs the teacher: pass --teacher (the original model), or train with loss ce=1"
        )
    spec, backbone = spec_for(config, trust_remote_code)
    prune_report = _read_json(student_dir / PRUNE_REPORT) or {}
    choice = mode_choice
    if cfg.mode == "auto":
        choice = auto_mode(cfg, config, spec, backbone, prune_report, student_dir).model_dump()
        cfg = cfg.model_copy(update={"mode": choice["mode"]})
    work, last = _prepare_run_dir(out, resume, cfg.mode)

    try:
        processor = load_processor(student_dir, trust_remote_code)
    except ImportError as err:  # e.g. a video processor that needs torchvision
        raise CompressorError(f"cannot load the processor saved in {student_dir}: {err}".strip()) from None
    if processor is None or not hasattr(processor, "image_processor"):
        raise CompressorError(
            f"{student_dir} has no multimodal processor (AutoProcessor): save it with the model; recovery feeds "
            "images and chat messages through it"
        )
    # A resumed run's trained weights come back in the trainer (`DistillationSFTTrainer._load_from_checkpoint`,
    # which maps a VLM's original key layout that Trainer's own reload misses: transformers#43701; PEFT for LoRA).
    compute = trainable.compute_dtype(cfg.student_dtype)
    student = load_model(
        student_dir, spec, trainable.load_dtype(cfg.mode, compute), trust_remote_code=trust_remote_code
    )

    teacher, teacher_info, local = None, None, None
    if cfg.uses_teacher:
        local, commit = hub.pull(str(teacher_src), revision=teacher_revision, token=token)
        t_spec, _ = spec_for(_read_json(Path(local) / "config.json") or {}, trust_remote_code)
        if t_spec.family != spec.family:
            raise CompressorError(
                f"teacher {teacher_src} is a {t_spec.family} model but the student is {spec.family}; "
                "give the original model the student was pruned from"
            )
        teacher_dtype = trainable.compute_dtype(cfg.teacher_dtype)
        where = cfg.teacher_device
        teacher = load_model(
            local,
            t_spec,
            teacher_dtype,
            device_map=where if where in (None, "auto") else {"": where},
            trust_remote_code=trust_remote_code,
            **(teacher_options or {}),
        )
        teacher_info = {"source": str(teacher_src), "commit": commit, "dtype": teacher_dtype}
    saved, source_dtype = save_dtype(cfg, Path(local) if local else None, student_dir, compute)
    precision = {"compute": compute, "trainable": "float32", "saved": saved, "source": source_dtype}

    pairs: list[tuple[int, int]] = []
    vision, shared = None, {"enabled": False, "reason": "no teacher"}
    if teacher is not None:
        s_text, t_text = student.config.get_text_config(), teacher.config.get_text_config()
        pairs = layer_pairs(
            cfg, s_text.num_hidden_layers, t_text.num_hidden_layers, prune_report.get("kept_layers")
        )
        if cfg.loss.get("logit_kl") and s_text.vocab_size != t_text.vocab_size:
            raise CompressorError("logit_kl needs the student and the teacher to share the vocabulary")
        vision, shared = _share_vision(cfg, spec, student, teacher)

    set_seed(cfg.seed)  # LoRA initialisation draws from the global generator
    model, info = trainable.setup(student, spec, backbone, cfg.mode, cfg.lora, compute=compute)
    train = data.build(sources, cfg.seed, token)
    targs = sft_args.build(cfg, work, assistant_only_loss=data.assistant_only(processor), compute=compute)
    if sft_args.sharded(targs) and cfg.mode == "lora":
        raise CompressorError(
            "mode lora is merged into the weights at the end, which needs the whole model in one process: "
            "run it under DDP or on one GPU (recipes/accelerate/README.md), or use mode full with FSDP"
        )

    timer, guard = StepTimer(), DivergenceGuard(cfg.divergence_factor)
    # the projector of a LoRA run is saved first, so that a checkpoint is whole before any other callback runs
    cbs = [SaveExtraTrainable(info.names)] if cfg.mode == "lora" else []
    cbs += [guard, timer, *(callbacks or [])]
    if progress is not None:
        cbs.append(ProgressCallback(progress))
    trainer = DistillationSFTTrainer(
        model=model, args=targs, train_dataset=train.dataset, processing_class=processor, callbacks=cbs
    )
    trainer.guard, guard.trainer = guard, trainer
    if teacher is not None:
        trainer.distiller = Distiller(
            teacher=teacher,
            weights={k: v for k, v in cfg.loss.items() if v > 0},
            student_backbone=student.base_model,
            temperature=cfg.temperature,
            direction=cfg.kl_direction,
            student_layers=tuple(s for s, _ in pairs),
            teacher_layers=tuple(t for _, t in pairs),
            teacher_device=None if cfg.teacher_device == "auto" else cfg.teacher_device,
            vision=vision,
            full_forward=not spec.backbone_takes_images,
        )
        teacher_info.update(
            device=cfg.teacher_device or sft_args.device(targs),
            lm_head_runs=trainer.distiller.needs_logits or trainer.distiller.full_forward,
        )
    if last is not None:
        log.info("resuming from %s", last)
        if cfg.mode == "lora" and not trainable.load_extra(model, Path(last)):
            raise CompressorError(
                f"{last} lacks the projector weights ({trainable.EXTRA_FILE}): the run died while saving it. "
                "Delete that checkpoint folder to resume from the one before"
            )
    return Session(
        cfg=cfg,
        out=out,
        work=work,
        last=last,
        trainer=trainer,
        student=student,
        teacher=teacher,
        processor=processor,
        trainable=info,
        pairs=pairs,
        shared=shared,
        data={
            "source": train.source,
            "split": sources[0].split,
            "rows": train.rows,
            "used": train.used,
            "fraction": cfg.fraction,
            "seed": cfg.seed,
            "sources": train.sources,
        },
        train_data=train,
        mode_choice=choice,
        teacher_info=teacher_info,
        prune_report=prune_report,
        timer=timer,
        vision=vision,
        precision=precision,
    )


def auto_mode(
    cfg: Recover, config: dict[str, Any], spec, backbone, prune_report: dict[str, Any], student_dir: Path
):
    """`recover.mode: auto` for a student that `compressor prune` wrote: by its plan's ratio and this machine's
    device (`hardware.choose_recovery`)."""
    from compressor.hardware import choose_recovery
    from compressor.plan import Plan

    if not prune_report.get("plan"):
        raise CompressorError(
            f"recover.mode auto chooses by the pruning ratio, but {student_dir} has no prune_report.json with a plan; "
            "set recover.mode (--mode) to projector, lora or full"
        )
    plan = Plan.model_validate(prune_report["plan"])
    choice = choose_recovery(plan.requested_ratio, plan, config, spec, backbone, cfg)
    log.info("recover.mode auto: %s (%s)", choice.mode, choice.reason)
    return choice


def _share_vision(cfg: Recover, spec, student, teacher):
    from compressor.plan import get_module
    from compressor.recover.trainer import SharedVision, same_weights, shareable_paths

    if not cfg.share_vision:
        return None, {"enabled": False, "reason": "recover.share_vision is false"}
    paths, reason = shareable_paths(spec)
    if not paths:
        return None, {"enabled": False, "reason": reason}
    s_towers = [get_module(student, p) for p in paths]
    t_towers = [get_module(teacher, p) for p in paths]
    if not all(same_weights(s, t) for s, t in zip(s_towers, t_towers)):
        log.warning("the student's vision tower differs from the teacher's: each model runs its own")
        return None, {"enabled": False, "reason": "the student's vision tower differs from the teacher's"}
    return SharedVision(s_towers, t_towers), {"enabled": True, "modules": paths}
