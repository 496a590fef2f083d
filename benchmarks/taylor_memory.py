"""Peak memory of Taylor width scoring ÷ the weights' size, at three model sizes and two calibration lengths.

Models (LLaVA, fp32 on the CPU; a one-layer CLIP tower of hidden 64 whose patch grid gives the image tokens):
- tiny: the test model's text backbone (`compressor.tiny`, 6 layers, hidden 64, vocab of the tiny tokenizer);
- 30M: 8 layers, hidden 512, 8 heads / 4 KV groups, MLP 1408, vocab 8192, tied embeddings (random weights);
- 135M: the real SmolLM2-135M-Instruct (30 layers, hidden 576, MLP 1536, vocab 49152, tied embeddings).
Calibration: 4 samples of 64 image + 128 text tokens (the seed's setting on a small tower) and of 576 image +
124 text tokens (LLaVA-1.5's 336 px CLIP gives 576 image tokens).

Variants, each in a fresh process:
- ours: `compressor.prune.apply`, width 30 %, Taylor (chunked loss; layers checkpointed beyond the budget);
- full backward: what LLM-Pruner / Torch-Pruning do: every parameter requires grad, one backward per sample,
  gradients accumulated in `.grad` (then |w·g| per unit, negligible).
Peak = the highest running sum of CPU allocator bytes while the model is built and scored (torch profiler with
profile_memory; the same quantity as `torch.cuda.max_memory_allocated` on a GPU: live tensors, not the
allocator's cache or code pages), weights included; "x weights" = peak ÷ the model's parameter bytes. Issue target:
flat across sizes and ≤ 1.5x (a LLaVA-1.5-7B in bf16 is 13.5 GB; LLM-Pruner's maintainers quote ~80 GB).

Run: `.venv/bin/python benchmarks/taylor_memory.py` (`make bench` runs it; about 5 minutes on two cores).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

SIZES = ("tiny", "30M", "135M")
LENGTHS = ((64, 128), (576, 124))  # (image tokens, text tokens)
SAMPLES = 4


def build(size: str, image_tokens: int):
    import torch
    from transformers import AutoModelForImageTextToText

    from compressor import tiny

    side = int(math.isqrt(image_tokens)) * 16
    if size == "135M":
        from compressor.reference import BuildConfig, assemble, language_model

        torch.manual_seed(0)
        cfg = BuildConfig(image_size=side, patch_size=16, vision_hidden=64, vision_layers=1)
        model, _ = assemble(language_model(), cfg)
        return model.eval()
    text = (
        {}
        if size == "tiny"
        else {
            "hidden_size": 512,
            "intermediate_size": 1408,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 64,
            "vocab_size": 8192,
            "tie_word_embeddings": True,
        }
    )
    config = tiny.tiny_config("llava", **text)
    v = config.vision_config
    v.image_size, v.patch_size, v.hidden_size, v.intermediate_size = side, 16, 64, 256
    v.num_hidden_layers, v.num_attention_heads = 1, 2
    config.vision_feature_layer = -1
    config.image_seq_length = image_tokens
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(config, dtype=torch.float32).eval()


def batches(model, image_tokens: int, text_tokens: int):
    import torch

    vocab = model.config.text_config.vocab_size
    image_id = model.config.image_token_id
    side = model.config.vision_config.image_size
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(SAMPLES):
        text = torch.randint(vocab // 2, vocab, (1, text_tokens), generator=g)
        ids = torch.cat([torch.full((1, image_tokens), image_id), text], 1)
        out.append(
            {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "labels": ids.masked_fill(ids == image_id, -100),
                "pixel_values": torch.randn(1, 3, side, side, generator=g),
            }
        )
    return out


def ours(model, data) -> None:
    from compressor import prune as pruning
    from compressor.arch import spec_for
    from compressor.plan import resolve
    from compressor.recipe import Prune

    config = model.config.to_dict()
    spec, backbone = spec_for(config)
    plan = resolve(config, spec, backbone, Prune(method="width", ratio=0.3, round_to=8))
    pruning.apply(model, spec, backbone, plan, data, progress=lambda it, _d: it)


def full_backward(model, data) -> None:
    for p in model.parameters():
        p.requires_grad_(True)
    for batch in data:
        model(**batch, use_cache=False).loss.backward()


def child(size: str, image_tokens: int, text_tokens: int, variant: str) -> None:
    import torch
    from memory_estimate import allocation_peak

    torch.set_num_threads(2)
    state = {}

    def setup():
        state["model"] = build(size, image_tokens)
        state["data"] = batches(state["model"], image_tokens, text_tokens)
        state["weights"] = sum(p.numel() * p.element_size() for p in state["model"].parameters())
        return state

    fn = ours if variant == "ours" else full_backward
    peak, _ = allocation_peak(lambda s: fn(s["model"], s["data"]), setup)
    print(json.dumps({"peak": peak, "weights": state["weights"]}))


def main() -> None:
    if len(sys.argv) > 1:
        size, img, txt, variant = sys.argv[1:5]
        return child(size, int(img), int(txt), variant)
    print(
        "peak live tensor bytes (torch profiler) of Taylor width scoring, weights included, ÷ the weights' bytes; "
        f"fp32 on the CPU, {SAMPLES} calibration samples\n"
    )
    print(
        "| model | weights MB | tokens (image + text) | ours: peak MB | ours: x weights | full backward: peak MB "
        "| full backward: x weights | full / ours |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for size in SIZES:
        for img, txt in LENGTHS:
            got = {}
            for variant in ("ours", "full"):
                cmd = [sys.executable, __file__, size, str(img), str(txt), variant]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{size} {variant} failed:\n{out.stderr[-3000:]}")
                got[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            w = got["ours"]["weights"]
            o, f = got["ours"]["peak"], got["full"]["peak"]
            print(
                f"| {size} | {w / 1e6:.1f} | {img} + {txt} | {o / 1e6:.1f} | {o / w:.2f} | {f / 1e6:.1f} | "
                f"{f / got['full']['weights']:.2f} | {f / o:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
