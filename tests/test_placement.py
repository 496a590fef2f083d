"""Where models live: the process's own GPU under a multi-process launch, a dispatched (offloaded) teacher that
is never moved with `.to()`, and Taylor scoring that keeps accelerate's hooks on an offloaded model.

On the CPU, `device_map="auto"` with a small `max_memory` and an `offload_folder` really offloads part of a
tiny model to disk, which exercises the same accelerate hooks as a CPU-offloaded model on a GPU."""

from __future__ import annotations

from pathlib import Path

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
