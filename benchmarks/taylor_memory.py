"""Peak memory of Taylor width scoring: ours against a full backward's gradients, side by side.

The model is a LLaVA whose language model has SmolLM2-135M's exact shape (30 layers, hidden 576,
9 heads / 3 KV groups, MLP 1536, vocab 49152, tied embeddings) with a small CLIP tower; weights are
random (the shapes, not the values, set the memory). Calibration: 10 samples of 64 image + 128 text
tokens, as in the seed's Taylor setting.

- ours: `compressor`'s taylor scorer — only the scored weights require grad, one sample at a time,
  each weight's gradient folded into its unit scores and freed as soon as it is accumulated.
- full backward: what LLM-Pruner / Torch-Pruning do — every parameter requires grad, one backward over
  the 10 samples as a batch, all gradients kept, then |w·g| per unit.

Each variant runs in a fresh process; peak RSS (ru_maxrss) is divided by the model's fp32 size.
Run: `.venv/bin/python benchmarks/taylor_memory.py`
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

SAMPLES, TEXT_TOKENS = 10, 128


def build():
    import torch
    from shapes import IMAGE_TOKEN, smollm2_llava

    model = smollm2_llava()
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(SAMPLES):
        ids = torch.cat(
            [torch.full((1, 64), IMAGE_TOKEN), torch.randint(10, 49152, (1, TEXT_TOKENS), generator=g)], 1
        )
        labels = ids.masked_fill(ids == IMAGE_TOKEN, -100)
        batches.append(
            {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "labels": labels,
                "pixel_values": torch.randn(1, 3, 64, 64, generator=g),
            }
        )
    return model, batches


def model_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def run_ours():
    from compressor import prune as pruning
    from compressor.arch import spec_for
    from compressor.plan import resolve
    from compressor.recipe import Prune

    model, batches = build()
    size = model_bytes(model)
    spec, backbone = spec_for(model.config.to_dict())
    plan = resolve(model.config.to_dict(), spec, backbone, Prune(method="width", ratio=0.3, round_to=64))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    pruning.apply(model, spec, backbone, plan, batches, progress=lambda it, d: it)
    return size, base, time.perf_counter() - t


def run_full_backward():
    import torch

    model, batches = build()
    size = model_bytes(model)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    batch = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    model(**batch, use_cache=False).loss.backward()
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            for lin in (layer.mlp.gate_proj, layer.mlp.up_proj):
                (lin.weight * lin.weight.grad).abs().sum(1)
            (layer.mlp.down_proj.weight * layer.mlp.down_proj.weight.grad).abs().sum(0)
    return size, base, time.perf_counter() - t


def child(which: str) -> None:
    import torch

    torch.set_num_threads(2)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size, base, seconds = {"ours": run_ours, "full": run_full_backward}[which]()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"peak_kb": peak, "base_kb": base, "start_kb": start, "model_bytes": size, "seconds": seconds}
        )
    )


def main() -> None:
    if len(sys.argv) > 1:
        return child(sys.argv[1])
    rows = {}
    for which in ("ours", "full"):
        out = subprocess.run(
            [sys.executable, __file__, which], capture_output=True, text=True, check=True
        ).stdout
        rows[which] = json.loads(out.strip().splitlines()[-1])
    model_mb = rows["ours"]["model_bytes"] / 1e6
    print(
        f"model (fp32): {model_mb:.0f} MB; calibration {SAMPLES} x (64 image + {TEXT_TOKENS} text) tokens\n"
    )
    print("x model = (peak RSS - RSS after imports) / model size: the model plus everything scoring adds\n")
    print(f"{'variant':<30} {'peak RSS MB':>11} {'x model':>8} {'scoring adds MB':>16} {'seconds':>8}")
    for name, label in (("ours", "compressor taylor"), ("full", "full backward (TP/LLM-Pruner)")):
        r = rows[name]
        peak = r["peak_kb"] / 1e3
        extra = (r["peak_kb"] - r["base_kb"]) / 1e3
        held = (r["peak_kb"] - r["start_kb"]) / 1e3
        print(f"{label:<30} {peak:>11.0f} {held / model_mb:>8.2f} {extra:>16.0f} {r['seconds']:>8.1f}")
    print(f"\npeak RSS, full backward / ours: {rows['full']['peak_kb'] / rows['ours']['peak_kb']:.2f}x")


if __name__ == "__main__":
    main()
