"""A real 2-process DDP run on the CPU (torchrun, gloo): both ranks train, and the result equals one process
training on the same global batch, which proves the loss normalisation across ranks.

`accelerate launch --cpu --num_processes 2` silently starts one process, so the test uses torch's own
launcher and checks what each rank wrote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.test_recover import fast, make_student, write_rows

WORKER = r"""
import json, os, sys
from pathlib import Path

from compressor.recover import prepare
from compressor.recover.config import parse_recover

student, teacher, data, out, logs, cfg = sys.argv[1:7]
rank = int(os.environ["RANK"])
session = prepare(student, teacher, parse_recover(json.loads(cfg)), data, out)
seen = []
session.teacher.model.register_forward_hook(
    lambda module, args, kwargs, output: seen.append(int(kwargs["input_ids"].sum())), with_kwargs=True
)
report = session.finish()
Path(logs, f"rank{rank}.json").write_text(json.dumps({
    "rank": rank, "world": report.world_size, "steps": report.steps, "teacher_inputs": seen,
}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_one_process_on_the_global_batch(tiny_saved, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from compressor.recover import run

    teacher = tiny_saved("llava")
    student = make_student(teacher, "llava", tmp_path / "student")
    data = str(write_rows(tmp_path / "data", n=12))  # rows of different lengths: padding differs per rank
    # SGD: the weights move by lr * gradient, so a wrongly normalised gradient shows (Adam would hide a scale)
    sft = {"optim": "sgd", "learning_rate": 0.1}
    per_rank = fast(mode="full", max_steps=2, sft={**sft, "per_device_train_batch_size": 2})
    whole = fast(mode="full", max_steps=2, sft={**sft, "per_device_train_batch_size": 4})

    worker, logs = tmp_path / "worker.py", tmp_path / "logs"
    worker.write_text(WORKER)
    logs.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(worker)]
    cmd += [str(student), str(teacher), data, str(tmp_path / "ddp"), str(logs), per_rank.model_dump_json()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    ranks = [json.loads((logs / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, record in enumerate(ranks):
        assert record["rank"] == r and record["world"] == 2 and record["steps"] == 2
        assert len(record["teacher_inputs"]) == 2  # one distillation forward per step on each rank
    assert ranks[0]["teacher_inputs"] != ranks[1]["teacher_inputs"]  # each rank saw its own half
    report = json.loads((tmp_path / "ddp" / "train_report.json").read_text())
    assert report["world_size"] == 2 and report["shared_vision"]["hits"] == 2

    run(student, teacher, whole, data, tmp_path / "single")
    ddp = load_file(tmp_path / "ddp" / "model.safetensors")
    single = load_file(tmp_path / "single" / "model.safetensors")
    before = load_file(student / "model.safetensors")
    assert any(not torch.equal(before[k], v) for k, v in single.items())
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-6, msg=key)
