"""The plan's memory estimate (`compressor.hardware`) against the measured peak, stage by stage, on the CPU.

Each case runs in a fresh process through the product's own code: `prune.apply` (scoring), `recover.prepare` +
`trainer.train()` for two optimiser steps (the second runs with the AdamW states in memory, as every later step
does), and `evaluate.pair.ModelPair` answering one prompt with greedy generation. The estimate is the plan's,
computed from the unpruned model's config and a recipe that says what the case runs (calibration length,
recovery mode, batch, sequence length, checkpointing); nothing measured goes into it.

What is measured: the peak of live tensor bytes. The models' weights and buffers are counted when the stage
starts (storage bytes, shared storages once); from there PyTorch's profiler (`profile_memory=True`) records
every allocation and free of the CPU allocator, and the peak of their running sum is added. That is the quantity
the estimate models and the one `torch.cuda.max_memory_allocated` reports on a GPU. The process's RSS is not
used: on the CPU it also counts pages of libtorch's code touched for the first time, glibc's arenas holding
freed memory (and reusing memory freed before the baseline), which have nothing to do with the model's size
and do not exist on a GPU; the estimate's device overheads (CUDA context, allocator margin, process RSS) are
added separately, only when a device is chosen.

Models: the tiny LLaVA of the tests (`compressor.tiny`, 6 layers, hidden 64, vocab 276) and a LLaVA whose
language model has SmolLM2-135M's shape (30 layers, hidden 576, 9 heads / 3 KV groups, MLP 1536, vocab 49152,
tied embeddings; random weights from the config, the tiny vision tower). Students are width-pruned by 30 %
(magnitude scorer).

Run: `.venv/bin/python benchmarks/memory_estimate.py` (all cases, a few minutes on two cores), or name cases:
`.venv/bin/python benchmarks/memory_estimate.py tiny:taylor smollm2:recover-full`; `--json` prints one line
per case.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

# case settings per model: calibration length, recovery batch x length, eval prompt length
SETTINGS = {
    "tiny": {"calib": 256, "samples": 10, "batch": 4, "seq": 256, "eval_seq": 256, "new": 16, "round_to": 8},
    "smollm2": {
        "calib": 256,
        "samples": 3,
        "batch": 2,
        "seq": 256,
        "eval_seq": 256,
        "new": 16,
        "round_to": 64,
    },
}
STAGES = (
    "taylor",
    "block_influence",
    "recover-projector",
    "recover-lora",
    "recover-full",
    "recover-full-nockpt",
    "eval",
)
CASES = tuple(f"{m}:{s}" for m in SETTINGS for s in STAGES)


# ---------------------------------------------------------------------------- measuring


def live_bytes(*modules) -> int:
    """Bytes of the storages behind the modules' parameters and buffers, each storage once."""
    seen: dict[int, int] = {}
    for m in modules:
        for t in [*m.parameters(), *m.buffers()]:
            storage = t.untyped_storage()
            seen.setdefault(storage.data_ptr(), storage.nbytes())
    return sum(seen.values())


def allocation_peak(fn, setup=None) -> tuple[int, int]:
    """(highest running sum of CPU allocator bytes while `fn` runs, the running sum when it starts).

    The sum runs from the profiler's start: allocations and frees made then are recorded (the profiler does not
    report the free of a tensor allocated before it started, so a stage that replaces existing weights, as
    pruning's surgery does, must build them under it: pass `setup`, which runs first and returns `fn`'s input).
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        arg = setup() if setup is not None else None
        with torch.profiler.record_function("stage"):
            fn(arg) if setup is not None else fn()
    events = prof.profiler.kineto_results.events()
    start = min(e.start_ns() for e in events if e.name() == "stage")
    memory = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    running = peak = at_start = 0
    for t, nbytes in memory:
        if t < start:
            at_start += nbytes
        running += nbytes
        if t >= start:
            peak = max(peak, running)
    return max(peak, at_start), at_start


# ---------------------------------------------------------------------------- the models and recipes


def model_config(kind: str):
    from compressor import tiny

    if kind == "tiny":
        return tiny.tiny_config("llava")
    from shapes import SMOLLM2_135M

    return tiny.tiny_config("llava", **SMOLLM2_135M)


def build(kind: str, seed: int = 0):
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(model_config(kind), dtype=torch.float32).eval()


def recipe_for(kind: str, stage: str):
    from compressor.recipe import parse_recipe

    s = SETTINGS[kind]
    if stage in ("taylor", "block_influence"):
        method = "width" if stage == "taylor" else "depth"
        # samples run one at a time, so their number sets the time, not the peak: fewer for the bigger model
        calib = {"max_length": s["calib"], "num_samples": s["samples"]}
        prune = {"method": method, "ratio": 0.3, "scorer": stage, "calibration": calib}
        if method == "width":
            prune["round_to"] = s["round_to"]
        return parse_recipe({"model": {"source": "x/y"}, "prune": prune})
    prune = {"method": "width", "ratio": 0.3, "scorer": "magnitude", "round_to": s["round_to"]}
    data: dict = {"model": {"source": "x/y"}, "prune": prune}
    if stage.startswith("recover-"):
        mode = stage.split("-")[1]
        data["recover"] = {
            "mode": mode,
            "fraction": 1.0,
            "max_steps": 2,
            "sft": {
                "per_device_train_batch_size": s["batch"],
                "gradient_accumulation_steps": 1,
                "max_length": s["seq"],
                "activation_checkpointing": not stage.endswith("nockpt"),
                "save_strategy": "no",
                "logging_steps": 1,
                "report_to": "none",
                "dataloader_pin_memory": False,
                "disable_tqdm": True,
            },
        }
    else:
        data["evaluate"] = {"tasks": [], "speed": False}
    return parse_recipe(data)


def plan_for(kind: str, recipe):
    from compressor.arch import spec_for
    from compressor.plan import resolve

    config = model_config(kind).to_dict()
    spec, backbone = spec_for(config)
    return resolve(config, spec, backbone, recipe.prune, recipe=recipe), spec, backbone


def calibration(kind: str, n: int, length: int):
    from compressor import tiny

    config = model_config(kind)
    n_img = tiny.num_image_tokens("llava", config)
    return [
        tiny.make_inputs("llava", config, batch_size=1, seed=i, text_len=length - 1 - n_img) for i in range(n)
    ]


def save_pair(kind: str, root: Path) -> tuple[Path, Path]:
    """The teacher (unpruned) and the student (30 % width, magnitude) saved with the tiny processor."""
    from compressor import prune
    from compressor.tiny import build_processor

    recipe = recipe_for(kind, "recover-full")
    teacher_dir, student_dir = root / "teacher", root / "student"
    build(kind).save_pretrained(teacher_dir)
    build_processor("llava").save_pretrained(teacher_dir)
    student = build(kind)
    plan, spec, backbone = plan_for(kind, recipe)
    prune.apply(student, spec, backbone, plan, [], progress=lambda it, _d: it)
    student.save_pretrained(student_dir)
    build_processor("llava").save_pretrained(student_dir)
    return teacher_dir, student_dir


def write_rows(folder: Path, n: int, chars: int) -> Path:
    """Rows long enough that every sample is cut at max_length (the tiny tokenizer is byte-level)."""
    from compressor.tiny import tiny_images

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, image in enumerate(tiny_images(n, size=16, seed=1)):
        image.save(folder / f"{i}.png")
        text = ("abcdefghij" * (chars // 10 + 1))[:chars]
        rows.append(
            {
                "images": [f"{i}.png"],
                "messages": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": text}]},
                ],
            }
        )
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


# ---------------------------------------------------------------------------- one case, in this process


def run_case(case: str) -> dict:
    import torch

    torch.set_num_threads(1)
    kind, stage = case.split(":")
    s = SETTINGS[kind]
    recipe = recipe_for(kind, stage)
    shapes: dict = {}
    with tempfile.TemporaryDirectory(prefix="memory-estimate-") as tmp:
        root = Path(tmp)
        if stage in ("taylor", "block_influence"):
            from compressor import prune

            plan, spec, backbone = plan_for(kind, recipe)
            batches = calibration(kind, plan.num_samples, s["calib"])
            shapes["tokens"] = int(batches[0]["input_ids"].shape[1])
            # the model is built under the profiler: the surgery frees its old weights
            peak, static = allocation_peak(
                lambda model: prune.apply(model, spec, backbone, plan, batches, progress=lambda it, _d: it),
                setup=lambda: build(kind),
            )
            dynamic = peak - static
            name = "scoring"
        elif stage.startswith("recover-"):
            from compressor.recover import prepare

            plan, spec, backbone = plan_for(kind, recipe)
            teacher_dir, student_dir = save_pair(kind, root)
            data = write_rows(root / "data", 2 * s["batch"], 2 * s["seq"])
            session = prepare(student_dir, teacher_dir, recipe.recover, str(data), root / "out")
            seen = []
            session.student.register_forward_pre_hook(
                lambda _m, _a, kw: seen.append(tuple(kw["input_ids"].shape)), with_kwargs=True
            )
            static = live_bytes(session.student, session.teacher)
            dynamic = allocation_peak(lambda: session.trainer.train())[0]
            shapes["batch"] = seen[0] if seen else None
            name = "recovery"
        else:
            from compressor.evaluate.pair import ModelPair
            from compressor.tiny import tiny_images

            plan, spec, backbone = plan_for(kind, recipe)
            teacher_dir, student_dir = save_pair(kind, root)
            pair = ModelPair.load(teacher_dir, student_dir, device="cpu", dtype="float32")
            images = tiny_images(1, size=16)
            question = "x" * (s["eval_seq"] - 20)
            content = [{"type": "image"}, {"type": "text", "text": question}]
            enc = pair.encode([{"role": "user", "content": content}], images, add_generation_prompt=True)
            shapes["prompt"] = int(enc["input_ids"].shape[1])
            static = live_bytes(pair.original, pair.compressed)
            dynamic = allocation_peak(lambda: pair.answer(question, images, s["new"]))[0]
            name = "evaluation"
    estimate = next((st for st in plan.memory.stages if st.stage == name), None)
    detail = (
        estimate.detail if estimate is not None else f"prompt {shapes.get('prompt')} + {s['new']} new tokens"
    )
    if name == "evaluation":  # the plan bounds the prompt by calibration.max_length; this one is shorter
        from compressor import hardware

        shape = hardware.Shape.of(plan, model_config(kind).to_dict(), spec, backbone)
        ev = recipe.evaluate.model_copy(update={"tasks": ()})
        est, parts = hardware.evaluation(shape, ev, "auto", shapes["prompt"], "cpu", new_tokens=s["new"])
    else:
        est, parts = estimate.cpu_bytes, estimate.parts
        if name == "recovery" or name == "scoring":
            parts = _cpu_parts(plan, kind, spec, backbone, recipe, name)
    return {
        "case": case,
        "stage": name,
        "detail": detail,
        "estimate": int(est),
        "measured": int(static + dynamic),
        "static": int(static),
        "dynamic": int(dynamic),
        "parts": {k: int(v) for k, v in parts.items()},
        "shapes": shapes,
    }


def _cpu_parts(plan, kind, spec, backbone, recipe, name) -> dict:
    from compressor import hardware

    shape = hardware.Shape.of(plan, model_config(kind).to_dict(), spec, backbone)
    if name == "scoring":
        return hardware.scoring(
            shape, plan, "auto", recipe.prune.calibration.max_length, not spec.remote_code, "cpu"
        )[1]
    settings = hardware.RecoverySettings.of(recipe.recover, spec)
    return hardware.recovery(shape, settings, "cpu")[1]


# ---------------------------------------------------------------------------- the table


def measure(case: str, timeout: float = 900) -> dict:
    """Run one case in a process of its own (forked from a warm one: torch's import is not what is measured, and
    the peak is of the profiler's live tensor bytes, which modules loaded before the fork do not touch) and
    return its row."""
    from compressor import warm

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = warm.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", case],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=str(ROOT),
    )
    if out.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mb(n: int) -> str:
    return f"{n / 1e6:9.2f}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        print(json.dumps(run_case(argv[1])))
        return 0
    as_json = "--json" in argv
    cases = [a for a in argv if not a.startswith("--")] or list(CASES)
    if not as_json:
        print(
            "peak tensor bytes on the CPU (float32): weights at the stage's start + the allocator's peak rise\n"
        )
        print(
            f"{'case':<28} {'estimate MB':>11} {'measured MB':>11} {'ratio':>6}  of which weights MB / rise MB"
        )
    for case in cases:
        row = measure(case)
        row["ratio"] = row["estimate"] / row["measured"]
        if as_json:
            print(json.dumps(row))
        else:
            print(
                f"{case:<28} {mb(row['estimate']):>11} {mb(row['measured']):>11} {row['ratio']:>6.2f}  "
                f"{row['static'] / 1e6:.2f} / {row['dynamic'] / 1e6:.2f}   {row['detail']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
