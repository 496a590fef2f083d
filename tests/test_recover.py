"""Recovery training on tiny models (a few CPU steps each): what trains in each mode, the teacher's shortcuts,
normalisation under gradient accumulation, exact resume, the config and the command line."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from compressor.errors import CompressorError
from compressor.recover.config import Recover, parse_loss, parse_recover

FAST_SFT = {
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "logging_steps": 1,
    "activation_checkpointing": False,
    "save_strategy": "no",
    "learning_rate": 1e-2,
    "warmup_steps": 0,
    "lr_scheduler_type": "constant",
    "dataloader_pin_memory": False,
    "disable_tqdm": True,
}


def fast(**fields: Any) -> Recover:
    """A Recover config for a few quick CPU steps over every row."""
    sft = {**FAST_SFT, **fields.pop("sft", {})}
    return parse_recover({"fraction": 1.0, "max_steps": 2, "seed": 7, **fields, "sft": sft})


def write_rows(folder: Path, n: int = 12, uniform: bool = False) -> Path:
    """A dataset folder (data.jsonl + PNGs) in TRL's conversational vision format.

    uniform: every row has the same length (so no padding) but a different number of answer tokens.
    """
    from compressor.tiny import tiny_images

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, image in enumerate(tiny_images(n, size=32, seed=1)):
        image.save(folder / f"img{i:03d}.png")
        k = i % 4
        question, answer = (
            ("q" * (4 + k), "a" * (8 - k)) if uniform else ("What is it" + "?" * k, "red " * (1 + k))
        )
        rows.append(
            {
                "images": [f"img{i:03d}.png"],
                "messages": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ],
            }
        )
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def make_student(teacher_dir: Path, family: str, out: Path) -> Path:
    """Depth-prune the teacher by 30 % (data-free `last` scorer) and save it like `compressor prune` does."""
    from compressor import prune, tiny
    from compressor.arch import spec_for
    from compressor.models import load_processor
    from compressor.plan import resolve
    from compressor.recipe import Prune

    model = tiny.build_model(family)
    config = model.config.to_dict()
    spec, backbone = spec_for(config)
    plan = resolve(config, spec, backbone, Prune(method="depth", ratio=0.3, scorer="last"))
    report = prune.apply(model, spec, backbone, plan, [], progress=lambda it, _d: it)
    model.save_pretrained(out)
    load_processor(teacher_dir).save_pretrained(out)
    (out / "prune_report.json").write_text(report.model_dump_json())
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("recover-data"))


@pytest.fixture(scope="module")
def pair(tiny_saved, tmp_path_factory: pytest.TempPathFactory):
    """family -> (student folder, teacher folder), built once per module."""
    root = tmp_path_factory.mktemp("recover-students")
    cache: dict[str, tuple[Path, Path]] = {}

    def get(family: str) -> tuple[Path, Path]:
        if family not in cache:
            teacher = tiny_saved(family)
            cache[family] = (make_student(teacher, family, root / family), teacher)
        return cache[family]

    return get


def _params_by_part(folder: Path):
    """Parameters of a saved model, grouped: vision, projector, layers (decoder blocks), rest (embeddings, norm,
    LM head)."""
    from transformers import AutoModelForImageTextToText

    from compressor.arch import spec_for

    model = AutoModelForImageTextToText.from_pretrained(folder)
    spec, _ = spec_for(model.config)

    def part(name: str) -> str:
        if any(name.startswith(p + ".") or name == p for p in spec.projector):
            return "projector"
        if any(name.startswith(p + ".") for p in spec.vision):
            return "vision"
        if name.startswith(spec.decoder + ".layers."):
            return "layers"
        return "rest"

    groups: dict[str, dict[str, Any]] = {"vision": {}, "projector": {}, "layers": {}, "rest": {}}
    for name, p in model.named_parameters():
        groups[part(name)][name] = p.detach().clone()
    return groups


def _changed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    import torch

    assert before.keys() == after.keys()
    return any(not torch.equal(before[k], after[k]) for k in before)


EXPECTED = {  # part -> changed?
    "projector": {"vision": False, "projector": True, "layers": False, "rest": False},
    "lora": {"vision": False, "projector": True, "layers": True, "rest": False},
    "full": {"vision": False, "projector": True, "layers": True, "rest": True},
}


@pytest.mark.parametrize(
    "family,mode",
    [("llava", "projector"), ("llava", "lora"), ("llava", "full"), ("gemma3", "lora"), ("gemma3", "full")],
)
def test_each_mode_trains_exactly_its_parameters(pair, data_dir: Path, tmp_path: Path, family, mode) -> None:
    from safetensors import safe_open

    from compressor.recover import TRAIN_REPORT, run
    from compressor.tiny import make_inputs

    student, teacher = pair(family)
    calls: list[tuple[int, int, dict]] = []
    out = tmp_path / "out"
    report = run(student, teacher, fast(mode=mode), str(data_dir), out, progress=lambda *a: calls.append(a))

    before, after = _params_by_part(student), _params_by_part(out)
    assert {part: _changed(before[part], after[part]) for part in before} == EXPECTED[mode]
    assert sum(p.numel() for g in after.values() for p in g.values()) == sum(
        p.numel() for g in before.values() for p in g.values()
    )
    with safe_open(out / "model.safetensors", "pt") as f:
        assert not [k for k in f.keys() if "lora_" in k]  # noqa: SIM118  # merged: a plain checkpoint
    assert (out / "processor_config.json").is_file() and (out / "prune_report.json").is_file()
    saved = json.loads((out / TRAIN_REPORT).read_text())
    assert saved["steps"] == report.steps == 2 and saved["trainable"]["mode"] == mode
    assert report.losses and "loss_hidden_mse" in report.losses[-1] and "loss_ce" in report.losses[-1]
    assert report.shared_vision["enabled"] and report.shared_vision["hits"] == 2
    assert report.teacher is not None and report.teacher["lm_head_runs"] is False
    assert [c[:2] for c in calls if not c[2]] == [(1, 2), (2, 2)]
    assert any("loss" in c[2] for c in calls)
    assert not (tmp_path / "out.checkpoints").exists()

    # the output is a plain checkpoint: Auto class, forward
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    inputs = make_inputs(family, model.config)
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).loss)


def _count_calls(module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_teacher_skips_its_lm_head_and_reuses_the_student_vision_tower(pair, data_dir, tmp_path) -> None:
    from compressor.recover import prepare

    student, teacher = pair("llava")

    def session(name: str, **fields):
        s = prepare(student, teacher, fast(**fields), str(data_dir), tmp_path / name)
        counts = {
            "teacher_head": _count_calls(s.teacher.lm_head),
            "teacher_backbone": _count_calls(s.teacher.model.language_model),
            "teacher_vision": _count_calls(s.teacher.model.vision_tower.embeddings),
            "student_vision": _count_calls(s.student.model.vision_tower.embeddings),
        }
        report = s.finish()
        return report, {k: v[0] for k, v in counts.items()}

    shared, counts = session("shared")
    assert counts == {"teacher_head": 0, "teacher_backbone": 2, "teacher_vision": 0, "student_vision": 2}
    alone, counts = session("alone", share_vision=False)
    assert counts == {"teacher_head": 0, "teacher_backbone": 2, "teacher_vision": 2, "student_vision": 2}
    assert not alone.shared_vision["enabled"]
    # sharing changes nothing but the work done: the same losses, step by step
    assert [e["loss"] for e in shared.losses] == [e["loss"] for e in alone.losses]

    # a logit term makes the teacher run its LM head; extra layer pairs go through output_hidden_states
    logits, counts = session(
        "logits", loss={"ce": 0.5, "hidden_mse": 0.3, "logit_kl": 0.2}, hidden_layers=[1]
    )
    assert counts["teacher_head"] == 2 and counts["teacher_vision"] == 0
    assert logits.teacher["lm_head_runs"] and logits.layer_pairs == [(1, 1)]
    assert {"loss_ce", "loss_hidden_mse", "loss_logit_kl"} <= set(logits.losses[-1])


def test_plain_sft_loads_no_teacher(pair, data_dir, tmp_path) -> None:
    from compressor.recover import prepare

    student, _teacher = pair("llava")
    s = prepare(student, None, fast(loss={"ce": 1.0}), str(data_dir), tmp_path / "out")
    assert s.teacher is None and s.trainer.distiller is None and s.teacher_info is None


def test_evaluation_loss_stays_plain_ce(pair, data_dir, tmp_path) -> None:
    from compressor.recover import prepare

    student, teacher = pair("llava")
    s = prepare(student, teacher, fast(), str(data_dir), tmp_path / "out")
    distilling = s.trainer.evaluate(s.trainer.train_dataset)["eval_loss"]
    s.trainer.distiller = None
    assert s.trainer.evaluate(s.trainer.train_dataset)["eval_loss"] == distilling


@pytest.mark.parametrize("loss", [{"ce": 0.5, "hidden_mse": 0.5}, {"ce": 0.5, "logit_kl": 0.5}])
def test_gradient_accumulation_gives_the_same_step(pair, tmp_path, loss) -> None:
    """One step of batch 4 == two accumulated micro-batches of 2: CE via num_items_in_batch, the hidden term
    via its share of the tokens (rows of equal length, different answer lengths). Plain SGD, so that the
    weights move by exactly lr * gradient (Adam's normalisation would blow rounding noise up to lr). With a
    logit term the student's CE comes from its full logits instead of TRL's fused head."""
    from safetensors.torch import load_file

    from compressor.recover import run

    student, teacher = pair("llava")
    data = str(write_rows(tmp_path / "uniform", n=8, uniform=True))
    runs = {
        "whole": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1},
        "accumulated": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2},
    }
    sgd = {"optim": "sgd", "learning_rate": 0.1}
    weights = {}
    for name, sft in runs.items():
        cfg = fast(mode="full", max_steps=1, loss=loss, sft={**sft, **sgd})
        run(student, teacher, cfg, data, tmp_path / name)
        weights[name] = load_file(tmp_path / name / "model.safetensors")
    import torch

    before = load_file(student / "model.safetensors")
    assert any(not torch.equal(before[k], v) for k, v in weights["whole"].items())
    for key, value in weights["whole"].items():
        torch.testing.assert_close(weights["accumulated"][key], value, rtol=1e-5, atol=1e-6)


class Killed(Exception):
    pass


HUB_LLAVA = (  # transformers' module path -> the key in llava-hf's checkpoints on the Hub (llava-1.5-7b-hf)
    ("model.language_model.", "language_model.model."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("lm_head.", "language_model.lm_head."),
)


def hub_layout(student: Path, out: Path) -> Path:
    """`student` with its keys as llava-hf's checkpoints have them on the Hub: read from it, transformers saves
    every later checkpoint in that layout too."""
    from safetensors.torch import load_file, save_file

    if not out.exists():
        out.mkdir()
        for f in student.iterdir():
            shutil.copy(f, out / f.name)
        renamed = {}
        for key, tensor in load_file(student / "model.safetensors").items():
            for ours, hub in HUB_LLAVA:
                if key.startswith(ours):
                    key = hub + key[len(ours) :]
                    break
            renamed[key] = tensor
        save_file(renamed, out / "model.safetensors", metadata={"format": "pt"})
    return out


def safetensors_keys(folder: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        return sorted(f.keys())


@pytest.mark.parametrize(
    "family,mode,layout", [("llava", "lora", "hub"), ("llava", "full", "hub"), ("gemma3", "full", "new")]
)
def test_resume_after_a_kill_ends_with_the_same_weights(
    pair, data_dir, tmp_path, capfd, caplog, family, mode, layout
) -> None:
    """A Hub LLaVA's checkpoints keep its `language_model.model.*` keys, which Trainer's own resume
    (transformers 5.24) cannot map: it loaded nothing and logged every parameter missing."""
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from compressor.recover import checkpoint_dir, run

    class KillAfterCheckpoint2(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise Killed

    student, teacher = pair(family)
    if layout == "hub":
        student = hub_layout(student, student.parent / f"{family}-hub")
        assert "language_model.model.embed_tokens.weight" in safetensors_keys(student)
    cfg = fast(mode=mode, max_steps=4, sft={"save_strategy": "steps", "save_steps": 2, "learning_rate": 1e-3})
    run(student, teacher, cfg, str(data_dir), tmp_path / "whole")

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run(student, teacher, cfg, str(data_dir), out, callbacks=[KillAfterCheckpoint2()])
    assert not out.exists() and (checkpoint_dir(out) / "checkpoint-2").is_dir()
    if mode == "full":  # the checkpoint keeps the layout the student was read in
        keys = safetensors_keys(checkpoint_dir(out) / "checkpoint-2")
        assert keys == safetensors_keys(student) or layout == "new", keys[:3]
    with pytest.raises(CompressorError, match="pass --resume"):
        run(student, teacher, cfg, str(data_dir), out)
    capfd.readouterr()
    caplog.set_level(logging.INFO, logger="compressor.recover.trainer")
    report = run(student, teacher, cfg, str(data_dir), out, resume=True)
    assert report.resumed_from == "checkpoint-2" and report.steps == 4
    assert "There were missing keys" not in capfd.readouterr().err
    assert ("resumed weights" in caplog.text) == (mode == "full"), caplog.text

    whole, resumed = load_file(tmp_path / "whole/model.safetensors"), load_file(out / "model.safetensors")
    start = load_file(student / "model.safetensors") if mode == "full" else {}
    print(
        "DBG",
        {k: float((whole[k] - start[k]).abs().max()) for k in list(whole)[:6] if k in start},
        [k for k in list(whole)[:4]],
        list(start)[:4],
    )
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key


def test_a_checkpoint_of_another_pruning_stops_the_resume(pair, tmp_path) -> None:
    """A sharded Hub-layout checkpoint loads whole into a model with other weights; weights a checkpoint lacks
    stop the load with their count, instead of being left as they were."""
    import torch
    from transformers import AutoModelForImageTextToText

    from compressor.recover.trainer import load_checkpoint_weights

    student, teacher = pair("llava")
    hub = AutoModelForImageTextToText.from_pretrained(hub_layout(student, student.parent / "llava-hub"))
    hub.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")  # read in the Hub layout: saved in it
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    index = json.loads((tmp_path / "sharded/model.safetensors.index.json").read_text())
    assert "language_model.model.embed_tokens.weight" in index["weight_map"]
    other = AutoModelForImageTextToText.from_config(hub.config)
    assert not all(torch.equal(a, b) for a, b in zip(hub.state_dict().values(), other.state_dict().values()))
    load_checkpoint_weights(other, tmp_path / "sharded")
    for (name, want), got in zip(hub.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(want, got), name

    model = AutoModelForImageTextToText.from_pretrained(teacher)  # every layer: the student's file lacks some
    with pytest.raises(CompressorError, match=r"weights missing \(first: \['model.language_model.layers"):
        load_checkpoint_weights(model, hub_layout(student, student.parent / "llava-hub"))
    with pytest.raises(CompressorError, match="holds no model.safetensors"):
        load_checkpoint_weights(model, student.parent)


def test_resume_needs_a_checkpoint(pair, data_dir, tmp_path) -> None:
    from compressor.recover import run

    student, teacher = pair("llava")
    with pytest.raises(CompressorError, match="nothing to resume"):
        run(student, teacher, fast(), str(data_dir), tmp_path / "out", resume=True)


def test_run_refuses_bad_inputs(pair, tiny_saved, data_dir, tmp_path) -> None:
    from compressor.recover import run

    student, teacher = pair("llava")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CompressorError, match="not empty"):
        run(student, teacher, fast(), str(data_dir), tmp_path / "full")
    with pytest.raises(CompressorError, match="no training data"):
        run(student, teacher, fast(), None, tmp_path / "a")
    with pytest.raises(CompressorError, match="needs the teacher"):
        run(student, None, fast(), str(data_dir), tmp_path / "b")
    with pytest.raises(CompressorError, match="is a gemma3 model but the student is llava"):
        run(student, tiny_saved("gemma3"), fast(), str(data_dir), tmp_path / "c")
    bare = (
        tmp_path / "no-image-processor"
    )  # a tokenizer but no image processor: an error, not a bare tokenizer
    shutil.copytree(student, bare)
    for name in ("preprocessor_config.json", "processor_config.json"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises(CompressorError, match="processor"):
        run(bare, teacher, fast(), str(data_dir), tmp_path / "d")
    with pytest.raises(CompressorError, match="hidden_layers: 3 is not an inner layer"):
        run(student, teacher, fast(hidden_layers=[3]), str(data_dir), tmp_path / "e")


# ---------------------------------------------------------------------------- data, layer map, config


def test_fraction_is_a_seeded_subset(data_dir) -> None:
    from compressor.recover import data
    from compressor.recover.config import RecoverData

    def build(fraction: float, seed: int):
        return data.build([RecoverData(dataset=str(data_dir), fraction=fraction)], seed)

    def rows(fraction: float, seed: int) -> list[int]:
        return list(build(fraction, seed).dataset.with_format(None)["row"])

    assert rows(0.5, 1) == rows(0.5, 1) and len(rows(0.5, 1)) == 6
    assert rows(0.5, 1) != rows(0.5, 2)
    assert len(rows(0.01, 1)) == 1 and sorted(rows(1.0, 3)) == list(range(12))
    row = build(0.5, 1).dataset[0]
    assert row["images"][0].size == (32, 32) and row["messages"][1]["role"] == "assistant"


def test_assistant_only_loss_where_the_template_allows_it() -> None:
    from compressor.recover import data
    from compressor.tiny import build_processor

    processor = build_processor("llava")
    assert data.assistant_only(processor)  # {% generation %} markers
    processor.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert not data.assistant_only(processor)


def test_layer_pairs_follow_the_prune_report() -> None:
    from compressor.recover import layer_pairs

    assert layer_pairs(fast(hidden_layers=[1, 2]), 4, 6, [0, 1, 3, 5]) == [(1, 1), (2, 3)]
    assert layer_pairs(fast(hidden_layers=[2]), 4, 6, None) == [(2, 2)]  # width-pruned: identity
    assert layer_pairs(fast(hidden_layers=[0], layer_map=[2, 3, 4, 5]), 4, 6, [0, 1, 3, 5]) == [(0, 2)]
    with pytest.raises(CompressorError, match="one teacher layer per student layer"):
        layer_pairs(fast(layer_map=[0, 1]), 4, 6, None)
    with pytest.raises(CompressorError, match="not an inner layer of the 6-layer teacher"):
        layer_pairs(fast(hidden_layers=[2], layer_map=[0, 1, 5, 5]), 4, 6, None)


def test_recover_config_names_the_bad_field() -> None:
    assert Recover().loss == {"ce": 0.5, "hidden_mse": 0.5} and Recover().fraction == 0.05
    cases = {
        "recover.loss (recover --loss): unknown loss 'hiden_mse' (did you mean 'hidden_mse'?)": {
            "loss": {"hiden_mse": 1}
        },
        "sft.learnin_rate is not an SFTConfig field (did you mean 'learning_rate'?)": {
            "sft": {"learnin_rate": 1e-4}
        },
        "sft.lr_scheduler_type: cosin is not a valid SchedulerType": {"sft": {"lr_scheduler_type": "cosin"}},
        "sft.seed is set by recover.seed": {"sft": {"seed": 1}},
        "recover.mode (recover --mode) is 'lorra' (did you mean 'lora'?): choose one of auto, projector, lora, full": {
            "mode": "lorra"
        },
        "recover.fraction (recover --fraction) is 1.5: set recover --fraction to a number > 0 and <= 1": {
            "fraction": 1.5
        },
        "recover.lora.target: target '(' is not a valid regex": {"lora": {"target": "("}},
        "recover.extra: unknown key 'extra'": {"extra": 1},
        "loss weight ce=-1.0 must be >= 0": {"loss": {"ce": -1}},
    }
    for message, section in cases.items():
        with pytest.raises(CompressorError) as err:
            parse_recover(section, "'r.yaml'")
        assert message in str(err.value), str(err.value)
    cfg = parse_recover({"mode": "full", "sft": {"learning_rate": 3e-5, "gradient_checkpointing": False}})
    assert parse_recover(cfg.model_dump(mode="json")) == cfg


def test_sft_config_gets_our_defaults_and_the_recipe_values(tmp_path) -> None:
    from compressor.recover import args

    built = args.build(
        parse_recover({"mode": "lora", "max_steps": 9, "sft": {"gradient_checkpointing": False}}), tmp_path
    )
    assert built.learning_rate == 2e-4 and built.max_steps == 9 and built.seed == 42
    assert built.activation_checkpointing is False and built.remove_unused_columns is False
    assert built.use_cpu  # no GPU here: torchrun must still give DDP


def test_parse_loss() -> None:
    assert parse_loss("ce=0.5, hidden_mse=0.5") == {"ce": 0.5, "hidden_mse": 0.5}
    assert parse_loss("ce") == {"ce": 1.0}
    with pytest.raises(CompressorError, match="NAME=WEIGHT"):
        parse_loss("ce=half")


def test_cli_modules_import_without_torch() -> None:
    import subprocess
    import sys

    code = "import sys, compressor.recover.command; assert 'torch' not in sys.modules and 'trl' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_recover_command(pair, data_dir, tmp_path, capsys) -> None:
    import argparse

    import yaml

    from compressor.recover.command import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    student, teacher = pair("llava")
    recipe = tmp_path / "r.yaml"
    section = {"mode": "projector", "fraction": 1.0, "sft": FAST_SFT, "data": {"dataset": str(data_dir)}}
    recipe.write_text(yaml.safe_dump({"model": {"source": str(teacher)}, "recover": section}))

    out = tmp_path / "out"
    args = parser.parse_args(
        ["recover", str(student), "--recipe", str(recipe), "--max-steps", "1", "--out", str(out)]
    )
    assert args.func(args) == 0
    assert "trained 1 steps" in capsys.readouterr().out
    report = json.loads((out / "train_report.json").read_text())
    assert report["mode"] == "projector" and report["teacher"]["source"] == str(teacher)

    bad = parser.parse_args(
        ["recover", str(student), "--teacher", str(teacher), "--data", str(data_dir)]
        + ["--loss", "ce=0.5,hiden=0.5", "--out", str(tmp_path / "x")]
    )
    with pytest.raises(CompressorError, match="unknown loss 'hiden'"):
        bad.func(bad)


def test_accelerate_configs_load() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    folder = Path(__file__).parents[1] / "recipes" / "accelerate"
    kinds = {p.stem: str(load_config_from_file(str(p)).distributed_type) for p in folder.glob("*.yaml")}
    assert kinds == {
        "ddp": "DistributedType.MULTI_GPU",
        "fsdp": "DistributedType.FSDP",
        "zero2": "DistributedType.DEEPSPEED",
        "zero3": "DistributedType.DEEPSPEED",
    }
