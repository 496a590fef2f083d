"""The one orchestrator. The CLI and the app call only this module (and the recipe/report types).

Each function is one arrow of the data flow in DESIGN.md; the order of stages lives only here.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError, fill_in, worded
from compressor.plan import Plan
from compressor.recipe import Calibration, Recipe

log = logging.getLogger("compressor")

PRUNE_REPORT = "prune_report.json"


def _plan_at(
    recipe: Recipe, token: str | None, speed: bool = False, device: tuple[str, int | None] | None = None
) -> tuple[Plan, str | None]:
    from compressor import hub
    from compressor.arch import spec_for
    from compressor.plan import resolve

    config, commit = hub.pull_config(
        recipe.model.source,
        revision=recipe.model.revision,
        token=token,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    _refuse_text_only(recipe.model.source, config)
    spec, backbone = spec_for(config, recipe.model.trust_remote_code)
    plan_ = resolve(
        config, spec, backbone, recipe.prune, source=recipe.model.source, recipe=recipe, device=device
    )
    _check_matched_layers(recipe, plan_)
    extra = recovery_warnings(recipe) + calibration_notes(recipe)
    update: dict[str, Any] = {"warnings": [*plan_.warnings, *extra]} if extra else {}
    if speed:
        from compressor import speed_probe

        log.info("plan --speed: timing the original, the planned and the alternative shape (random weights)")
        update["speed"] = speed_probe.probe(
            config, spec, backbone, plan_, recipe.prune, dtype=recipe.model.dtype
        )
    return (plan_.model_copy(update=update) if update else plan_), commit


# What the studies on real weights measured (README, Results). v1 (studies/seed-miniature.yaml): at 30 % depth
# pruning with 40 recovery steps, full training kept 94 % of the easy-VQA scores, LoRA 53 %, projector-only 33 %.
# v2 (studies/seed-miniature-v2.yaml, a stronger reference, full training, 2 seeds): at 30 % width kept 97.8 ± 1.1 %
# with 0.5 CE + 0.5 hidden MSE where depth kept 74.3 ± 5.8 %, both after 40 steps of 8 rows; one pass over 5 % of
# the data (1,929 rows, the default budget) brought depth to 98.9 %, over 10 % to 100.4 %.
LIGHT_RECOVERY_MAX_RATIO = 0.2
DEPTH_ROWS_NEEDED = 1929  # rows seen in v2's one pass over 5 %, where depth at 30 % kept 98.9 %


def recovery_warnings(recipe: Recipe) -> list[str]:
    """Warnings about the recovery a recipe asks for, from what the studies measured."""
    r, p = recipe.recover, recipe.prune
    if r is None or p.ratio <= LIGHT_RECOVERY_MAX_RATIO:
        return []
    out = []
    if r.mode not in ("full", "auto"):
        out.append(
            f"recover.mode {r.mode} at ratio {p.ratio:.0%}: on real weights our study kept 94% of the "
            "scores with mode full but 53% with lora and 33% with projector at 30% depth pruning (same steps); "
            "consider recover.mode: full where memory allows (README, Results)"
        )
    if p.method == "width" and len(r.sources) == 1:
        out.append(
            f"recover.data has one source at ratio {p.ratio:.0%}: on real weights our study v2 kept 7% of the "
            "held-out perplexity after width pruning at 30% and full recovery on VQA rows alone, 21% with general "
            "text rows mixed in 3:1 (recover.data as a list with weights), at the same VQA score (97%) (README, "
            "Results)"
        )
    from compressor.recover.args import rows_per_step

    rows = r.max_steps * rows_per_step(r.sft) if r.max_steps is not None else None
    if p.method == "depth" and rows is not None and rows < DEPTH_ROWS_NEEDED:
        out.append(
            f"prune.method depth at ratio {p.ratio:.0%} with recover.max_steps {r.max_steps} ({rows} rows): on real "
            "weights our study v2 kept 74% of the scores after depth pruning at 30% and 40 steps of 8 rows of full "
            f"recovery, 98% after width pruning with the same recovery (2 seeds each); depth got there with "
            f"{DEPTH_ROWS_NEEDED} rows (98.9%, one pass over 5% of the data): leave recover.max_steps unset for one "
            "pass, raise it, or use --method width (README, Results)"
        )
    return out


def _refuse_gguf(family: str) -> None:
    from compressor.arch.spec import family_spec

    refusal = family_spec(family).gguf.refusal
    if refusal:
        raise CompressorError(
            f"cannot export {family} to GGUF: {refusal}; remove the recipe's export.gguf section to run without it"
        )


def _refuse_text_only(source: str, config: dict[str, Any]) -> None:
    """A text-only LLM (no vision config, no remote code) gets a message that says what to do instead."""
    from compressor.arch.spec import supported_families

    model_type = config.get("model_type")
    multimodal = "vision_config" in config or "text_config" in config or config.get("auto_map")
    if model_type in supported_families() or multimodal or "num_hidden_layers" not in config:
        return
    raise CompressorError(
        f"{source} is a text-only LLM (model_type {model_type!r}, no vision_config): compressor prunes "
        f"multimodal LLMs ({', '.join(supported_families())}). Give the MLLM built on it instead (e.g. "
        "llava-hf/llava-1.5-7b-hf for Vicuna-7B), or use a text-only pruner such as LLM-Pruner for the LLM alone"
    )


def plan(
    recipe: Recipe,
    token: str | None = None,
    speed: bool = False,
    device: tuple[str, int | None] | None = None,
) -> Plan:
    """Read config.json only (no weights) and resolve the recipe into an exact Plan.

    speed: also measure how fast the planned shape, and the other method's at the same ratio, decode on this
    machine (random weights of the language model, `compressor.speed_probe`; seconds to minutes).
    device: (name, bytes) that `recover.mode: auto` chooses for, where the run will train (default: this machine;
    `hardware.jobs_device()` for Hugging Face Jobs)."""
    return _plan_at(recipe, token, speed, device)[0]


def calibration_batches(recipe: Recipe, plan_: Plan, spec, processor, config, token: str | None = None):
    """The calibration samples the plan's scorer needs (none for data-free scorers)."""
    from compressor.data import load_rows
    from compressor.prune.calibration import build_batches

    if not plan_.num_samples:
        return []
    cal = recipe.prune.calibration
    log.info("calibration: %d samples from %s", plan_.num_samples, cal.dataset)
    rows = load_rows(cal.dataset, split=cal.split, image_folder=cal.image_folder, token=token)
    if len(rows) < plan_.num_samples:
        where = "--num-samples (recipe prune.calibration.num_samples)"
        raise CompressorError(
            f"calibration data {cal.dataset!r} (split {cal.split!r}) has {len(rows)} rows but {plan_.num_samples} "
            f"samples are asked for: lower {where} to at most {len(rows)}, or give more rows"
            if rows
            else f"calibration data {cal.dataset!r} (split {cal.split!r}) has no rows; give rows with images + messages"
        )
    if cal.modality == "image":
        _need_images(rows, cal.dataset)
    elif cal.modality == "text":
        rows = TextOnly(rows)
    return build_batches(
        rows, processor, config, plan_.num_samples, cal.max_length, cal.seed, spec.needs_mm_token_type_ids
    )


def _need_images(rows, dataset: str, checked: int = 16) -> None:
    """Refuse calibration rows without images (an MLLM's importance is measured on image + text) unless the
    recipe asks for text-only or mixed calibration."""
    raw = rows.raw
    for i in range(min(checked, len(raw))):
        row = raw[i]
        if row.get("images") or row.get("image"):
            return
    raise CompressorError(
        f"calibration data {dataset!r} has no images in its first {min(checked, len(raw))} rows: by default an "
        "MLLM's importance is measured on image + text rows; add 'images' (paths relative to the rows) to each "
        "row, use another dataset, or measure on text on purpose with prune.calibration.modality: text (or "
        "mixed; CLI --calibration-modality)"
    )


class TextOnly:
    """Calibration rows with their images dropped (`prune.calibration.modality: text`)."""

    def __init__(self, rows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from compressor.data import normalise

        row = dict(self.rows.raw[i])
        for key in ("images", "image"):
            row.pop(key, None)
        row = normalise(row, self.rows.root)
        for m in row["messages"]:
            m["content"] = [part for part in m["content"] if part.get("type") != "image"]
        return row

    def sample(self, n: int, seed: int) -> list[int]:
        return self.rows.sample(n, seed)


def _check_matched_layers(recipe: Recipe, plan_: Plan) -> None:
    """recover.hidden_layers must be inner layers of the student this plan makes: refused now, not after pruning."""
    r = recipe.recover
    if r is None or not r.hidden_layers:
        return
    inner = plan_.num_layers_after - 2
    bad = [i for i in r.hidden_layers if i > inner]
    if bad:
        raise CompressorError(
            f"recover.hidden_layers {list(r.hidden_layers)}: {bad} {'is not an inner layer' if len(bad) == 1 else 'are not inner layers'} "
            f"of the {plan_.num_layers_after}-layer student this plan makes: use layers 0..{inner} (the final "
            "normalised state is always matched)"
        )


def calibration_notes(recipe: Recipe) -> list[str]:
    """What the plan says about calibration measured on purpose without (only) images."""
    cal = recipe.prune.calibration
    if cal.modality == "text":
        return [
            "prune.calibration.modality text: importance is measured on text only (images dropped), so it ranks "
            "what the language model needs for text, not for the image tokens (README, Results: calibration)"
        ]
    if cal.modality == "mixed":
        return ["prune.calibration.modality mixed: importance is measured on image + text and text-only rows"]
    p = recipe.prune
    if recipe.recover is not None and cal.dataset is not None and p.ratio > LIGHT_RECOVERY_MAX_RATIO:
        return [
            f"prune.calibration.modality image at ratio {p.ratio:.0%} with recovery: on real weights, calibration "
            "rows that mix image rows and text-only rows 1:1 (modality: mixed) kept the held-out perplexity 1.3x "
            "(depth) to 2.7x (width) better at the same VQA score after 40 recovery steps at 30% on reference v3 "
            "(study v2, 2 seeds), and on reference v2 kept 94.9% of the open answers after depth pruning (69.0% "
            "calibrating on image rows alone), with 5x the held-out perplexity after one pass over 5% of the data; "
            "consider a calibration set with both kinds and --calibration-modality mixed (README, Results: v3.4b, "
            "v2.4b, v2.4c)"
        ]
    return []


def prune(recipe: Recipe, out: str | Path, token: str | None = None, overwrite: bool = False, progress=None):
    """Pull, load, score, prune and save a standard checkpoint with its processor and prune_report.json."""
    from compressor import hub
    from compressor import prune as pruning
    from compressor.arch import spec_for
    from compressor.models import commit_output, load_model, load_processor, prepare_output, save_model

    out = prepare_output(out, overwrite)
    plan_, planned_at = _plan_at(recipe, token)  # fails fast, before any weight is downloaded
    log.debug("plan:\n%s", plan_.table())
    check_disk(out, estimated_bytes(plan_, recipe.model.dtype))
    if plan_.num_samples and recipe.prune.calibration.dataset is None:
        text = (
            f"scorer {plan_.scorer!r} needs calibration data; {{}} (a Hub dataset, a local folder or a LLaVA json "
            "file), or choose a data-free scorer (depth: last; width: magnitude)"
        )
        cli, page = fill_in(Calibration, "dataset")
        raise CompressorError(text.format(cli), page=text.format(page))
    m = recipe.model
    # the snapshot is taken at the commit the plan was read at, even if the branch moves meanwhile
    local, commit = hub.pull(
        m.source, revision=planned_at or m.revision, token=token, allow_pickle=m.allow_pickle
    )
    spec, backbone = spec_for(json.loads((Path(local) / "config.json").read_text()), m.trust_remote_code)
    model = load_model(local, spec, m.dtype, m.device_map, m.trust_remote_code, m.allow_pickle)
    processor = load_processor(local, m.trust_remote_code)
    batches = calibration_batches(recipe, plan_, spec, processor, model.config, token)
    log.info("scoring with %s and pruning", plan_.scorer)
    import torch

    try:
        report = pruning.apply(model, spec, backbone, plan_, batches, progress or pruning.tqdm_progress)
    except torch.OutOfMemoryError:
        raise CompressorError(scoring_oom(recipe, plan_, model)) from None

    def write(folder: Path) -> None:
        log.info("saving to %s", out)
        save_model(model, processor, folder)
        record = report.model_dump(mode="json")
        record["source"] = {"id": m.source, "revision": m.revision, "commit": commit}
        (folder / PRUNE_REPORT).write_text(json.dumps(record, indent=1))

    commit_output(out, write)
    return report


def scoring_oom(recipe: Recipe, plan_: Plan, model) -> str:
    """The message for running out of memory while scoring: where, and which settings to lower."""
    from compressor.models import placement

    m, cal = recipe.model, recipe.prune.calibration
    where = ", ".join(sorted(placement(model).get("devices") or [])) or "the device"
    tips = []
    if plan_.num_samples:
        tips.append(
            f"lower --max-length (prune.calibration.max_length, now {cal.max_length}): each sample's activations "
            f"(and for {plan_.scorer} its gradients) grow with it"
        )
        tips.append(
            f"--num-samples (prune.calibration.num_samples, now {plan_.num_samples}) for less in total"
        )
    if m.dtype in ("auto", "float32"):
        tips.append(f"load in bfloat16 (--dtype bfloat16, now {m.dtype})")
    tips.append(f"spread or offload the model with --device-map auto (now {m.device_map})")
    if plan_.scorer == "taylor":
        tips.append("or score without gradients (--scorer activation, or magnitude: data-free)")
    return (
        f"out of memory while scoring with {plan_.scorer} on {where}; nothing was written. To fit: "
        + ", ".join(tips)
    )


_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def estimated_bytes(plan_: Plan, dtype: str) -> int:
    """The pruned checkpoint's size on disk, from the plan's parameter count (4 bytes each for dtype auto)."""
    params = plan_.params.total_after or plan_.params.backbone_after
    return params * _DTYPE_BYTES.get(dtype, 4)


def check_disk(out: Path, needed: int) -> None:
    """Refuse to start when the output's file system has less free space than `needed` (+ 10 % margin)."""
    where = next(p for p in (out, *out.absolute().parents) if p.exists())
    free = shutil.disk_usage(where).free
    if free < needed * 1.1:
        raise CompressorError(
            f"not enough disk for {out}: the pruned model needs about {needed / 1e9:.2f} GB and {where} has "
            f"{free / 1e9:.2f} GB free; free some space or give --out on another disk (nothing was written)"
        )


# ---------------------------------------------------------------------------- the whole pipeline

# The stages `run` goes through, in order (the app's stage board, compressor/app/board.py, lists them; a recipe
# without recover, evaluate, export.gguf or publish skips that stage, and the board says so: `skipped_stages`).
STAGES = ("plan", "prune", "recover", "eval", "export", "card", "push")


def skipped_stages(recipe: Recipe) -> set[str]:
    """The stages of STAGES that `run` skips for this recipe: their section is not in it."""
    sections = {
        "recover": recipe.recover,
        "eval": recipe.evaluate,
        "export": _gguf(recipe),
        "push": recipe.publish,
    }
    return {stage for stage, section in sections.items() if section is None}


class RunFolder:
    """The run folder's files: each stage leaves its record, so a rerun resumes after the last one."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.reports = self.root / "reports"

    recipe = property(lambda self: self.root / "recipe.yaml")
    plan = property(lambda self: self.root / "plan.json")
    source = property(lambda self: self.root / "source.json")
    pruned = property(lambda self: self.root / "pruned")
    recovered = property(lambda self: self.root / "recovered")
    gguf = property(lambda self: self.root / "gguf")

    def report(self, stage: str) -> Path:
        from compressor.runs import report_path

        return report_path(self.root, stage)

    def done(self, stage: str) -> bool:
        return self.report(stage).is_file()

    def final_model(self) -> Path:
        return self.recovered if self.done("recover") else self.pruned

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def lock(self):
        """Hold the run folder for one process: a second run of it is refused, not interleaved.

        An OS lock (flock) on `.lock`: it dies with its process, so a killed run never leaves a stale lock.
        """
        import contextlib
        import fcntl
        import os

        @contextlib.contextmanager
        def held():
            created = not self.root.exists()
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            ok = False
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                    raise worded(
                        f"run folder {self.root} is in use by another run ({holder}); wait for it to finish, "
                        "{ask}",
                        ask="other_run_dir",
                    ) from None
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
                yield
                ok = True
            finally:
                if not ok and created and [p.name for p in self.root.iterdir()] == [".lock"]:
                    shutil.rmtree(self.root, ignore_errors=True)  # a run that wrote nothing leaves nothing
                os.close(fd)  # releases the lock

        return held()

    def write_json(self, path: Path, data: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)


def _start_run(recipe: Recipe, run: RunFolder) -> None:
    from compressor.recipe import dump_recipe

    text = dump_recipe(recipe)
    if run.recipe.is_file():
        if run.recipe.read_text() != text:
            raise worded(
                f"{run.root} holds a run of a different recipe ({_difference(run.recipe, recipe)}); {{ask}}",
                ask="start_over",
            )
        log.info("resuming the run in %s", run.root)
    else:
        run.root.mkdir(parents=True, exist_ok=True)
        run.recipe.write_text(text)


def _difference(saved: Path, recipe: Recipe) -> str:
    """'model.source is 'a/b' there, 'c/d' here' for the first keys that differ (recipe.yaml vs `recipe`)."""
    import yaml

    def flat(data: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(data, dict):
            return {k: v for key, val in data.items() for k, v in flat(val, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): data}

    try:
        old = flat(yaml.safe_load(saved.read_text()) or {})
    except yaml.YAMLError:
        return f"{saved} is not valid YAML"
    new = flat(recipe.model_dump(mode="json", exclude_unset=True))
    diffs = [
        f"{k} is {old.get(k, '(unset)')!r} there, {new.get(k, '(unset)')!r} here"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    return "; ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "") or str(saved)


def run(
    recipe: Recipe,
    run_dir: str | Path,
    token: str | None = None,
    on_stage=None,
    eval_cache=None,
    on_progress=None,
) -> dict[str, Any]:
    """pull → plan → prune → recover → eval → export → card → push, resuming after the last finished stage.

    `on_stage(stage, state)` is called with state "start", "skip" (already done) or "done".
    `on_progress(stage, step, total, logs)` is called within a stage: "prune" once per calibration sample
    scored (logs {"desc": what is scored}), "recover" after each optimiser step ({}) and with the trainer's
    logs (loss terms, learning rate …) at each logging step. An exception it raises stops the run there.
    `eval_cache`: a folder where the original's eval answers are kept for other runs of the same original.
    Returns the run's summary: stages done, final model folder, and the pushed URL if any.
    A second run of the same folder while this one holds it is refused (RunFolder.lock).
    """
    from compressor import hub

    if recipe.publish is not None:  # before any heavy work: a bad token fails now, not after training
        user = hub.check_token(token, write=True)
        log.info("pushing as %s to %s", user, recipe.publish.repo_id)
    check_export(recipe)  # a missing quantizer or converter fails now, not after training
    run_ = RunFolder(run_dir)
    with run_.lock():
        return _run(recipe, run_, token, on_stage, eval_cache, on_progress)


def _gguf(recipe: Recipe):
    return recipe.export.gguf if recipe.export is not None else None


def check_export(recipe: Recipe) -> None:
    """What `run` refuses before any work for the recipe's export.gguf section (nothing without one): a k-quant
    without llama-quantize, or llama.cpp's runner or converter missing (CompressorError, one line)."""
    if _gguf(recipe) is None:
        return
    from compressor.export import stage, toolchain

    stage.check_quants(_gguf(recipe).quants)
    toolchain.check_runner()
    toolchain.ensure_converter(download=False)


def _export_done(run_: RunFolder) -> bool:
    """reports/export.json exists, says complete, and its files are still in RUN/gguf."""
    if not run_.done("export"):
        return False
    report = json.loads(run_.report("export").read_text())
    return bool(report.get("complete")) and all((run_.gguf / f["file"]).is_file() for f in report["files"])


def export(src: str | Path, out: str | Path, quants, name: str | None = None, overwrite: bool = False):
    """GGUF files of a model folder, or of a run folder's final model, checked in llama.cpp (ExportReport)."""
    from compressor import export as exporting

    src = Path(src)
    if (src / "recipe.yaml").is_file() and not (src / "config.json").is_file():
        run_ = RunFolder(src)
        return exporting.run(
            run_.final_model(), out, quants, name=name or src.resolve().name, overwrite=overwrite
        )
    return exporting.run(src, out, quants, name=name, overwrite=overwrite)


def _plots(run_: RunFolder, stage: str | None = None) -> None:
    """RUN/plots/*.png: the pictures of a stage just finished drawn anew, any missing one drawn; never fails."""
    from compressor import plots

    plots.update(run_.root, redraw=plots.OF_STAGE.get(stage, ()))


def _card_inputs(run_: RunFolder) -> str:
    """A digest of the files the card is rendered from: the card is stale when it changes."""
    import hashlib

    from compressor.card import pictures

    digest = hashlib.sha256(" ".join(pictures(run_.root)).encode())  # the pictures it embeds
    for path in (run_.recipe, run_.plan, run_.source, *sorted(run_.reports.glob("*.json"))):
        if path.is_file() and path.name not in ("card.json", "push.json"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _prune_progress(on_progress):
    """prune's iterable wrapper, reporting each item to `on_progress("prune", i, n, {"desc": desc})`."""
    if on_progress is None:
        return None

    def progress(iterable, desc: str):
        items = list(iterable)
        for i, item in enumerate(items):
            on_progress("prune", i, len(items), {"desc": desc})
            yield item
        on_progress("prune", len(items), len(items), {"desc": desc})

    return progress


def _run(
    recipe: Recipe, run_: RunFolder, token: str | None, on_stage, eval_cache, on_progress=None
) -> dict[str, Any]:
    from compressor import hub

    notify = on_stage or (lambda stage, state: log.info("%s: %s", stage, state))
    _start_run(recipe, run_)
    m = recipe.model

    def stage(name: str, done: bool) -> bool:
        notify(name, "skip" if done else "start")
        return not done

    if stage("plan", run_.plan.is_file() and run_.source.is_file()):
        plan_, commit = _plan_at(recipe, token)
        if _gguf(recipe) is not None:  # a family llama.cpp cannot take is refused before any weight is pulled
            _refuse_gguf(plan_.family)
        run_.write_json(
            run_.source,
            {
                "id": m.source,
                "revision": m.revision,
                "commit": commit,
                "license": hub.license_of(m.source, revision=commit or m.revision, token=token),
                "calibration": recipe.prune.calibration.dataset,
            },
        )
        run_.write_json(run_.plan, plan_.model_dump(mode="json"))
        notify("plan", "done")
    source = json.loads(run_.source.read_text())
    pinned = recipe.model_copy(
        update={"model": m.model_copy(update={"revision": source["commit"] or m.revision})}
    )

    if stage("prune", run_.done("prune")):
        report = prune(
            pinned, run_.pruned, token=token, overwrite=True, progress=_prune_progress(on_progress)
        )
        run_.write_json(run_.report("prune"), json.loads((run_.pruned / PRUNE_REPORT).read_text()))
        log.info("pruned: %s", report.plan.table().splitlines()[2])
        _plots(run_, "prune")
        notify("prune", "done")

    if recipe.recover is not None and stage("recover", run_.done("recover")):
        from compressor import recover
        from compressor.recover import TRAIN_REPORT, checkpoint_dir

        resume = checkpoint_dir(run_.recovered).is_dir() and any(
            checkpoint_dir(run_.recovered).glob("checkpoint-*")
        )
        cfg, choice = _recovery_config(recipe, run_)
        recover.run(
            run_.pruned,
            m.source,
            cfg,
            None,
            run_.recovered,
            resume=resume,
            progress=(lambda step, total, logs: on_progress("recover", step, total, logs))
            if on_progress
            else None,
            token=token,
            overwrite=True,
            teacher_revision=source["commit"] or m.revision,
            trust_remote_code=m.trust_remote_code,
            mode_choice=choice,
        )
        run_.write_json(run_.report("recover"), json.loads((run_.recovered / TRAIN_REPORT).read_text()))
        _plots(run_, "recover")
        notify("recover", "done")

    final = run_.final_model()
    if recipe.evaluate is not None and stage("eval", run_.done("eval")):
        from compressor import evaluate

        original, _ = hub.pull(
            m.source, revision=source["commit"] or m.revision, token=token, allow_pickle=m.allow_pickle
        )
        report = evaluate.run(
            original,
            final,
            recipe.evaluate,
            token=token,
            dtype=m.dtype,
            trust_remote_code=m.trust_remote_code,
            cache=eval_cache,
        )
        run_.write_json(run_.report("eval"), report.model_dump(mode="json"))
        _plots(run_, "eval")
        notify("eval", "done")

    gguf = _gguf(recipe)
    if gguf is not None and stage("export", _export_done(run_)):
        report = export(final, run_.gguf, gguf.quants, name=run_.root.resolve().name, overwrite=True)
        run_.write_json(run_.report("export"), report.model_dump(mode="json"))
        notify("export", "done")

    _plots(run_)  # a resumed run draws the pictures it lacks
    repo_id = recipe.publish.repo_id if recipe.publish else None
    card_record = run_.report("card")
    rendered_from = json.loads(card_record.read_text()).get("inputs") if card_record.is_file() else None
    if stage("card", (final / "README.md").is_file() and rendered_from == _card_inputs(run_)):
        card(run_.root, repo_id)
        notify("card", "done")

    url = None
    pushed = json.loads(run_.report("push").read_text()) if run_.done("push") else {}
    gguf_repo = gguf.repo_for(recipe.publish.repo_id) if gguf is not None and recipe.publish else None
    if recipe.publish is not None and stage("push", bool(pushed) and (not gguf_repo or "gguf" in pushed)):
        p = recipe.publish
        _gate(p.require, run_)
        if pushed.get("repo_id") != p.repo_id:  # the model first (a rerun after a failed GGUF push skips it)
            pushed = {
                "repo_id": p.repo_id,
                "url": hub.push(
                    final,
                    p.repo_id,
                    token=token,
                    private=p.private,
                    overwrite=p.overwrite,
                    commit_message=f"compressor: {recipe.prune.method} pruning of {m.source}",
                ),
            }
            run_.write_json(run_.report("push"), pushed)
        if gguf_repo:  # right after the model: the GGUF files, their card and the export report, one commit
            pushed["gguf"] = {
                "repo_id": gguf_repo,
                "url": _push_gguf(run_, gguf_repo, p.repo_id, token, p.private, p.overwrite),
            }
            run_.write_json(run_.report("push"), pushed)
        notify("push", "done")
    url = pushed.get("url")
    return {
        "run_dir": str(run_.root),
        "model": str(final),
        "url": url,
        "gguf_url": (pushed.get("gguf") or {}).get("url"),
        "stages": [s for s in ("prune", "recover", "eval", "export", "push") if run_.done(s)],
    }


def _gate(require: dict[str, float], run_: RunFolder) -> None:
    """Refuse the push of a model below `publish.require` (the run folder stays as it is)."""
    if not require:
        return
    from compressor import gate

    report = json.loads(run_.report("eval").read_text()) if run_.done("eval") else {}
    verdicts = gate.check(require, report)
    log.info("quality gate: %s", "; ".join(v.describe() for v in verdicts))
    below = gate.failed(verdicts)
    if below:
        raise CompressorError(
            "quality gate publish.require not met, nothing was pushed: "
            + "; ".join(v.describe() for v in below)
            + f". The run folder {run_.root} keeps the model, its card and its scores: improve the recovery, lower "
            "publish.require, or push this model anyway with `python -m compressor push "
            f"{run_.root} --repo-id REPO`"
        )


def _recovery_config(recipe: Recipe, run_: RunFolder):
    """(The recipe's `recover:` with `mode: auto` replaced by what the run's plan chose, that choice): a plan
    from before the choice leaves it to `recover.prepare`."""
    cfg, choice = recipe.recover, None
    if cfg is not None and cfg.mode == "auto":
        choice = json.loads(run_.plan.read_text()).get("recovery")
        if choice:
            log.info("recover.mode auto: %s (%s)", choice["mode"], choice["reason"])
            cfg = cfg.model_copy(update={"mode": choice["mode"]})
    return cfg, choice


def card(run_dir: str | Path, repo_id: str | None = None) -> str:
    """Render the model card from the run folder's files into the final model folder; returns it.

    The recipe and the evaluation report travel with the model, beside the card.
    """
    from compressor.card import place_pictures, public_recipe, public_report, render, validate

    run_ = RunFolder(run_dir)
    _plots(run_)  # a run folder from before the pictures gets them
    content = render(run_.root, repo_id)
    validate(content)
    final = run_.final_model()
    (final / "recipe.yaml").write_text(public_recipe(run_.recipe.read_text()))
    place_pictures(run_.root, final)
    if run_.done("eval"):
        shutil.copyfile(run_.report("eval"), final / "eval_report.json")
    for report in final.glob("*_report.json"):  # they are pushed: no local folder names in them
        text = report.read_text()
        public = json.dumps(public_report(json.loads(text)), indent=1)
        if public != text:
            report.write_text(public)
    (final / "README.md").write_text(content)
    run_.write_json(run_.report("card"), {"inputs": _card_inputs(run_), "repo_id": repo_id})
    return content


def push(
    run_dir: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    overwrite: bool = False,
) -> str:
    """Push the run's final model folder, with a card naming `repo_id`, in one commit; returns the URL."""
    from compressor import hub

    run_ = RunFolder(run_dir)
    hub.check_token(token, write=True)
    card(run_.root, repo_id)
    source = json.loads(run_.source.read_text()) if run_.source.is_file() else {}
    message = f"compressor: pruned from {source.get('id', 'a model')}"
    url = hub.push(
        run_.final_model(), repo_id, token=token, private=private, overwrite=overwrite, commit_message=message
    )
    pushed: dict[str, Any] = {"repo_id": repo_id, "url": url}
    run_.write_json(run_.report("push"), pushed)
    from compressor.card import gguf_repo_id

    gguf_repo = gguf_repo_id(run_.recipe.read_text(), repo_id) if run_.recipe.is_file() else None
    if gguf_repo and _export_done(run_):  # the run's GGUF files go beside it
        pushed["gguf"] = {
            "repo_id": gguf_repo,
            "url": _push_gguf(run_, gguf_repo, repo_id, token, private, overwrite),
        }
        run_.write_json(run_.report("push"), pushed)
    return url


def gguf_card(run_dir: str | Path, gguf_repo: str, model_repo: str) -> str:
    """Render the GGUF repo's card into RUN/gguf/README.md (its export_report.json made public: no local
    paths); returns it."""
    from compressor.card import public_report, render_gguf, validate

    run_ = RunFolder(run_dir)
    content = render_gguf(run_.root, gguf_repo, model_repo)
    validate(content)
    report = run_.gguf / "export_report.json"
    if report.is_file():
        report.write_text(json.dumps(public_report(json.loads(report.read_text())), indent=1))
    (run_.gguf / "README.md").write_text(content)
    return content


def _push_gguf(
    run_: RunFolder, gguf_repo: str, model_repo: str, token: str | None, private: bool, overwrite: bool
) -> str:
    from compressor import hub

    if not _export_done(run_):
        raise CompressorError(
            f"{run_.gguf} does not hold a complete export (reports/export.json and its files); run the export "
            "stage again (`compressor run` resumes it) before pushing the GGUF repo"
        )
    gguf_card(run_.root, gguf_repo, model_repo)
    return hub.push_gguf(
        run_.gguf,
        gguf_repo,
        token=token,
        private=private,
        overwrite=overwrite,
        commit_message=f"compressor: GGUF files of {model_repo}",
    )
