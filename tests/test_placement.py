"""Where models live: the process's own GPU under a multi-process launch, a dispatched (offloaded) teacher that
is never moved with `.to()`, and Taylor scoring that keeps accelerate's hooks on an offloaded model.

On the CPU, `device_map="auto"` with a small `max_memory` and an `offload_folder` really offloads part of a
tiny model to disk, which exercises the same accelerate hooks as a CPU-offloaded model on a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compressor.arch import spec_for


def _size(folder: Path) -> int:
    from compressor.models import weights_bytes

    return weights_bytes(folder, torch.float32)


def _dispatched(folder: Path, tmp_path: Path, share: float = 0.6):
    """The model in `folder` with about (1 - share) of its weights offloaded to disk."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(
        folder,
        dtype=torch.float32,
        device_map="auto",
        max_memory={"cpu": int(_size(folder) * share)},
        offload_folder=str(tmp_path / "offload"),
    )
    assert "disk" in set(model.hf_device_map.values())  # part of it really is offloaded
    return model.eval()


def test_taylor_scores_an_offloaded_model_and_keeps_its_hooks(tiny_saved, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText

    from compressor.prune.importance import WIDTH_SCORERS, ScoreContext
    from compressor.tiny import make_inputs

    folder = tiny_saved("llava")
    plain = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    model = _dispatched(folder, tmp_path)
    layers = model.model.language_model.layers
    offloaded = [
        i
        for i, _ in enumerate(layers)
        if model.hf_device_map.get(f"model.language_model.layers.{i}") == "disk"
    ]
    assert offloaded and len(offloaded) < len(layers)
    hooked = [layer.forward for layer in layers]
    spec, backbone = spec_for(plain.config.to_dict())
    batches = [make_inputs("llava", plain.config, batch_size=1, seed=s) for s in range(2)]

    def score(m):
        return WIDTH_SCORERS.get("taylor")(ScoreContext(m, spec, backbone, batches), ["heads", "mlp"], 2, 16)

    want, got = score(plain), score(model)
    for layer in range(len(layers)):  # offloaded layers are scored too, and exactly
        assert torch.allclose(torch.tensor(got.heads[layer]), torch.tensor(want.heads[layer]), rtol=1e-5)
        assert torch.allclose(torch.tensor(got.mlp[layer]), torch.tensor(want.mlp[layer]), rtol=1e-5)
    # accelerate's dispatch hooks are still in place: the same instance forward, offloaded weights still on meta
    assert [layer.forward for layer in layers] == hooked
    assert all(hasattr(layer, "_hf_hook") for layer in layers)
    assert next(layers[offloaded[-1]].parameters()).device.type == "meta"
    assert all(p.grad is None for p in model.parameters())
    inputs = make_inputs("llava", plain.config)
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, plain(**inputs).logits, atol=1e-5)


class FakeCuda:
    """torch.cuda as a machine with 4 GPUs of `free` bytes each, recording which GPU was asked."""

    def __init__(self, monkeypatch, free: int) -> None:
        self.asked: list[int] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (self.asked.append(i), (free, free))[1])


def test_each_rank_loads_on_its_own_gpu(tiny_saved, monkeypatch) -> None:
    from compressor.errors import CompressorError
    from compressor.models import pick_device_map

    folder = tiny_saved("llava")
    need = _size(folder)
    for var in ("LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(var, raising=False)
    cuda = FakeCuda(monkeypatch, free=need * 10)
    assert pick_device_map(folder, torch.float32, None) == {"": 0}  # one process: the current GPU
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert pick_device_map(folder, torch.float32, None) == {"": 3}  # rank 3 of torchrun: GPU 3, not GPU 0
    assert cuda.asked == [0, 3]  # the free memory of the process's own GPU was read
    assert pick_device_map(folder, torch.float32, "auto") == "auto"  # the user's choice stands
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert pick_device_map(folder, torch.float32, None) is None  # FSDP shards from the CPU copy

    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    FakeCuda(monkeypatch, free=need // 2)
    with pytest.raises(CompressorError, match="do not fit .* GPU 3 of this process.*fsdp.yaml"):
        pick_device_map(folder, torch.float32, None)  # every rank spreading over every GPU: refused
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert pick_device_map(folder, torch.float32, None) == "auto"  # one process may spread and offload


def test_recovery_with_an_offloaded_teacher_never_moves_it(tiny_saved, tmp_path: Path) -> None:
    from compressor.recover import prepare
    from tests.test_recover import fast, make_student, write_rows

    teacher = tiny_saved("llava")
    student = make_student(teacher, "llava", tmp_path / "student")
    data = write_rows(tmp_path / "data", n=4)
    options = {"max_memory": {"cpu": int(_size(teacher) * 0.6)}, "offload_folder": str(tmp_path / "offload")}
    cfg = fast(mode="projector", teacher_device="auto")
    session = prepare(student, teacher, cfg, str(data), tmp_path / "out", teacher_options=options)
    assert "disk" in set(session.teacher.hf_device_map.values())
    moved: list = []
    original_to = session.teacher.to
    session.teacher.to = lambda *a, **k: (moved.append(a), original_to(*a, **k))[1]
    report = session.finish()
    assert moved == []  # `.to()` on a dispatched model would break its hooks
    where = report.placement["teacher"]
    assert where["dispatched"] and where["how"] == "kept on its device_map"
    assert "model.language_model.layers.5" in where["offloaded"] and "disk" in where["devices"]
    assert report.placement["student"] == {
        "devices": ["cpu"],
        "dtypes": ["float32"],
        "dispatched": False,
        "offloaded": [],
    }
    assert report.shared_vision["hits"] == 2 and report.losses[-1]["loss_hidden_mse"] > 0


@pytest.mark.gpu
def test_a_model_loads_on_this_processs_real_gpu(tiny_saved, monkeypatch) -> None:
    """No fakes, on a CUDA device: one process loads on the current GPU, a launched rank on its LOCAL_RANK's
    GPU; `placement` reports that device, and the model runs there."""
    from compressor.models import load_model, pick_device_map, placement
    from compressor.tiny import make_inputs

    folder = tiny_saved("llava")
    spec, _ = spec_for(json.loads((folder / "config.json").read_text()))
    for var in ("LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(var, raising=False)
    current = torch.cuda.current_device()
    last = torch.cuda.device_count() - 1
    assert pick_device_map(folder, torch.float32, None) == {"": current}
    model = load_model(folder, spec, "float32")
    expect = {"devices": [f"cuda:{current}"], "dtypes": ["float32"], "dispatched": False, "offloaded": []}
    assert placement(model) == expect
    inputs = {k: v.to(f"cuda:{current}") for k, v in make_inputs("llava", model.config).items()}
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()
    del model
    monkeypatch.setenv("LOCAL_RANK", str(last))
    monkeypatch.setenv("WORLD_SIZE", str(last + 1))
    assert pick_device_map(folder, torch.float32, None) == {"": last}  # the rank's own GPU, not GPU 0
    assert placement(load_model(folder, spec, "float32"))["devices"] == [f"cuda:{last}"]
