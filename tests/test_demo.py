"""`make demo` end to end, as a user runs it: a fresh cache, the embedded Hub, the whole pipeline."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_loads_the_pushed_model(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}  # the demo brings its own Hub
    env["COMPRESSOR_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.run(
        [sys.executable, "-m", "compressor", "demo", "--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "building the embedded default" in out  # built from nothing, no download
    assert "== plan" in out and "KV groups                   2 -> 1" in out
    assert "loaded demo/tiny-llava-width30: 213,440 parameters, 2 heads, MLP 96" in out
    assert "base_model: demo/tiny-llava" in out and "## What was removed" in out
    assert "pushed http://127.0.0.1:" in out
    recovered, pruned_only = (
        float(x) for x in re.findall(r"average retained over 2 task\(s\): ([\d.]+)%", out)
    )
    assert "the pruned model before recovery" in out
    assert recovered > 50 and recovered >= pruned_only  # recovery gives back what pruning took
    pushed = tmp_path / "work" / "hub-data"
    assert (
        pushed.is_dir()
        and "hf_demo_write_token" not in (tmp_path / "work" / "run" / "recipe.yaml").read_text()
    )
