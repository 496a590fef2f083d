"""Recovery and scoring failures on tiny real models: a diverging loss (an absurd learning rate, an injected NaN)
stops with the step, keeps the last good checkpoint and names the setting to lower; out of memory in training
and in scoring (torch.OutOfMemoryError raised by a forward pre-hook on the real model) names what to lower."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from compressor.errors import CompressorError
from tests.test_recover import fast, make_student, write_rows


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("failure-data"))


@pytest.fixture(scope="module")
def llava(tiny_saved, tmp_path_factory) -> tuple[Path, Path]:
    """(student, teacher): a tiny LLaVA and its 30 % depth-pruned copy."""
    teacher = tiny_saved("llava")
    return make_student(teacher, "llava", tmp_path_factory.mktemp("failure-student") / "llava"), teacher


def _finite(folder: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    return all(bool(torch.isfinite(t).all()) for t in load_file(folder / "model.safetensors").values())


def test_an_absurd_learning_rate_stops_at_the_step_that_explodes(llava, data_dir, tmp_path) -> None:
    from compressor.recover import checkpoint_dir, run
    from compressor.recover.trainer import TrainingDiverged

    student, teacher = llava
    sft = {"learning_rate": 100.0, "save_strategy": "steps", "save_steps": 1, "max_grad_norm": 0.0}
    out = tmp_path / "out"
    with pytest.raises(TrainingDiverged) as caught:
        run(student, teacher, fast(mode="full", max_steps=8, sft=sft), str(data_dir), out)
    message = str(caught.value)
    step = int(message.split("recovery stopped at step ")[1].split(" ")[0])
    assert 2 <= step <= 8 and "of 8" in message
    assert "learning_rate (now 100; try 10)" in message and "max_grad_norm: 1.0" in message
    assert not out.exists()
    work = checkpoint_dir(out)
    # the checkpoint saved right before the bad step (its weights gave the loss) is set aside, never resumed
    assert (work / f"checkpoint-{step - 1}-diverged").is_dir()
    assert (
        f"checkpoint-{step - 1}, whose weights gave this loss, was renamed checkpoint-{step - 1}-diverged"
        in message
    )
    assert "the loss exploded to" in message or "the loss is nan" in message or "is inf" in message
    kept = sorted(
        p.name for p in work.glob("checkpoint-*") if p.name.split("-")[1].isdigit() and "-d" not in p.name
    )
    assert kept == [f"checkpoint-{i}" for i in range(1, step - 1)]
    if kept:
        assert f"the last checkpoint, {work / kept[-1]}, is kept" in message
    else:
        assert "there is no checkpoint to resume from" in message


class _NaNAt:
    """A forward hook on a real module of the student: its output turns NaN from optimiser step `step` on."""

    def __init__(self, session, step: int) -> None:
        self.session, self.step = session, step
        self.handle = session.student.base_model.register_forward_hook(self)

    def __call__(self, module, args, output):
        if self.session.trainer.state.global_step + 1 >= self.step and module.training:
            output.last_hidden_state = output.last_hidden_state * math.nan
        return output


@pytest.mark.parametrize("nan_at", [3, 4])
def test_a_nan_loss_stops_with_its_step_and_the_last_good_checkpoint_resumes(
    llava, data_dir, tmp_path, nan_at
) -> None:
    import torch
    from safetensors.torch import load_file

    from compressor.recover import checkpoint_dir, prepare, run
    from compressor.recover.trainer import TrainingDiverged

    student, teacher = llava
    cfg = fast(
        mode="full", max_steps=6, sft={"save_strategy": "steps", "save_steps": 2, "learning_rate": 1e-3}
    )
    out = tmp_path / "out"
    session = prepare(student, teacher, cfg, str(data_dir), out)
    _NaNAt(session, nan_at)
    with pytest.raises(TrainingDiverged, match=rf"stopped at step {nan_at} of 6: the loss is nan") as caught:
        session.finish()
    work = checkpoint_dir(out)
    assert not out.exists() and "lower recover.sft.learning_rate (now 0.001" in str(caught.value)
    assert "That step's update was not applied" in str(caught.value)
    if nan_at == 3:  # checkpoint-2's weights gave the NaN: set aside, nothing to resume
        assert (work / "checkpoint-2-diverged").is_dir() and not (work / "checkpoint-2").exists()
        assert "there is no checkpoint to resume from" in str(caught.value)
        with pytest.raises(CompressorError, match="nothing to resume"):
            run(student, teacher, cfg, str(data_dir), out, resume=True)
        return
    assert f"the last checkpoint, {work / 'checkpoint-2'}, is kept" in str(caught.value)
    assert _finite(work / "checkpoint-2") and not list(work.glob("*diverged"))
    report = run(student, teacher, cfg, str(data_dir), out, resume=True)
    assert report.resumed_from == "checkpoint-2" and report.steps == 6
    run(student, teacher, cfg, str(data_dir), tmp_path / "whole")
    whole, resumed = load_file(tmp_path / "whole/model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def _oom(*_args, **_kwargs):
    import torch

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_in_training_names_the_settings_to_lower(llava, data_dir, tmp_path) -> None:
    from compressor.recover import checkpoint_dir, prepare

    student, teacher = llava
    out = tmp_path / "out"
    session = prepare(student, teacher, fast(mode="lora", max_steps=2), str(data_dir), out)
    session.student.base_model.register_forward_pre_hook(_oom)
    with pytest.raises(CompressorError) as caught:
        session.finish()
    message = str(caught.value)
    assert "recovery ran out of memory at step 1 of 2 (cpu)" in message
    for needle in (
        "per_device_train_batch_size (now 2",
        "gradient_accumulation_steps, now 1",
        "gradient_checkpointing (now off)",
        "max_length (now 2048)",
        "recover.student_dtype / teacher_dtype, now auto / auto",
        "recover.teacher_device",
        "there is no checkpoint to resume from",
    ):
        assert needle in message, needle
    assert not out.exists() and not list(checkpoint_dir(out).glob("checkpoint-*"))


def test_out_of_memory_in_scoring_names_the_settings_to_lower(tiny_saved, data_dir, tmp_path, capsys) -> None:
    import torch

    from compressor.cli import main

    handle = torch.nn.modules.module.register_module_forward_pre_hook(_oom)
    try:
        out = tmp_path / "pruned"
        argv = [
            "prune",
            str(tiny_saved("llava")),
            "--method",
            "width",
            "--ratio",
            "0.3",
            "--scorer",
            "taylor",
        ]
        rc = main([*argv, "--calibration", str(data_dir), "--num-samples", "2", "--out", str(out)])
    finally:
        handle.remove()
    err = capsys.readouterr().err
    assert rc not in (0, None) and "Traceback" not in err and not out.exists()
    for needle in (
        "out of memory while scoring with taylor on cpu",
        "--max-length (prune.calibration.max_length, now",
        "--num-samples (prune.calibration.num_samples, now 2)",
        "--dtype bfloat16, now auto",
        "--device-map auto",
        "--scorer activation",
    ):
        assert needle in err, needle
