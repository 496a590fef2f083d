"""Decode speed of pruned students against the original, and against the ideal speedup, side by side in one run.

The model is a LLaVA whose language model has SmolLM2-135M's exact shape (30 layers, hidden 576, 9 heads / 3 KV
groups, head_dim 64, MLP 1536, vocab 49152, tied embeddings) with a small CLIP tower; weights are random (the
shapes, not the values, set the speed). Students are made by the product itself, `compressor.plan.resolve` +
`compressor.prune.apply` with data-free scorers, at 15 / 30 / 45 % of the language backbone (the project's
compression ratio, embeddings included):

- depth, scorer `last`: drops a contiguous block of layers just below the final one;
- width, scorer `magnitude`: whole KV groups and MLP channels, the same in every layer (MLP widths snapped to
  multiples of 64, the recipe default).

Method (as research/perf-anchors.md §3): batch 1, fp32, SDPA, `torch.set_num_threads(2)`, a 32-token text
prompt, greedy `generate` of exactly 64 new tokens (`min_new_tokens` = `max_new_tokens`, KV cache on), one
warm-up per model, then ROUNDS rounds, each timing every model once in an order that alternates between rounds.
tok/s = 64 / wall time of the call (prefill included, as the anchors report); decode-only tok/s = 63 / (t64 − t1)
with t1 a 1-token generate of the same round (what `compressor eval` reports). The ideal speedup is the parameter
ratio original / student, with the tied embedding counted once (incl.) or left out (excl.).

Run: `.venv/bin/python benchmarks/decode_speed.py [ROUNDS]` (default 9 rounds; about 4 minutes on 2 cores).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

PROMPT, NEW = 32, 64
RATIOS = (0.15, 0.30, 0.45)


def build():
    from shapes import smollm2_llava

    return smollm2_llava()


def student(original, method: str, ratio: float):
    from compressor import prune
    from compressor.arch import spec_for
    from compressor.plan import resolve
    from compressor.recipe import Prune

    model = copy.deepcopy(original)
    config = model.config.to_dict()
    spec, backbone = spec_for(config)
    scorer = "last" if method == "depth" else "magnitude"
    plan = resolve(config, spec, backbone, Prune(method=method, ratio=ratio, scorer=scorer))
    prune.apply(model, spec, backbone, plan, batches=None, progress=lambda it, _d: it)
    return model.eval()


def counts(model) -> tuple[int, int]:
    """(total parameters, non-embedding parameters); the tied embedding / lm_head counted once."""
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return total, total - model.get_input_embeddings().weight.numel()


def shape(model) -> str:
    t = model.config.text_config
    return f"{t.num_hidden_layers} L, q {t.num_attention_heads} / kv {t.num_key_value_heads}, MLP {t.intermediate_size}"


def main(rounds: int) -> None:
    import torch

    from compressor.evaluate.speed import timed_generate

    torch.set_num_threads(2)
    original = build()
    models = {"original": original}
    for method in ("depth", "width"):
        for ratio in RATIOS:
            models[f"{method} {ratio:.0%}"] = student(original, method, ratio)
    ids = torch.randint(10, 49152, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    for model in models.values():
        timed_generate(model, ids, NEW, 0)  # warm-up
    t_full: dict[str, list[float]] = {name: [] for name in models}
    t_one: dict[str, list[float]] = {name: [] for name in models}
    start = time.perf_counter()
    for r in range(rounds):
        for name in list(models) if r % 2 == 0 else list(models)[::-1]:
            t_one[name].append(timed_generate(models[name], ids, 1, 0))
            t_full[name].append(timed_generate(models[name], ids, NEW, 0))
        print(f"round {r + 1}/{rounds} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    base_total, base_nonemb = counts(original)
    tok_s = {n: [NEW / t for t in ts] for n, ts in t_full.items()}
    decode = {n: [(NEW - 1) / (tf - t1) for tf, t1 in zip(t_full[n], t_one[n])] for n in models}
    base = statistics.median(tok_s["original"])
    base_decode = statistics.median(decode["original"])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 1, prompt {PROMPT}, {NEW} new tokens; "
        f"{rounds} interleaved rounds after 1 warm-up\n"
    )
    header = (
        "| model | shape | removed non-emb / total | tok/s best | tok/s median | speedup median | ideal incl. / excl. "
        "| measured / ideal incl. / excl. | decode-only tok/s median (speedup) |"
    )
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for name, model in models.items():
        total, nonemb = counts(model)
        ideal_in, ideal_ex = base_total / total, base_nonemb / nonemb
        med = statistics.median(tok_s[name])
        speedup = med / base
        dec = statistics.median(decode[name])
        print(
            f"| {name} | {shape(model)} | {1 - nonemb / base_nonemb:.1%} / {1 - total / base_total:.1%} "
            f"| {max(tok_s[name]):.1f} | {med:.1f} | {speedup:.2f} | {ideal_in:.2f} / {ideal_ex:.2f} "
            f"| {speedup / ideal_in:.2f} / {speedup / ideal_ex:.2f} | {dec:.1f} ({dec / base_decode:.2f}) |"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
