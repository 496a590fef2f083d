"""Precision on the CPU with bf16 tensors: a compressed model is saved in its source's dtype (never bigger),
frozen weights stay in the compute dtype and bit-identical, trainable ones are float32 master copies (so an
update at lr 2e-5 is not rounded away), losses are float32, and the card states the dtype and the disk size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from compressor.errors import CompressorError
from tests.test_recover import fast, write_rows


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("precision-data"), n=8)


@pytest.fixture(scope="module")
def bf16_pair(tiny_saved, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(student, teacher): a tiny LLaVA saved in bf16, and its depth-pruned student saved by our own code."""
    from transformers import AutoModelForImageTextToText

    from compressor import prune
    from compressor.arch import spec_for
    from compressor.models import load_model, load_processor, save_model
    from compressor.plan import resolve
    from compressor.recipe import Prune

    root = tmp_path_factory.mktemp("bf16")
    source = tiny_saved("llava")
    teacher = root / "teacher"
    AutoModelForImageTextToText.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(teacher)
    load_processor(source).save_pretrained(teacher)
    config = json.loads((teacher / "config.json").read_text())
    spec, backbone = spec_for(config)
    model = load_model(teacher, spec, "auto")  # float32 on the CPU
    assert next(model.parameters()).dtype == torch.float32
    plan = resolve(config, spec, backbone, Prune(method="depth", ratio=0.3, scorer="last"))
    report = prune.apply(model, spec, backbone, plan, [], progress=lambda it, _d: it)
    student = root / "student"
    save_model(model, load_processor(teacher), student)  # as `compressor prune` saves
    (student / "prune_report.json").write_text(report.model_dump_json())
    return student, teacher


def _dtypes(folder: Path) -> set[torch.dtype]:
    return {t.dtype for t in load_file(folder / "model.safetensors").values()}


def test_prune_saves_in_the_source_dtype(bf16_pair) -> None:
    student, teacher = bf16_pair
    assert _dtypes(student) == {torch.bfloat16}
    assert json.loads((student / "config.json").read_text())["dtype"] == "bfloat16"
    s, t = load_file(student / "model.safetensors"), load_file(teacher / "model.safetensors")
    kept = json.loads((student / "prune_report.json").read_text())["kept_layers"]
    for name, value in s.items():  # pruning only slices: every kept tensor is the source's, bit for bit
        if ".layers." in name and "language_model" in name:
            i = int(name.split(".layers.")[1].split(".")[0])
            name = name.replace(f".layers.{i}.", f".layers.{kept[i]}.")
        assert torch.equal(value, t[name]), name
    assert (student / "model.safetensors").stat().st_size < (teacher / "model.safetensors").stat().st_size


class Snapshot(TrainerCallback):
    """The student's parameters at the start and at the end of training (before the save casts them)."""

    def __init__(self) -> None:
        self.begin: dict[str, torch.Tensor] = {}
        self.end: dict[str, torch.Tensor] = {}
        self.trainable: set[str] = set()

    def _take(self, model) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.begin = self._take(model)
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.end = self._take(model)


def _projector(names) -> list[str]:
    return [n for n in names if "multi_modal_projector" in n and "lora_" not in n]


@pytest.mark.parametrize("mode", ["projector", "lora", "full"])
def test_bf16_compute_trains_fp32_masters_and_saves_bf16(bf16_pair, data_dir, tmp_path, mode) -> None:
    from compressor.recover import prepare

    student, teacher = bf16_pair
    snap = Snapshot()
    cfg = fast(
        mode=mode,
        student_dtype="bfloat16",
        sft={"learning_rate": 2e-5, "optim": "adamw_torch"},  # the seed's LLM learning rate
    )
    session = prepare(student, teacher, cfg, str(data_dir), tmp_path / "out", callbacks=[snap])
    assert session.trainer.args.bf16  # bf16 compute means autocast around the fp32 trainable weights
    report = session.finish()

    begin, end, trainable = snap.begin, snap.end, snap.trainable
    assert trainable and all(begin[n].dtype == torch.float32 for n in trainable)
    frozen = [n for n in begin if n not in trainable]
    assert frozen and all(begin[n].dtype == torch.bfloat16 for n in frozen)
    assert all(torch.equal(begin[n], end[n]) for n in frozen)  # bit-identical
    # an update of lr 2e-5 moves (nearly) every projector weight: in pure bf16 it would round away
    projector = _projector(trainable)
    assert projector
    for n in projector:
        moved = (end[n] != begin[n]).float().mean()
        assert moved > 0.9, (n, float(moved))
        if n.endswith(".weight"):  # the same step applied to bf16 weights rounds mostly away
            low = begin[n].bfloat16()
            kept = ((low + (end[n] - begin[n]).bfloat16()) != low).float().mean()
            assert kept < 0.5 * moved, (n, float(kept))
    assert report.precision["compute"] == "bfloat16" and report.precision["saved"] == "bfloat16"
    assert report.precision["trainable_dtypes"] == ["float32"]
    assert report.precision["frozen_dtypes"] == ["bfloat16"]
    assert report.trainable["dtypes"] == {"trainable": ["float32"], "frozen": ["bfloat16"]}

    out = tmp_path / "out"
    assert _dtypes(out) == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    saved, source = load_file(out / "model.safetensors"), load_file(student / "model.safetensors")
    vision = [n for n in saved if "vision_tower" in n]
    assert vision and all(torch.equal(saved[n], source[n]) for n in vision)
    assert report.placement["student"]["devices"] == ["cpu"]
    assert report.placement["teacher"]["how"] == "moved to cpu"


def test_auto_on_the_cpu_computes_in_fp32_and_saves_what_the_recipe_asks(
    bf16_pair, data_dir, tmp_path
) -> None:
    from compressor.recover import run

    student, teacher = bf16_pair
    report = run(student, teacher, fast(mode="projector"), str(data_dir), tmp_path / "auto")
    assert report.precision == {
        "compute": "float32",
        "trainable": "float32",
        "saved": "bfloat16",  # the source's, though every weight was float32 in training
        "source": "bfloat16",
        "trainable_dtypes": ["float32"],
        "frozen_dtypes": ["float32"],
    }
    assert _dtypes(tmp_path / "auto") == {torch.bfloat16}
    report = run(
        student, teacher, fast(mode="projector", save_dtype="float16"), str(data_dir), tmp_path / "f16"
    )
    assert report.precision["saved"] == "float16" and _dtypes(tmp_path / "f16") == {torch.float16}
    assert json.loads((tmp_path / "f16" / "config.json").read_text())["dtype"] == "float16"


def test_16_bit_compute_without_autocast_is_refused() -> None:
    from compressor.recover.config import parse_recover

    with pytest.raises(
        CompressorError, match=r"student_dtype bfloat16 .* needs autocast: set sft\.bf16: true"
    ):
        parse_recover({"student_dtype": "bfloat16", "sft": {"bf16": False}})
    with pytest.raises(CompressorError, match=r"sft\.fp16: true"):
        parse_recover({"student_dtype": "float16", "sft": {"fp16": False}})


def test_losses_are_float32_whatever_the_model_dtype() -> None:
    from compressor.recover import losses

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    mask = torch.ones(2, 5, dtype=torch.bool)
    labels = torch.randint(0, 8, (2, 5), generator=g)
    sb, tb = s.bfloat16(), t.bfloat16()
    for fn, args in [
        (losses.hidden_mse, (mask,)),
        (losses.hidden_cosine, (mask,)),
        (losses.logit_kl, (mask,)),
    ]:
        got = fn(sb, tb, *args)
        assert got.dtype == torch.float32
        assert torch.allclose(got, fn(sb.float(), tb.float(), *args))  # the same as computing on fp32 copies
    ce = losses.cross_entropy(sb, labels)
    assert ce.dtype == torch.float32 and torch.allclose(ce, losses.cross_entropy(sb.float(), labels))
    side = lambda x: losses.Side(hidden=[x], logits=x, ce=ce)  # noqa: E731
    total, _ = losses.combine(
        {"ce": 0.5, "hidden_mse": 0.5, "logit_kl": 0.1}, side(sb), side(tb), losses.Batch(mask=mask)
    )
    assert total.dtype == torch.float32


def _run_folder(root: Path, student: Path, recovered: Path, train: dict[str, Any]) -> Path:
    """A run folder as `compressor run` leaves it, around a real recovered model."""
    import shutil

    from compressor.arch import spec_for
    from compressor.plan import resolve
    from compressor.recipe import Prune

    config = json.loads((student / "config.json").read_text())
    prune_report = json.loads((student / "prune_report.json").read_text())
    teacher_config = {**config}
    teacher_config["text_config"] = {**config["text_config"], "num_hidden_layers": 6}
    spec, backbone = spec_for(teacher_config)
    plan = resolve(teacher_config, spec, backbone, Prune(method="depth", ratio=0.3, scorer="last"))
    (root / "reports").mkdir(parents=True)
    (root / "recipe.yaml").write_text("model: {source: tiny}\n")
    (root / "plan.json").write_text(plan.model_dump_json())
    (root / "reports" / "prune.json").write_text(json.dumps(prune_report))
    (root / "reports" / "train.json").write_text(json.dumps(train))
    shutil.copytree(recovered, root / "recovered")
    return root


def test_card_states_the_saved_dtype_and_the_size_on_disk(bf16_pair, data_dir, tmp_path) -> None:
    from compressor.card import render
    from compressor.recover import run

    student, teacher = bf16_pair
    out = tmp_path / "out"
    report = run(student, teacher, fast(mode="projector"), str(data_dir), out)
    folder = _run_folder(tmp_path / "run", student, out, report.model_dump(mode="json"))
    size = sum(f.stat().st_size for f in (folder / "recovered").glob("*.safetensors"))
    text = render(folder)
    assert f"| checkpoint | bfloat16 safetensors, {size / 1e6:.1f} MB on disk |" in text
    assert (
        "frozen weights in float32, trainable weights in float32; saved in bfloat16 (the original's dtype)"
        in text
    )


def test_a_gathered_checkpoint_is_cast_to_the_saved_dtype(tiny_saved, tmp_path) -> None:
    """What recover does to the Trainer's FSDP / ZeRO-3 output (fp32 masters beside 16-bit frozen weights)."""
    import shutil

    from transformers import AutoModelForImageTextToText

    from compressor.models import cast_checkpoint

    folder = tmp_path / "gathered"
    shutil.copytree(tiny_saved("llava"), folder)
    before = load_file(folder / "model.safetensors")
    assert _dtypes(folder) == {torch.float32}
    cast_checkpoint(folder, "bfloat16")
    assert _dtypes(folder) == {torch.bfloat16}
    after = load_file(folder / "model.safetensors")
    assert all(torch.equal(after[k], before[k].bfloat16()) for k in before)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert model.dtype == torch.bfloat16 and model.config.text_config.dtype == torch.bfloat16
