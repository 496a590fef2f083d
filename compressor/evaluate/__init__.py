"""Evaluate a compressed model against its original: our tasks, lmms-eval's benchmarks, speed and memory.

`run(original, compressed, cfg)` loads both models side by side, runs every task of `cfg` on the same samples
with both, times both in the same run, and returns an `EvalReport` with the retained % per task and on
average. Light at import (the CLI imports this package at start-up); the work imports torch lazily.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError
from compressor.evaluate.config import EvalTask, Evaluate, LmmsEval
from compressor.evaluate.report import EvalReport, Score, SpeedRow, TaskResult, mean_or_none, retained

__all__ = [
    "EvalReport",
    "EvalTask",
    "Evaluate",
    "LmmsEval",
    "Score",
    "SpeedRow",
    "TaskResult",
    "retained",
    "run",
]

log = logging.getLogger("compressor")

Progress = Callable[[Iterable[Any], str], Iterable[Any]]


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def weights_digest(folder: Path) -> str:
    """SHA-256 over a model folder's config and weights: the identity of the original for the answer cache."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")) + [folder / "config.json"]:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:16]


def _family(folder: Path, trust_remote_code: bool) -> str:
    import json

    from compressor.arch import spec_for

    return spec_for(json.loads((folder / "config.json").read_text()), trust_remote_code)[0].family


def _run_task(pair, task_cfg: EvalTask, task, token: str | None, progress: Progress) -> TaskResult:
    """One task on both models: open its rows, pick the samples, run, score."""
    from compressor.evaluate import rows

    start = time.perf_counter()
    data = rows.open_rows(task_cfg, token)
    indices = rows.pick(len(data), task_cfg.limit, task_cfg.sample, task_cfg.seed)
    if not indices:
        raise CompressorError(
            f"eval task {task_cfg.name}: split {task_cfg.split!r} of {task_cfg.dataset!r} has no rows"
        )
    how = f"random, seed {task_cfg.seed}" if task_cfg.sample == "random" else "the first rows"
    log.info(
        "eval %s: %d of %d rows of %s (%s)", task_cfg.name, len(indices), len(data), task_cfg.dataset, how
    )
    data.prefetch(indices)  # a Hub dataset's images of the rows picked, and no others
    outcome = task.run(pair, data.raw, data.root, indices, task_cfg, progress)
    scores = {m: Score.of(o, c, task.metrics[m], m in task.primary) for m, (o, c) in outcome.scores.items()}
    return TaskResult.build(
        scores,
        name=task_cfg.name,
        task=task_cfg.name,
        dataset=task_cfg.dataset,
        subset=task_cfg.subset,
        split=task_cfg.split,
        revision=task_cfg.revision,
        commit=data.commit,
        limit=task_cfg.limit,
        rows=len(data),
        sample=task_cfg.sample,
        seed=task_cfg.seed if task_cfg.sample == "random" else None,
        sample_ids=indices,
        samples=outcome.samples,
        seconds=time.perf_counter() - start,
        notes=outcome.notes,
    )


def run(
    original: str | Path,
    compressed: str | Path,
    cfg: Evaluate,
    token: str | None = None,
    progress: Progress | None = None,
    device: str | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    cache: str | Path | None = None,
) -> EvalReport:
    """Evaluate `compressed` against `original` (local model folders, or Hub ids pulled first) as `cfg` says.

    `device` places both models (e.g. "cuda:0", "cpu"); default the first GPU when a model fits it, else the CPU
    (see `compressor.models.pick_device_map`).
    `progress(iterable, description)` wraps each task's loop over samples (default: tqdm bars).
    `cache`: a folder where the original's greedy answers are kept, keyed by a digest of its weights and of
    each input, so evaluating several compressions of one original (a study) generates its answers once.
    """
    from compressor import hub
    from compressor.evaluate import lmms, speed
    from compressor.evaluate.pair import ModelPair
    from compressor.evaluate.tasks import TASKS

    start = time.perf_counter()
    timings: dict[str, float] = {}
    tasks = [(t, TASKS.get(t.name)()) for t in cfg.tasks]
    if cfg.lmms_eval is not None:
        lmms.check_installed(cfg.lmms_eval)  # before any weight is loaded
    if progress is None:
        from compressor.prune import tqdm_progress

        progress = tqdm_progress
    folders, commits = [], []
    for src in (original, compressed):
        folder, commit = hub.pull(src, token=token)
        folders.append(Path(folder))
        commits.append(commit)

    results: list[TaskResult] = []
    speed_rows: list[SpeedRow] = []
    speed_method = None
    used_device, used_dtype = device or "auto", dtype
    peaks = None
    if cfg.speed and cfg.speed_memory:
        t = time.perf_counter()
        log.info("measuring peak memory, one process of its own per model")
        sides = {"original": folders[0], "compressed": folders[1]}
        peaks = speed.peak_memories(sides, cfg, device, dtype, trust_remote_code)
        timings["memory"] = time.perf_counter() - t
    if cfg.tasks or cfg.speed:
        t = time.perf_counter()
        pair = ModelPair.load(folders[0], folders[1], device, dtype, trust_remote_code)
        memo_file = None
        if cache is not None and cfg.tasks:
            memo_file = Path(cache) / f"{weights_digest(folders[0])}-{pair.device}-{pair.dtype}.json"
            pair.memo = json.loads(memo_file.read_text()) if memo_file.is_file() else {}
        timings["load"] = time.perf_counter() - t
        for task_cfg, task in tasks:
            before = pair.reused
            results.append(_run_task(pair, task_cfg, task, token, progress))
            if pair.reused > before:
                results[-1].notes.append(
                    f"the original's answers to {pair.reused - before} prompts reused from the answer cache"
                )
            timings[f"task {len(results)}: {task_cfg.name}"] = results[-1].seconds
        if memo_file is not None:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_file.with_name(memo_file.name + ".tmp")
            tmp.write_text(json.dumps(pair.memo))
            tmp.replace(memo_file)
        if cfg.speed:
            t = time.perf_counter()
            log.info("timing both models (%d rounds)", cfg.speed_repeats)
            speed_rows, speed_method = speed.measure(pair, cfg, peaks)
            timings["speed"] = time.perf_counter() - t
        used_device, used_dtype = pair.device, pair.dtype
        del pair  # free both models before lmms-eval loads them again in its own processes
        _free_memory()
    if cfg.lmms_eval is not None:
        t = time.perf_counter()
        family = _family(folders[0], trust_remote_code)
        # the device and dtype the rest of the run used (the pair's), else the ones asked for
        lmms_device = used_device if cfg.tasks or cfg.speed else device
        results += lmms.run(folders[0], folders[1], family, cfg.lmms_eval, lmms_device, used_dtype)
        timings["lmms_eval"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    return EvalReport(
        original=str(original),
        compressed=str(compressed),
        original_commit=commits[0],
        compressed_commit=commits[1],
        device=used_device,
        dtype=used_dtype,
        tasks=results,
        average_retained=mean_or_none(r.retained for r in results),
        speed=speed_rows,
        speed_method=speed_method,
        timings={k: round(v, 3) for k, v in timings.items()},
        versions={
            **_versions(),
            **{
                k: r.pinned[k]
                for r in results
                if r.pinned and r.pinned.get("lmms_eval")
                for k in ["lmms_eval"]
            },
        },
    )
