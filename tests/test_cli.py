"""The CLI end to end on local folders: plan without weights, prune to a standard checkpoint, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from compressor.cli import main
from compressor.demo import write_dataset
from tests import real_shapes


@pytest.fixture(scope="module")
def llava7b_config_only(tmp_path_factory):
    """A folder holding only LLaVA-1.5-7B's config.json: planning must not need anything else."""
    folder = tmp_path_factory.mktemp("llava7b-config")
    (folder / "config.json").write_text(json.dumps(real_shapes.llava_1_5_7b()))
    return folder


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("demo-data"), n=12)


def test_plan_reads_config_only(llava7b_config_only, capsys):
    assert main(["plan", str(llava7b_config_only), "--method", "depth", "--ratio", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "32 -> 22 (drop 10: chosen by scoring)" in out
    assert "6.739 B -> 4.715 B" in out


def test_plan_json(llava7b_config_only, capsys):
    assert main(["plan", str(llava7b_config_only), "--method", "width", "--ratio", "0.45", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["heads_after"] == 16 and plan["intermediate_after"] == 6016
    assert plan["params"]["backbone_after"] < plan["params"]["backbone_before"]


def test_plan_from_recipe_file(llava7b_config_only, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model:\n  source: {llava7b_config_only}\nprune:\n  method: depth\n  ratio: 0.15\n  scorer: last\n"
    )
    assert main(["plan", str(recipe)]) == 0
    assert "[26, 27, 28, 29, 30]" in capsys.readouterr().out
    assert main(["validate", str(recipe)]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--method", "width", "--ratio", "0.3", "--scorer", "taylr"],
            "unknown width scorer 'taylr' (did you mean 'taylor'?)",
        ),
        (
            ["--method", "depth", "--ratio", "1.5"],
            "prune.ratio (--ratio) is 1.5: set --ratio to a number > 0 and < 1",
        ),
        (["--ratio", "0.3"], "--method is required"),
        (
            ["--method", "depth", "--ratio", "0.3", "--targets", "heads"],
            "targets apply to method: width only",
        ),
        (["--method", "depth", "--ratio", "0.3", "--contiguous"], "contiguous: true needs scorer: angular"),
    ],
)
def test_bad_input_is_a_clear_error(llava7b_config_only, capsys, argv, message):
    assert main(["plan", str(llava7b_config_only), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_recipe_errors_name_the_key(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model:\n  source: x/y\n  revison: main\nprune:\n  method: depth\n  ratio: 0.3\n")
    assert main(["validate", str(recipe)]) == 2
    assert "model.revison: unknown key" in capsys.readouterr().err
    assert main(["plan", str(recipe), "--ratio", "0.2"]) == 2
    assert "cannot be combined with a recipe file" in capsys.readouterr().err


def test_unsupported_family_lists_the_supported(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
    assert main(["plan", str(tmp_path), "--method", "depth", "--ratio", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "unsupported model_type 'blip-2'" in err and "llava" in err and "qwen2_5_vl" in err


def test_qwen2_vl_head_pruning_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(real_shapes.qwen2_vl_2b()))
    argv = ["plan", str(tmp_path), "--method", "width", "--ratio", "0.3", "--targets", "heads,mlp"]
    assert main(argv) == 2
    assert "Qwen2-VL computes the text attention's head_dim" in capsys.readouterr().err


def test_prune_writes_a_standard_checkpoint(tiny_saved, demo_data, tmp_path, capsys):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "pruned"
    argv = [
        "prune",
        str(tiny_saved("llava")),
        "--method",
        "width",
        "--ratio",
        "0.3",
        "--round-to",
        "16",
        "--calibration",
        str(demo_data),
        "--num-samples",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "saved to" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "prune_report.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()
    }
    report = json.loads((out / "prune_report.json").read_text())
    assert report["scorer"] == "taylor" and report["num_samples"] == 4
    assert (
        len(report["kept_channels"]) == 6
        and len(report["kept_channels"][0]) == report["plan"]["intermediate_after"]
    )
    assert len(report["mlp_scores"][0]) == 128
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert model.config.text_config.intermediate_size == report["plan"]["intermediate_after"]
    # the saved processor is the family's full one (not a bare tokenizer) and prepares an image + text exactly
    # as the source's does: the 276-token byte-level vocabulary, one 16x16 image as 4 placeholder tokens
    import torch

    from compressor.tiny import tiny_images

    processor, source = AutoProcessor.from_pretrained(out), AutoProcessor.from_pretrained(tiny_saved("llava"))
    assert type(processor).__name__ == "LlavaProcessor" and len(processor.tokenizer) == 276
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == source.apply_chat_template(messages, add_generation_prompt=True)
    got, want = (p(images=tiny_images(1), text=[text], return_tensors="pt") for p in (processor, source))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert tuple(got["pixel_values"].shape) == (1, 3, 16, 16)
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert int((got["input_ids"] == image_id).sum()) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_prune_refuses_a_non_empty_output_and_leaves_it_alone(tiny_saved, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = [
        "prune",
        str(tiny_saved("llava")),
        "--method",
        "depth",
        "--ratio",
        "0.3",
        "--scorer",
        "last",
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "model.safetensors").exists() and not (out / "keep.txt").exists()


def test_failed_prune_writes_nothing(tiny_saved, tmp_path, capsys):
    out = tmp_path / "never"
    argv = [
        "prune",
        str(tiny_saved("llava")),
        "--method",
        "depth",
        "--ratio",
        "0.3",
        "--calibration",
        str(tmp_path / "missing-data"),
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    assert "missing-data" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_scorer_needing_data_without_calibration_says_so(tiny_saved, tmp_path, capsys):
    argv = [
        "prune",
        str(tiny_saved("llava")),
        "--method",
        "width",
        "--ratio",
        "0.3",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "needs calibration data; pass --calibration DATA" in capsys.readouterr().err


def test_help_and_plan_parsing_import_no_torch():
    code = "import sys, compressor.cli as c; c.build_parser(); print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_module_entry_point_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "compressor", "plan", str(tmp_path), "--method", "depth", "--ratio", "0.3"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_llava_json_calibration(tiny_saved, demo_data, tmp_path):
    """The LLaVA json + image folder format calibrates like the conversational one."""
    rows = [json.loads(line) for line in (demo_data / "data.jsonl").read_text().splitlines()]
    llava = [
        {
            "id": str(i),
            "image": r["images"][0],
            "conversations": [
                {"from": "human", "value": "<image>\n" + r["messages"][0]["content"][1]["text"]},
                {"from": "gpt", "value": r["messages"][1]["content"][0]["text"]},
            ],
        }
        for i, r in enumerate(rows)
    ]
    (tmp_path / "mix.json").write_text(json.dumps(llava))
    shutil.copytree(demo_data / "images", tmp_path / "imgs" / "images")
    out = tmp_path / "o"
    argv = [
        "prune",
        str(tiny_saved("llava")),
        "--method",
        "depth",
        "--ratio",
        "0.3",
        "--calibration",
        str(tmp_path / "mix.json"),
        "--image-folder",
        str(tmp_path / "imgs"),
        "--num-samples",
        "3",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert json.loads((out / "prune_report.json").read_text())["num_samples"] == 3


def test_field_options_take_their_flag_and_help_from_the_field(capsys) -> None:
    """recover's and eval's field options, like prune's, are generated from the recipe fields (flag and help)."""
    import argparse

    import pytest

    from compressor.errors import add_field_option, field_help
    from compressor.evaluate.config import EvalTask
    from compressor.recipe import ModelSource
    from compressor.recover.config import Recover, RecoverData

    for argv, model, name, flag in (
        (["recover", "--help"], Recover, "mode", "--mode"),
        (["recover", "--help"], RecoverData, "dataset", "--data"),
        (["eval", "--help"], EvalTask, "max_new_tokens", "--max-new-tokens"),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert flag in text and " ".join(field_help(model, name).split())[:60] in text
    with pytest.raises(ValueError, match="names no --flag"):
        add_field_option(argparse.ArgumentParser(), ModelSource, "source")  # its flag is SRC, a positional
