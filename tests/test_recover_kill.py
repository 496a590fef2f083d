"""A killed recovery resumes to the same final weights.

`compressor recover` runs in a process of its own (forked from compressor.warm's server, so each start costs no
torch import) and is SIGKILLed at 5 random points, each after a new checkpoint has
appeared (some land between saves, some while a checkpoint is being written); each following run resumes with
--resume from the last whole checkpoint, and the last one runs to the end. Its weights must equal, bit for bit,
those of an uninterrupted run of the same recipe.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from compressor import warm
from tests.test_recover import FAST_SFT, make_student, write_rows

pytestmark = pytest.mark.slow  # end to end: started first when xdist hands out the files

ROOT = Path(__file__).resolve().parent.parent
STEPS = 22  # 5 rounds advance at most 4 checkpoints each
KILLS = 5


def _steps(work: Path) -> list[int]:
    if not work.is_dir():
        return []
    return sorted(int(m[1]) for p in work.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))


def test_a_recovery_killed_at_5_random_points_resumes_to_the_same_weights(tiny_saved, tmp_path) -> None:
    import torch
    from safetensors.torch import load_file

    from compressor.recover import checkpoint_dir, run, whole_checkpoint
    from compressor.recover.config import parse_recover

    rng = random.Random(int(os.environ.get("KILL_SEED", "5")))
    teacher = tiny_saved("llava")
    student = make_student(teacher, "llava", tmp_path / "student")
    data = write_rows(tmp_path / "data")
    sft = {**FAST_SFT, "save_strategy": "steps", "save_steps": 1, "learning_rate": 1e-3}
    section = {"mode": "full", "fraction": 1.0, "max_steps": STEPS, "seed": 7, "sft": sft}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"model": {"source": str(teacher)}, "recover": {**section, "data": {"dataset": str(data)}}}
        )
    )
    out = tmp_path / "killed"
    work = checkpoint_dir(out)
    # the subprocess computes with as many threads as this process, so the two runs do the same arithmetic
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    argv = [sys.executable, "-m", "compressor", "recover", str(student), "--recipe", str(recipe)]
    argv += ["--out", str(out)]

    outcomes: list[str] = []
    step_seconds = 0.2  # an estimate of one step with its save, refined from the checkpoints seen
    for round_ in range(KILLS):
        before = max(_steps(work), default=0)
        target = before + rng.randint(1, 3)  # kill after this checkpoint appears ...
        # a process of its own, forked with torch & co. imported: the SIGKILL lands in training, not the import
        proc = warm.Popen(
            argv + (["--resume"] if before else []),
            cwd=ROOT,
            env=env,
            stdout=warm.DEVNULL,
            stderr=warm.DEVNULL,
        )
        seen: dict[int, float] = {}
        while proc.poll() is None and max(_steps(work), default=0) < target:
            seen.setdefault(max(_steps(work), default=0), time.perf_counter())
            time.sleep(0.005)
        seen.setdefault(max(_steps(work), default=0), time.perf_counter())
        times = [seen[k] for k in sorted(seen) if k > before]
        if len(times) > 1:
            step_seconds = (times[-1] - times[0]) / (len(times) - 1)
        time.sleep(rng.uniform(0.0, step_seconds))  # ... at a random point of the next step or its save
        if proc.poll() is not None:
            outcomes.append(f"finished before the kill (rc {proc.returncode})")
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists(), "a killed run left an output folder"
        newest = max(_steps(work))
        whole = whole_checkpoint(work / f"checkpoint-{newest}", "full")
        outcomes.append("between saves" if whole else "while saving a checkpoint")
        print(f"kill {round_ + 1}: newest checkpoint-{newest}, {outcomes[-1]} ({step_seconds:.2f} s/step)")
    assert len(outcomes) == KILLS and all(not o.startswith("finished") for o in outcomes), outcomes

    done = warm.run(argv + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"trained {STEPS} steps" in done.stdout and not work.exists()

    whole_dir = tmp_path / "whole"
    run(student, teacher, parse_recover(section), str(data), whole_dir)
    uninterrupted, resumed = load_file(whole_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert uninterrupted.keys() == resumed.keys()
    differ = [k for k in uninterrupted if not torch.equal(uninterrupted[k], resumed[k])]
    counts = Counter(outcomes)
    print(f"recover kill outcomes: {dict(counts)}; final weights equal: {not differ}")
    assert not differ, differ[:5]


def test_resume_skips_a_checkpoint_that_a_kill_left_half_written(tmp_path) -> None:
    import json

    from compressor.errors import CompressorError
    from compressor.recover import _prepare_run_dir, checkpoint_dir, last_whole_checkpoint

    out = tmp_path / "out"
    work = checkpoint_dir(out)
    for step, files in (
        (2, ["model.safetensors", "optimizer.pt", "trainer_state.json"]),
        (3, ["model.safetensors"]),
    ):
        (work / f"checkpoint-{step}").mkdir(parents=True)
        for name in files:
            text = json.dumps({"global_step": step}) if name.endswith(".json") else "x"
            (work / f"checkpoint-{step}" / name).write_text(text)
    (work / "checkpoint-4").mkdir()
    (work / "checkpoint-4" / "trainer_state.json").write_text('{"global_st')  # killed mid-write
    assert last_whole_checkpoint(work, "full") == str(work / "checkpoint-2")
    assert last_whole_checkpoint(work, "lora") is None  # a LoRA checkpoint is whole with its projector file
    assert _prepare_run_dir(out, True, "full") == (work, str(work / "checkpoint-2"))
    with pytest.raises(CompressorError, match="pass --resume"):
        _prepare_run_dir(out, False, "full")
    with pytest.raises(
        CompressorError, match="holds no whole trainer checkpoint.*after deleting that folder"
    ):
        _prepare_run_dir(out, True, "lora")
