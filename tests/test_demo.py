"""`make demo` end to end, as a user runs it: the embedded Hub, the whole pipeline.

The demo uses the machine's cached embedded default (built on first use, keyed by the code that builds it, as
`make demo` does); building it from nothing is checked apart, with few training steps."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_loads_the_pushed_model(tmp_path):
    from compressor.demo import cache_dir

    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}  # the demo brings its own Hub
    proc = subprocess.run(
        [sys.executable, "-m", "compressor", "demo", "--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"embedded default model {cache_dir() / 'tiny-llava'}" in out  # the machine's cache, no download
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


def test_the_embedded_default_is_built_from_nothing_once_and_cached_by_its_code(
    tmp_path, capsys, monkeypatch
):
    from transformers import AutoModelForImageTextToText

    from compressor import demo
    from compressor.tiny import save_family

    built = demo.build_default(tmp_path / "cache", steps=3)
    assert "building the embedded default" in capsys.readouterr().out
    rows = [len((p / "data.jsonl").read_text().splitlines()) for p in (built.data, built.vqa, built.yes_no)]
    assert rows[0] == demo.TRAIN_ROWS == 192 and rows[1] + rows[2] == demo.EVAL_ROWS == 64
    trained = AutoModelForImageTextToText.from_pretrained(built.model)
    untrained = AutoModelForImageTextToText.from_pretrained(save_family("llava", tmp_path / "init", seed=0))
    changed = [n for n, p in trained.state_dict().items() if not p.equal(untrained.state_dict()[n])]
    assert changed, "training moved the weights away from the tiny model's initialisation"
    stamp = (built.model / "model.safetensors").stat().st_mtime_ns
    assert demo.build_default(tmp_path / "cache", steps=3) == built  # the second call reuses the cache
    assert "building" not in capsys.readouterr().out
    assert (built.model / "model.safetensors").stat().st_mtime_ns == stamp
    monkeypatch.setenv("COMPRESSOR_CACHE", str(tmp_path / "root"))
    before = demo.cache_dir()
    assert before.parent == tmp_path / "root" and before.name.startswith(demo.DEFAULT_VERSION + "-")
    monkeypatch.setattr(demo, "TRAIN_ROWS", 100)  # other building code: another cache folder
    assert demo.cache_dir() != before
