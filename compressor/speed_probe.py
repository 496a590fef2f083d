"""`compressor plan --speed`: how fast the planned shape decodes on this machine, before anything is pruned.

A width student keeps every decoder layer, so the per-token cost outside the matrix multiplies (kernel launches
or op dispatch, norms, RoPE, cache updates) does not shrink with its parameters; a depth student drops it with
its layers. At batch 1 that cost is a large share of a small model's step on a CPU (benchmarks/decode_speed.py
profiles it: about a third for SmolLM2-135M's width students) and of any model's step under eager PyTorch on a
GPU, so the parameter ratio overstates a width student's speed-up. Speed depends on shapes, not values, so this
measures it with random weights, in seconds, where the user will run the model:

- models: the original's language model, the plan's student, and the other method at the same ratio (depth with
  the data-free `last` scorer, or width with today's defaults), each the text decoder class the family's
  transformers model uses (built from the pruned text config, initialised by transformers on the device) plus an
  LM head of the vocabulary; the vision tower is left out (pruning never touches it);
- method: greedy decoding with the decoder's own KV cache, a `prompt_tokens` prompt (random ids, the same for all)
  per batch row, then `new_tokens` single-token steps timed (prefill excluded); tokens/s = batch x steps / time.
  Prefill (time to first token, where a multimodal prompt's hundreds of image tokens go): one forward over
  `prefill_tokens` tokens at batch 1 with the cache filled, tokens/s = tokens / time.
  One warm-up per model and batch, then `rounds` rounds that alternate the models' order; the median is kept.
  All models stay loaded and the rounds interleave when their weights fit half the free memory; otherwise each is
  built, timed and freed in turn (the method says which);
- ideal: the parameter ratio of the language model (decoder + LM head; a tied embedding counted once).
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError
from compressor.plan_types import ProbeRow, SpeedProbe, speed_rows
from compressor.recipe import Prune

if TYPE_CHECKING:
    from compressor.arch import ArchSpec, Backbone
    from compressor.plan import Plan

BATCHES = (1, 8)
# a student that reaches less than this share of the other method's batch-1 speed-up gets a note in the plan
SLOWER = 0.9


# ---------------------------------------------------------------------------- shapes


def student_texts(
    config: dict[str, Any], spec: ArchSpec, backbone: Backbone, plan: Plan, prune: Prune
) -> list[tuple[str, dict[str, Any], int]]:
    """(label, text config, language-backbone parameters) of the original, the planned student and the other
    method at the same ratio; the counts are the plans' own (decoder + untied LM head)."""
    from compressor.plan import resolve

    text = spec.text_config(config)
    out = [
        ("original", text, plan.params.backbone_before),
        (
            f"planned: {plan.method} {plan.achieved_ratio:.1%}",
            shaped_text(text, backbone, plan),
            plan.params.backbone_after,
        ),
    ]
    other = "width" if plan.method == "depth" else "depth"
    try:
        alt = resolve(
            config,
            spec,
            backbone,
            Prune(method=other, ratio=prune.ratio, scorer="last" if other == "depth" else "magnitude"),
        )
    except CompressorError:
        return out  # no legal shape of the other method at this ratio
    out.append(
        (
            f"alternative: {other} {alt.achieved_ratio:.1%}",
            shaped_text(text, backbone, alt),
            alt.params.backbone_after,
        )
    )
    return out


def shaped_text(text: dict[str, Any], backbone: Backbone, plan: Plan) -> dict[str, Any]:
    """The text config a plan's student will have (which layers a depth plan drops does not change speed)."""
    from compressor.plan import rewrite_text_config

    if plan.method == "depth":
        return rewrite_text_config(text, backbone, kept_layers=list(range(plan.num_layers_after)))
    return rewrite_text_config(
        text,
        backbone,
        kv_heads=plan.kv_heads_after if "heads" in plan.targets else None,
        intermediate=plan.intermediate_after if "mlp" in plan.targets else None,
    )


def _with_text(config: dict[str, Any], spec: ArchSpec, text: dict[str, Any]) -> dict[str, Any]:
    if spec.text_config_key is None:
        return {**config, **text}
    return {**config, spec.text_config_key: text}


def build_language_model(config: dict[str, Any], spec: ArchSpec, backbone: Backbone, text, device, dtype):
    """(decoder, LM head) with random weights on `device`: the family's own text decoder class and config."""
    import torch

    from compressor.plan import get_module, meta_model

    meta = meta_model(_with_text(config, spec, text), spec, backbone)
    decoder_meta = get_module(meta, spec.decoder)
    cls, text_config = type(decoder_meta), decoder_meta.config
    del meta, decoder_meta
    with torch.device(device):
        decoder = cls._from_config(text_config, dtype=dtype).eval()
        head = torch.nn.Linear(
            text_config.hidden_size, text_config.vocab_size, bias=False, dtype=dtype
        ).eval()
        torch.nn.init.normal_(head.weight, std=0.02)
    return decoder, head


# ---------------------------------------------------------------------------- timing


def decode_seconds(decoder, head, ids, steps: int) -> float:
    """Wall seconds of `steps` greedy single-token steps after a prefill of `ids` (the prefill not timed)."""
    import torch

    cuda = ids.device.type == "cuda"
    with torch.inference_mode():
        out = decoder(input_ids=ids, use_cache=True)
        cache = out.cache
        token = head(out.last_hidden_state[:, -1:]).argmax(-1)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            out = decoder(input_ids=token, cache=cache, use_cache=True)
            cache = out.cache
            token = head(out.last_hidden_state[:, -1:]).argmax(-1)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start


def free_bytes(device) -> int:
    """Memory free for new tensors on `device`: the GPU's free memory, or the machine's MemAvailable."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def placement(weights: list[int], free: int, device: str) -> bool:
    """True: all models stay loaded (interleaved rounds); False: one at a time. Refuses when one cannot fit."""
    biggest = max(weights)
    if biggest > 0.8 * free:
        raise CompressorError(
            f"plan --speed builds the language model on {device} with random weights: {biggest / 2**30:.1f} GiB, "
            f"but only {free / 2**30:.1f} GiB is free there; run it where the model fits (a GPU: set "
            "model.dtype bfloat16 or float16), or leave --speed out (the plan itself needs no memory)"
        )
    return sum(weights) <= 0.5 * free


def advice(rows: list[ProbeRow]) -> str | None:
    """A note when the planned student decodes clearly slower at batch 1 than the other method's."""
    planned = next((r for r in rows if r.label.startswith("planned")), None)
    alt = next((r for r in rows if r.label.startswith("alternative")), None)
    if planned is None or alt is None or 1 not in planned.speedup or 1 not in alt.speedup:
        return None
    if planned.speedup[1] >= SLOWER * alt.speedup[1]:
        return None
    why = (
        "a width student keeps every layer's per-token cost outside the matmuls"
        if planned.label.startswith("planned: width")
        else "this machine's matmuls shrink with the width more than the layers' fixed cost"
    )
    return (
        f"at batch 1 here the {alt.label.removeprefix('alternative: ')} student decodes "
        f"{alt.speedup[1]:.2f}x the original's speed and the planned one {planned.speedup[1]:.2f}x "
        f"(ideal {planned.ideal:.2f}x): {why}; for latency consider prune.method "
        f"{alt.label.split()[1]} (quality at the same ratio differs: compare them with `compressor study`)"
    )


def prefill_seconds(decoder, head, ids) -> float:
    """Wall seconds of one forward over `ids` with the KV cache filled, and the first token's logits."""
    import torch

    cuda = ids.device.type == "cuda"
    with torch.inference_mode():
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = decoder(input_ids=ids, use_cache=True)
        head(out.last_hidden_state[:, -1:]).argmax(-1)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start


def probe(
    config: dict[str, Any],
    spec: ArchSpec,
    backbone: Backbone,
    plan: Plan,
    prune: Prune,
    dtype: str = "auto",
    device: str | None = None,
    rounds: int = 3,
    batches: tuple[int, ...] = BATCHES,
    prompt_tokens: int = 32,
    new_tokens: int = 32,
    prefill_tokens: int = 512,
) -> SpeedProbe:
    import gc

    import torch

    from compressor.models import resolve_dtype

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = resolve_dtype(dtype)
    texts = student_texts(config, spec, backbone, plan, prune)
    counts = [n for _, _, n in texts]
    size = torch.empty((), dtype=torch_dtype).element_size()
    together = placement([n * size for n in counts], free_bytes(device), device)
    vocab = texts[0][1]["vocab_size"]
    gen = torch.Generator().manual_seed(0)
    prompts = {b: torch.randint(4, vocab, (b, prompt_tokens), generator=gen).to(device) for b in batches}
    long_prompt = torch.randint(4, vocab, (1, prefill_tokens), generator=gen).to(device)
    seconds: dict[str, dict[int, list[float]]] = {label: {b: [] for b in batches} for label, _, _ in texts}
    prefill: dict[str, list[float]] = {label: [] for label, _, _ in texts}

    def time_all(models: dict[str, tuple], order_rounds: int) -> None:
        for decoder, head in models.values():
            prefill_seconds(decoder, head, long_prompt)  # warm-up
            for b in batches:
                decode_seconds(decoder, head, prompts[b], 2)
        for r in range(order_rounds):
            labels = list(models) if r % 2 == 0 else list(models)[::-1]
            for label in labels:
                prefill[label].append(prefill_seconds(*models[label], long_prompt))
                for b in batches:
                    seconds[label][b].append(decode_seconds(*models[label], prompts[b], new_tokens))

    if together:
        models = {
            label: build_language_model(config, spec, backbone, text, device, torch_dtype)
            for label, text, _ in texts
        }
        time_all(models, rounds)
        del models
    else:
        for label, text, _ in texts:
            time_all({label: build_language_model(config, spec, backbone, text, device, torch_dtype)}, rounds)
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    tok_s = {
        label: {b: b * new_tokens / statistics.median(s[b]) for b in batches} for label, s in seconds.items()
    }
    base = tok_s["original"]
    pre = {label: prefill_tokens / statistics.median(v) for label, v in prefill.items()}
    rows = []
    for label, text, n in texts:
        kv = text.get("num_key_value_heads") or text["num_attention_heads"]
        rows.append(
            ProbeRow(
                label=label,
                layers=text["num_hidden_layers"],
                heads=text["num_attention_heads"],
                kv_heads=kv,
                mlp=text["intermediate_size"],
                params=n,
                ideal=round(counts[0] / n, 3),
                tokens_per_s={b: round(v, 2) for b, v in tok_s[label].items()},
                speedup={b: round(tok_s[label][b] / base[b], 3) for b in batches},
                prefill_tokens_per_s=round(pre[label], 1),
                prefill_speedup=round(pre[label] / pre["original"], 3),
            )
        )
    method = (
        f"random weights, language model only, {str(torch_dtype).removeprefix('torch.')} on {device}; prompt "
        f"{prompt_tokens} tokens, {new_tokens} greedy decode steps timed (KV cache, prefill excluded), "
        f"batch {' and '.join(map(str, batches))}; prefill: one forward over {prefill_tokens} tokens at batch 1 "
        f"(time to first token); 1 warm-up, median of {rounds} "
        + (
            "interleaved rounds"
            if together
            else "rounds, one model loaded at a time (they do not fit together)"
        )
    )
    return SpeedProbe(
        device=device,
        dtype=str(torch_dtype).removeprefix("torch."),
        method=method,
        rows=rows,
        note=advice(rows),
    )


render = speed_rows  # the plan table's rows (compressor.plan_types)
