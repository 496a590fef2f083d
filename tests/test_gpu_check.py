"""benchmarks/gpu_check.py in its CPU mode (`--device cpu --tiny`): every stage runs and checks itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


def test_gpu_check_runs_every_stage_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _run(["--device", "cpu", "--tiny", "--steps", "2", "--no-reference", "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "# all stages passed" in done.stdout
    result = json.loads((out / "gpu_check.json").read_text())
    rows = {r["stage"]: r for r in result["rows"]}
    assert list(rows) == [
        "build + save original",
        "prune depth (block_influence)",
        "prune width (taylor)",
        "recover projector (2 steps)",
        "reload projector in bf16",
        "recover lora (2 steps)",
        "reload lora in bf16",
        "recover full (2 steps)",
        "reload full in bf16",
        "decode original",
        "decode depth",
        "decode width",
        "plan --speed (bf16)",
        "lmms-eval pope (8 rows, bf16)",
    ]
    for mode in ("projector", "lora", "full"):
        assert "['float32']" in rows[f"recover {mode} (2 steps)"]["note"]  # fp32 masters, bf16 frozen
        assert "saved bfloat16" in rows[f"recover {mode} (2 steps)"]["note"]
        assert rows[f"recover {mode} (2 steps)"]["tokens_per_s"] > 0
        assert rows[f"reload {mode} in bf16"]["note"] == "max |Δlogit| 0"
    assert all(rows[f"decode {m}"]["tokens_per_s"] > 0 for m in ("original", "depth", "width"))
    probe = rows["plan --speed (bf16)"]
    assert (
        probe["tokens_per_s"] > 0
        and "planned: width" in probe["note"]
        and "alternative: depth" in probe["note"]
    )
    lmms = rows["lmms-eval pope (8 rows, bf16)"]["note"]
    assert lmms.startswith("lmms-eval 0.7.3: accuracy ") and lmms.endswith("(original / width), 8 samples")
    # the folders it kept: bf16 checkpoints
    config = json.loads((out / "tiny-llava" / "recovered-full" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the message of a machine without a GPU"
)
def test_gpu_check_fails_loudly_without_a_gpu(tmp_path: Path) -> None:
    done = _run(["--tiny"], tmp_path)
    assert done.returncode != 0 and "FAIL: no GPU is visible" in done.stderr
