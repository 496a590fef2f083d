"""Loading: dtype, device placement, safetensors-only, atomic output folders."""

from __future__ import annotations

import json

import pytest
import torch

from compressor.cli import main
from compressor.errors import CompressorError
from compressor.models import commit_output, pick_device_map, weights_bytes


def test_weights_bytes_reads_safetensors_headers(tiny_saved):
    from transformers import AutoModelForImageTextToText

    folder = tiny_saved("llava")
    model = AutoModelForImageTextToText.from_pretrained(folder)
    n = sum(p.numel() for p in model.parameters())
    assert weights_bytes(folder, torch.float32) == 4 * n
    assert weights_bytes(folder, torch.bfloat16) == 2 * n


def test_cpu_only_machine_keeps_the_users_device_map(tiny_saved):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only branch")
    assert pick_device_map(tiny_saved("llava"), torch.float32, None) is None
    assert pick_device_map(tiny_saved("llava"), torch.float32, "auto") == "auto"


def test_prune_in_bfloat16(tiny_saved, tmp_path):
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "bf16"
    argv = [
        "prune",
        str(tiny_saved("gemma3")),
        "--method",
        "width",
        "--ratio",
        "0.3",
        "--scorer",
        "magnitude",
        "--round-to",
        "8",
        "--dtype",
        "bfloat16",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    assert json.loads((out / "config.json").read_text())["text_config"]["intermediate_size"] < 128


def test_pickle_only_checkpoint_is_refused_without_allow_pickle(tiny_saved, tmp_path, capsys):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_saved("llava"))
    model.save_pretrained(tmp_path / "pickled")
    (tmp_path / "pickled" / "model.safetensors").unlink()  # transformers 5 writes safetensors only
    torch.save(model.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    argv = [
        "prune",
        str(tmp_path / "pickled"),
        "--method",
        "depth",
        "--ratio",
        "0.3",
        "--scorer",
        "last",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert main([*argv, "--allow-pickle"]) == 0


def test_commit_output_keeps_the_old_folder_when_writing_fails(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")

    def boom(folder):
        (folder / "half.txt").write_text("partial")
        raise CompressorError("disk full")

    with pytest.raises(CompressorError):
        commit_output(out, boom)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "a.txt").read_text() == "old"
