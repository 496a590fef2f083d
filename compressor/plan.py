"""Recipe + config → Plan, with no weights loaded.

Parameters are counted exactly by building the model on PyTorch's ``meta`` device (shapes only, no
memory). Layers are uniform, so the pruned count follows from per-layer and per-unit costs read off
that meta model; the legal shapes are the ones transformers' own config class accepts.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from pydantic import BaseModel, ConfigDict

from compressor.arch import ArchSpec, Backbone
from compressor.errors import CompressorError
from compressor.plan_types import MemoryEstimate, RecoveryChoice, SpeedProbe, speed_rows
from compressor.recipe import Prune, Recipe

HIGH_RATIO = 0.5

# prune.target: the widths each deployment's kernels want. name → (MLP width multiple, tensor-parallel degree
# that query and KV head counts must divide by, why). The MLP multiple is combined with prune.round_to (lcm).
SERVING_TARGETS: dict[str, tuple[int, int, str]] = {
    "default": (1, 1, "prune.round_to only"),
    "gpu": (128, 1, "bf16/fp16 GEMMs run at full speed on multiples of 64/128"),
    "gguf": (
        256,
        1,
        "llama.cpp k-quants need row sizes divisible by 256, else a tensor falls back to a bigger type",
    ),
    "vllm": (128, 1, "vLLM's Marlin GPTQ/AWQ kernels want input sizes divisible by 128"),
    "vllm-tp2": (256, 2, "vLLM, tensor parallel 2: 128 per shard, heads and KV heads divisible by 2"),
    "vllm-tp4": (512, 4, "vLLM, tensor parallel 4: 128 per shard, heads and KV heads divisible by 4"),
}


class ParamCounts(BaseModel):
    model_config = ConfigDict(frozen=True)

    backbone_before: int
    backbone_after: int
    total_before: int | None  # None when the family needs remote code to build the whole model
    total_after: int | None
    vision: int | None
    projector: int | None
    per_layer_before: int
    per_layer_after: int


class Plan(BaseModel):
    """Exactly what pruning will do; `dropped_layers` and kept units are filled by scoring."""

    model_config = ConfigDict(frozen=True)

    source: str
    family: str
    model_type: str
    backbone: str
    method: str
    scorer: str
    contiguous: bool = False
    requested_ratio: float
    achieved_ratio: float
    num_layers_before: int
    num_layers_after: int
    drop_count: int
    dropped_layers: list[int] | None  # known before scoring only for the data-free `last` scorer
    protected_layers: list[int]
    targets: list[str]
    heads_before: int
    heads_after: int
    kv_heads_before: int
    kv_heads_after: int
    head_dim: int
    intermediate_before: int
    intermediate_after: int
    round_to: int
    target: str = "default"
    num_samples: int
    params: ParamCounts
    warnings: list[str]
    text_config_changes: dict[str, Any]
    # peak memory per stage and the hardware that fits (compressor.hardware); None for plans made without it
    memory: MemoryEstimate | None = None
    # decode speed of this shape and the other method's, measured here with random weights (`plan --speed`)
    speed: SpeedProbe | None = None
    # what recover.mode auto chose and why (None when the recipe names its mode or has no recovery)
    recovery: RecoveryChoice | None = None

    def table(self) -> str:
        return render_table(self)


# ---------------------------------------------------------------------------- config helpers


def head_dim_of(text: dict[str, Any]) -> int:
    return text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]


def rewrite_text_config(
    text: dict[str, Any],
    backbone: Backbone,
    kept_layers: list[int] | None = None,
    kv_heads: int | None = None,
    intermediate: int | None = None,
) -> dict[str, Any]:
    """The text config after pruning: layer counts, every per-layer list, widths, explicit head_dim."""
    text = copy.deepcopy(text)
    n = text["num_hidden_layers"]
    if kept_layers is not None:
        for key, value in list(text.items()):
            if isinstance(value, list) and len(value) == n and key != "architectures":
                text[key] = [value[i] for i in kept_layers]
        for key in backbone.layer_count_keys:
            if isinstance(text.get(key), int):
                text[key] = sum(1 for i in kept_layers if i < text[key])
        text["num_hidden_layers"] = len(kept_layers)
    if kv_heads is not None:
        head_dim = head_dim_of(text)
        kv = text.get("num_key_value_heads") or text["num_attention_heads"]
        text["num_attention_heads"] = kv_heads * (text["num_attention_heads"] // kv)
        text["num_key_value_heads"] = kv_heads
        text["head_dim"] = head_dim
    if intermediate is not None:
        text["intermediate_size"] = intermediate
    return text


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in after.items() if before.get(k) != v}


# ---------------------------------------------------------------------------- counting on meta


def _config_object(config: dict[str, Any], spec: ArchSpec, backbone: Backbone):
    from transformers import CONFIG_MAPPING

    if spec.remote_code:  # count the language model with the native class of its backbone
        text = {k: v for k, v in config.items() if k not in ("auto_map", "architectures")}
        return CONFIG_MAPPING[backbone.name].from_dict({**text, "model_type": backbone.name})
    return CONFIG_MAPPING[config["model_type"]].from_dict(config)


def meta_model(config: dict[str, Any], spec: ArchSpec, backbone: Backbone):
    """The model with shapes only, on the meta device: free to build, exact to count."""
    import torch
    import transformers

    cfg = _config_object(config, spec, backbone)
    auto = transformers.AutoModelForCausalLM if spec.remote_code else getattr(transformers, spec.auto_class)
    with torch.device("meta"):
        return auto.from_config(cfg)


def get_module(root, path: str):
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            return None
        module = getattr(module, part)
    return module


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def _unique_params(modules) -> list:
    seen: dict[int, Any] = {}
    for m in modules:
        if m is None:
            continue
        items = [m] if not hasattr(m, "parameters") else m.parameters()
        for p in items:
            seen.setdefault(id(p), p)
    return list(seen.values())


def count_params(model, spec: ArchSpec) -> dict[str, int | None]:
    """Backbone (decoder + untied lm_head), vision tower (less any projector inside it), projector, total."""
    decoder = get_module(model, spec.decoder)
    lm_head = get_module(model, "lm_head")
    layers = decoder.layers
    projector_params = _unique_params([get_module(model, p) for p in spec.projector])
    vision_params = _unique_params([get_module(model, p) for p in spec.vision])
    projector_ids = {id(p) for p in projector_params}
    vision = [p for p in vision_params if id(p) not in projector_ids]
    # Bunny keeps its vision tower and projector under the decoder module (`model`): they are not backbone
    multimodal = projector_ids | {id(p) for p in vision}
    backbone = _numel(p for p in _unique_params([decoder, lm_head]) if id(p) not in multimodal)
    # the meta model of a remote-code family is its native backbone only: no tower, no projector to count
    missing = spec.remote_code and not vision_params
    return {
        "backbone": backbone,
        "per_layer": _numel(layers[0].parameters()),
        "vision": None if missing else _numel(vision),
        "projector": None if missing else _numel(projector_params),
        "total": None if missing else _numel(_unique_params([model])),
    }


def _unit_costs(model, spec: ArchSpec, backbone: Backbone, text: dict[str, Any]) -> tuple[int, int]:
    """Parameters per KV group (with its query heads) and per MLP channel, in one layer."""
    layer = get_module(model, spec.decoder).layers[0]
    attn = getattr(layer, backbone.attention)
    mlp = getattr(layer, backbone.mlp)
    kv = text.get("num_key_value_heads") or text["num_attention_heads"]
    per_group = 0
    for name in (backbone.q, backbone.k, backbone.v):
        lin = getattr(attn, name)
        per_group += lin.weight.numel() + (lin.bias.numel() if lin.bias is not None else 0)
    per_group += getattr(attn, backbone.o).weight.numel()
    per_channel = 0
    for name in backbone.mlp_in:
        lin = getattr(mlp, name)
        per_channel += lin.weight.numel() + (lin.bias.numel() if lin.bias is not None else 0)
    per_channel += getattr(mlp, backbone.mlp_out).weight.numel()
    return per_group // kv, per_channel // text["intermediate_size"]


# ---------------------------------------------------------------------------- resolve


def _depth(text, prune: Prune, per_layer: int, backbone_params: int, protected: list[int]) -> int:
    n = text["num_hidden_layers"]
    droppable = n - 1 - len([i for i in protected if i < n])
    best = min(
        range(1, max(droppable, 0) + 1),
        key=lambda k: abs(k * per_layer / backbone_params - prune.ratio),
        default=0,
    )
    if best == 0:
        raise CompressorError(f"no layer of {n} can be dropped (protected: {protected}); use --method width")
    return best


def _snap(value: float, round_to: int, lo: int, hi: int) -> int:
    snapped = int(round(value / round_to)) * round_to
    return max(lo, min(hi, snapped))


def text_config_error(text: dict[str, Any], backbone: Backbone) -> str | None:
    """Why transformers' own config class would refuse this text config (None when it loads).

    The config class is the source of truth for legal shapes: e.g. LlamaConfig and Gemma3TextConfig
    in 5.24 refuse a head count that does not divide hidden_size, even with head_dim written out.
    """
    from transformers import CONFIG_MAPPING

    model_type = text.get("model_type") or backbone.name
    cls = CONFIG_MAPPING[model_type if model_type in CONFIG_MAPPING else backbone.name]
    try:
        cls.from_dict({k: v for k, v in text.items() if k not in ("auto_map", "architectures")})
    except Exception as err:  # transformers raises several types from its validators
        return str(getattr(err, "__cause__", None) or err).strip()
    return None


def _width(
    text, prune: Prune, targets: list[str], per_group: int, per_channel: int, backbone_params: int, backbone
) -> tuple[int, int, list[int]]:
    """Kept KV groups and MLP width.

    Every legal KV-group count is tried (legal = transformers' config class accepts it); the MLP then
    fills the remainder to the target, snapped to `round_to`. The pick is the candidate closest to
    the requested ratio (to 0.1 %), then the one whose attention and MLP fractions are most alike, as
    in the seed's single per-layer ratio.
    """
    n = text["num_hidden_layers"]
    kv = text.get("num_key_value_heads") or text["num_attention_heads"]
    inter = text["intermediate_size"]
    round_to = prune.round_to
    if "mlp" in targets and inter < round_to:
        raise CompressorError(
            f"round_to {round_to} is larger than intermediate_size {inter}; pass --round-to {max(1, inter // 8)}"
        )
    target = prune.ratio * backbone_params / n  # parameters to remove per layer
    legal = [kv]
    if "heads" in targets:
        tp = SERVING_TARGETS[prune.target][1]
        per_kv = text["num_attention_heads"] // kv
        legal = [
            k
            for k in range(1, kv + 1)
            if text_config_error(rewrite_text_config(text, backbone, kv_heads=k), backbone) is None
            and k % tp == 0
            and (k * per_kv) % tp == 0
        ] or [kv]
    candidates = []
    for kv_keep in legal:
        removed_attn = (kv - kv_keep) * per_group
        inter_keep = inter
        if "mlp" in targets:
            need = max(target - removed_attn, 0.0)
            inter_keep = _snap(inter - need / per_channel, round_to, min(round_to, inter), inter)
        removed = removed_attn + (inter - inter_keep) * per_channel
        if removed == 0:
            continue
        attn_frac = 1 - kv_keep / kv if "heads" in targets else None
        mlp_frac = 1 - inter_keep / inter if "mlp" in targets else None
        balance = abs(attn_frac - mlp_frac) if attn_frac is not None and mlp_frac is not None else 0.0
        candidates.append((round(abs(removed - target) / target, 3), balance, kv_keep, inter_keep))
    if not candidates:
        raise CompressorError(
            f"ratio {prune.ratio} removes less than one legal unit (a KV group or {round_to} MLP channels); "
            "raise --ratio or lower --round-to"
        )
    _, _, kv_keep, inter_keep = min(candidates)
    return kv_keep, inter_keep, legal


def reachable_ratios(
    text,
    prune: Prune,
    targets: list[str],
    legal: list[int],
    costs: tuple[int, int, int],
    backbone_params: int,
) -> list[tuple[float, str]]:
    """Every ratio a legal shape reaches, ascending, each with the shape in words.

    depth: 1 … `costs[2]` whole layers (costs = per_layer, -, droppable); width: every legal KV-group count
    with every MLP width that is `round_to`'s multiple or the full width (costs = per_group, per_channel, -).
    """
    n = text["num_hidden_layers"]
    if prune.method == "depth":
        per_layer, _, droppable = costs
        return [
            (k * per_layer / backbone_params, f"{k} layer{'s' * (k > 1)}") for k in range(1, droppable + 1)
        ]
    per_group, per_channel, _ = costs
    kv = text.get("num_key_value_heads") or text["num_attention_heads"]
    inter, step = text["intermediate_size"], prune.round_to
    widths = sorted({inter, *range(step, inter + 1, step)}) if "mlp" in targets else [inter]
    found: dict[float, str] = {}
    for kv_keep in legal if "heads" in targets else [kv]:
        for width in widths:
            removed = (kv - kv_keep) * per_group + (inter - width) * per_channel
            if removed > 0:
                ratio = round(n * removed / backbone_params, 6)
                found.setdefault(ratio, f"KV groups {kv} -> {kv_keep}, MLP {inter} -> {width}")
    return sorted(found.items())


def _check_reachable(prune: Prune, reachable: list[tuple[float, str]]) -> None:
    """Refuse a ratio outside what legal shapes reach: below half the smallest cut, or beyond the largest by
    more than half a step (the nearest legal shape is taken inside that range)."""
    if not reachable:
        return
    ratios = [r for r, _ in reachable]
    top_gap = ratios[-1] - ratios[-2] if len(ratios) > 1 else ratios[-1]
    below = prune.ratio < ratios[0] / 2
    above = prune.ratio > ratios[-1] + max(top_gap / 2, 0.02)
    if not (below or above):
        return
    nearest = sorted(reachable, key=lambda item: abs(item[0] - prune.ratio))[:3]
    shown = ", ".join(f"{r:.2%} ({shape})" for r, shape in sorted(nearest))
    unit = (
        "whole layers"
        if prune.method == "depth"
        else f"whole KV groups and MLP widths in steps of {prune.round_to}"
    )
    limit = f"the smallest cut is {ratios[0]:.2%}" if below else f"the largest is {ratios[-1]:.2%}"
    finer = ", or a smaller --round-to for finer MLP steps" if below and prune.method == "width" else ""
    raise CompressorError(
        f"ratio {prune.ratio:g} ({prune.ratio:.2%}) cannot be reached with {unit}: {limit}. Nearest reachable "
        f"ratios: {shown}; pass one of them as --ratio (recipe prune.ratio){finer}"
    )


def resolve(
    config: dict[str, Any],
    spec: ArchSpec,
    backbone: Backbone,
    prune: Prune,
    source: str = "",
    recipe: Recipe | None = None,
    device: tuple[str, int | None] | None = None,
) -> Plan:
    """Turn a recipe's prune section into exact widths, layer counts and parameter counts.

    With the whole `recipe`, the memory estimate covers recovery and evaluation too (else scoring only).
    `device` (name, bytes): what `recover.mode: auto` chooses for (default: this machine's, `device_capacity`).
    """
    text = spec.text_config(config)
    warnings: list[str] = []
    targets: list[str] = []
    quants = _gguf_quants(recipe)
    kquants = [q for q in quants if GGUF_ROW_BLOCKS[q][0] == 256]
    if prune.method == "width" and kquants and prune.target == "default":
        # the export asks for k-quants: widths llama.cpp can store in them, unless no such width fits the ratio
        try:
            chosen = resolve(
                config, spec, backbone, prune.model_copy(update={"target": "gguf"}), source, recipe
            )
        except CompressorError:
            warnings.append(
                f"prune.target stays default: export.gguf.quants has {', '.join(kquants)}, but MLP widths in "
                f"multiples of 256 (prune.target gguf) cannot reach ratio {prune.ratio:g}; the tensors below fall back"
            )
        else:
            note = (
                f"prune.target gguf chosen because export.gguf.quants has {', '.join(kquants)}: MLP widths in "
                "multiples of 256, which llama.cpp's k-quants store without falling back (set prune.target to "
                "choose another)"
            )
            return chosen.model_copy(update={"warnings": [note, *chosen.warnings]})
    n = text["num_hidden_layers"]
    protected = spec.protected_layers(config)
    kv = text.get("num_key_value_heads") or text["num_attention_heads"]

    if prune.method == "width" and prune.target != "default":
        multiple, _, _ = SERVING_TARGETS[prune.target]
        prune = prune.model_copy(update={"round_to": math.lcm(prune.round_to, multiple)})
    if prune.method == "width":
        targets = list(prune.targets or ("heads", "mlp"))
        if "heads" in targets and backbone.head_pruning_refusal:
            if prune.targets:  # asked for explicitly
                raise CompressorError(backbone.head_pruning_refusal)
            targets.remove("heads")
            warnings.append("heads not pruned: " + backbone.head_pruning_refusal)

    model = meta_model(config, spec, backbone)
    before = count_params(model, spec)
    kept_layers = None
    kv_keep, inter_keep = kv, text["intermediate_size"]
    drop_count = 0
    per_group = per_channel = 0
    if prune.method == "depth":
        drop_count = _depth(text, prune, before["per_layer"], before["backbone"], protected)
        kept_layers = list(range(n - drop_count))  # counting only: scoring picks the real ones
        droppable = n - 1 - len([i for i in protected if i < n])
        costs = (before["per_layer"], 0, droppable)
        _check_reachable(prune, reachable_ratios(text, prune, targets, [], costs, before["backbone"]))
    else:
        per_group, per_channel = _unit_costs(model, spec, backbone, text)
        kv_keep, inter_keep, legal = _width(
            text, prune, targets, per_group, per_channel, before["backbone"], backbone
        )
        costs = (per_group, per_channel, 0)
        _check_reachable(prune, reachable_ratios(text, prune, targets, legal, costs, before["backbone"]))
        if "heads" in targets and len(legal) < kv and kv_keep == kv:
            warnings.append(
                f"attention heads kept at {text['num_attention_heads']}: the {backbone.name} config accepts only "
                f"{', '.join(str(k * (text['num_attention_heads'] // kv)) for k in legal)} query heads here, and none "
                "of the smaller counts fits this ratio; the MLP carries the whole cut"
            )
    del model

    new_text = rewrite_text_config(
        text,
        backbone,
        kept_layers=kept_layers,
        kv_heads=kv_keep if prune.method == "width" and "heads" in targets else None,
        intermediate=inter_keep if prune.method == "width" and "mlp" in targets else None,
    )
    error = text_config_error(new_text, backbone)
    if error:  # the search only proposes legal shapes; this guards the rewrite itself
        raise CompressorError(f"the pruned config would not load in transformers: {error}")
    # layers are uniform, so the pruned counts follow from the per-layer cut (the tests check them
    # against a model built from the pruned config)
    removed_per_layer = (kv - kv_keep) * per_group + (text["intermediate_size"] - inter_keep) * per_channel
    removed = drop_count * before["per_layer"] + n * removed_per_layer - drop_count * removed_per_layer
    after = {
        "backbone": before["backbone"] - removed,
        "total": None if before["total"] is None else before["total"] - removed,
        "per_layer": before["per_layer"] - removed_per_layer,
    }
    achieved = 1 - after["backbone"] / before["backbone"]
    if prune.ratio > HIGH_RATIO:
        warnings.append(
            f"ratio {prune.ratio:.0%} is above {HIGH_RATIO:.0%}: the seed paper found no recovery recipe that "
            "restores quality well beyond ~60%, and on real weights our study (studies/seed-miniature.yaml, "
            "SmolLM2-135M LLaVA) kept 0% of the easy-VQA scores at 45% and 60% without recovery; expect a "
            "large drop"
        )
    if abs(achieved - prune.ratio) > 0.02:
        warnings.append(
            f"achieved ratio {achieved:.1%} differs from the requested {prune.ratio:.1%}: the nearest legal "
            f"shape ({'whole layers' if prune.method == 'depth' else 'whole KV groups, MLP multiples of round_to'})"
        )
    if quants:  # the recipe exports to GGUF: exactly which layer tensors will fall back, per quant
        warnings += gguf_fallback_warnings(
            text["hidden_size"],
            new_text["num_attention_heads"] * head_dim_of(text),
            new_text["intermediate_size"],
            quants,
        )
    elif prune.method == "width" and prune.target == "gguf":
        warnings += gguf_row_warnings(
            text["hidden_size"], new_text["num_attention_heads"] * head_dim_of(text)
        )
    scorer = prune.scorer_name
    dropped = None
    if prune.method == "depth" and scorer == "last":
        dropped = list(range(n - 1 - drop_count, n - 1))
    plan = Plan(
        source=source,
        family=spec.family,
        model_type=config["model_type"],
        backbone=backbone.name,
        method=prune.method,
        scorer=scorer,
        contiguous=prune.contiguous,
        requested_ratio=prune.ratio,
        achieved_ratio=round(achieved, 6),
        num_layers_before=n,
        num_layers_after=n - drop_count,
        drop_count=drop_count,
        dropped_layers=dropped,
        protected_layers=protected,
        targets=targets,
        heads_before=text["num_attention_heads"],
        heads_after=new_text["num_attention_heads"],
        kv_heads_before=kv,
        kv_heads_after=new_text.get("num_key_value_heads") or new_text["num_attention_heads"],
        head_dim=head_dim_of(text),
        intermediate_before=text["intermediate_size"],
        intermediate_after=new_text["intermediate_size"],
        round_to=prune.round_to,
        target=prune.target,
        num_samples=0 if scorer in ("last", "magnitude") else prune.num_samples,
        params=ParamCounts(
            backbone_before=before["backbone"],
            backbone_after=after["backbone"],
            total_before=before["total"],
            total_after=after["total"],
            vision=before["vision"],
            projector=before["projector"],
            per_layer_before=before["per_layer"],
            per_layer_after=after["per_layer"],
        ),
        warnings=warnings,
        text_config_changes=changed_keys(text, new_text)
        if prune.method == "width"
        else {"num_hidden_layers": n - drop_count},
    )
    from compressor import hardware

    choice = None
    if recipe is not None and recipe.recover is not None and recipe.recover.mode == "auto":
        choice = hardware.choose_recovery(prune.ratio, plan, config, spec, backbone, recipe.recover, device)
        recipe = recipe.model_copy(
            update={"recover": recipe.recover.model_copy(update={"mode": choice.mode})}
        )
    memory = hardware.estimate(plan, config, spec, backbone, recipe)
    return plan.model_copy(update={"memory": memory, "recovery": choice})


# ---------------------------------------------------------------------------- display


# quant (recipe export.gguf.quants) -> (the row length its blocks need, the type it asks for, the type llama.cpp
# stores a tensor in when its rows are off that block; F16 for any off 32). research/export-gguf.md
GGUF_ROW_BLOCKS: dict[str, tuple[int, str, str]] = {
    "f32": (1, "F32", "F32"),
    "f16": (1, "F16", "F16"),
    "bf16": (1, "BF16", "BF16"),
    "q8_0": (32, "Q8_0", "F16"),
    "q4_k_m": (256, "Q4_K", "Q5_0"),
    "q5_k_m": (256, "Q5_K", "Q5_1"),
    "q6_k": (256, "Q6_K", "Q8_0"),
}


def _gguf_quants(recipe: Recipe | None) -> tuple[str, ...]:
    gguf = recipe.export.gguf if recipe is not None and recipe.export is not None else None
    return tuple(gguf.quants) if gguf is not None else ()


def gguf_fallback_warnings(hidden: int, query_width: int, intermediate: int, quants) -> list[str]:
    """Per quant, the layer tensors whose rows (their input width) do not fit its blocks, and the type llama.cpp
    stores them in instead: bigger files and slower kernels than the quant promises."""
    rows = (
        ("attn_q, attn_k, attn_v, ffn_gate, ffn_up", hidden, "pruning never changes the hidden size"),
        (
            "attn_output",
            query_width,
            "a head count whose query heads x head_dim is a multiple of {block} avoids it",
        ),
        ("ffn_down", intermediate, "prune.target gguf makes the MLP width a multiple of 256"),
    )
    out = []
    for quant in quants:
        block, wanted, instead = GGUF_ROW_BLOCKS[quant]
        for tensors, width, fix in rows:
            if width % block:
                got = "F16" if width % 32 else instead
                out.append(
                    f"export {quant}: {tensors} in every layer read rows of {width}, not a multiple of {block}: "
                    f"llama.cpp stores them as {got}, not {wanted} ({fix.format(block=block)})"
                )
    return out


def gguf_row_warnings(hidden: int, query_width: int, block: int = 256) -> list[str]:
    """What `prune.target: gguf` cannot align: rows of the hidden size (never pruned) and of the attention output
    projection (query heads x head_dim), which llama.cpp's k-quants store in a bigger type when not divisible by
    256 (measured with llama.cpp in benchmarks/serving.py)."""
    out = []
    if hidden % block:
        out.append(
            f"gguf: the hidden size {hidden} is not a multiple of {block}, so llama.cpp's k-quants store every "
            "projection that reads it (q, k, v, gate, up) in a bigger type; pruning never changes the hidden size"
        )
    if query_width % block and query_width != hidden:
        out.append(
            f"gguf: the attention output projection reads rows of {query_width} (query heads x head_dim), not a "
            f"multiple of {block}: llama.cpp keeps it in a bigger type; a ratio that keeps a head count whose "
            f"width is a multiple of {block} avoids it"
        )
    return out


def _fmt(n: int | None) -> str:
    if n is None:
        return "n/a (remote code)"
    return f"{n / 1e9:.3f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def render_table(plan: Plan) -> str:
    p = plan.params
    rows = [
        ("model", f"{plan.source or plan.model_type} ({plan.family}, {plan.backbone} backbone)"),
        (
            "method",
            f"{plan.method}, scorer {plan.scorer}"
            + (f", {plan.num_samples} samples" if plan.num_samples else ""),
        ),
        ("ratio requested / achieved", f"{plan.requested_ratio:.1%} / {plan.achieved_ratio:.1%}"),
    ]
    if plan.method == "depth":
        layers = "chosen by scoring" if plan.dropped_layers is None else str(plan.dropped_layers)
        rows += [
            (
                "layers",
                f"{plan.num_layers_before} -> {plan.num_layers_after} (drop {plan.drop_count}: {layers})",
            ),
        ]
        if plan.protected_layers:
            rows.append(("protected layers", str(plan.protected_layers)))
    else:
        rows += [
            ("targets", ", ".join(plan.targets)),
            ("query heads", f"{plan.heads_before} -> {plan.heads_after} (head_dim {plan.head_dim})"),
            ("KV groups", f"{plan.kv_heads_before} -> {plan.kv_heads_after}"),
            (
                "MLP intermediate",
                f"{plan.intermediate_before} -> {plan.intermediate_after} (multiple of {plan.round_to})",
            ),
        ]
        if plan.target != "default":
            rows.append(("serving target", f"{plan.target}: {SERVING_TARGETS[plan.target][2]}"))
    rows += [
        ("params / layer", f"{_fmt(p.per_layer_before)} -> {_fmt(p.per_layer_after)}"),
        ("language backbone", f"{_fmt(p.backbone_before)} -> {_fmt(p.backbone_after)}"),
        ("whole model", f"{_fmt(p.total_before)} -> {_fmt(p.total_after)}"),
    ]
    if plan.recovery is not None:
        rows.append(("recovery (auto)", f"{plan.recovery.mode}: {plan.recovery.reason}"))
    if plan.memory is not None:
        from compressor.hardware import render

        rows += render(plan.memory)
    if plan.speed is not None:
        rows += speed_rows(plan.speed)
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"warning: {w}" for w in plan.warnings]
    if plan.speed is not None and plan.speed.note:
        lines.append(f"note: {plan.speed.note}")
    return "\n".join(lines)
