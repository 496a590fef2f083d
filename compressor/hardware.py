"""What hardware a run needs, from config.json alone: peak memory per stage, the smallest GPU, a Jobs flavour.

The estimate counts tensor bytes: what `torch.cuda.max_memory_allocated` reports on a GPU, and what PyTorch's
allocator hands out on the CPU (checked against measured peaks by `tests/test_memory_estimate.py` and
`benchmarks/memory_estimate.py`). A GPU needs more than that: the CUDA context and cuBLAS workspaces
(`CUDA_CONTEXT_BYTES`) and the caching allocator's fragmentation (`ALLOCATOR_MARGIN`); a machine's RAM also
holds Python and the libraries (`PROCESS_BYTES`). Those are added only when a device is chosen.

Each stage is modelled as the code runs it (the modules named in each function):

- scoring (`compressor.prune.importance`): the unpruned model in the load dtype, one calibration sample at a time
  of up to `prune.calibration.max_length` tokens. taylor: only the scored weights take gradients, decoder layers
  run under activation checkpointing (each layer's input kept, its insides recomputed), each weight's gradient
  folded away as soon as it exists; the loss keeps the fp32 log-softmax of the (seq x vocab) logits, and the
  backward's start adds its incoming and outgoing gradients (12 bytes per logit). block_influence / angular /
  activation: a no-grad forward (the LM head's logits over every position included) with each layer's input and
  output copied to fp32 by the hooks. magnitude / last: the weights only.
- recovery (`compressor.recover`): the pruned student (trainable weights as fp32 master copies, frozen ones in
  the compute dtype), the frozen teacher in its dtype (only when a loss term needs it), two fp32 AdamW states per
  trainable weight, and the larger of the backward's start (activations at `per_device_train_batch_size` x
  `max_length` — with activation checkpointing each layer's input, and one layer recomputed — plus the LM head's
  loss) and its end (every fp32 gradient). The loss goes through TRL's fused LM head, which never builds the
  whole logits but allocates one tile buffer of min(tokens, 4096) x 32768 entries whatever the vocabulary
  (268 MB in bf16); a logit term, or a family whose backbone can't take the images, builds the whole
  (batch, seq, vocab) logits of both models instead.
- evaluation (`compressor.evaluate`): the original and the compressed model side by side in the eval dtype,
  greedy generation with a KV cache, and the whole logits of one sequence for perplexity / teacher agreement.

Not modelled: the vision tower's activations (frozen, no-grad, small next to the language model's), the data
loader's tensors, accelerate offload, multi-process sharding (FSDP / ZeRO) and custom LoRA target regexes (counted
as the default: every attention and MLP projection).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.plan_types import MemoryEstimate, RecoveryChoice, StageMemory

if TYPE_CHECKING:
    from compressor.arch import ArchSpec, Backbone
    from compressor.plan import Plan
    from compressor.recipe import Recipe

GB = 1e9

# Fixed costs of a device beyond the tensors the estimate counts.
CUDA_CONTEXT_BYTES = int(0.6 * GB)  # CUDA context + cuBLAS/cuDNN workspaces of one process, CUDA 12
ALLOCATOR_MARGIN = 0.10  # the caching allocator's rounding and fragmentation over the tensor peak
PROCESS_BYTES = int(1.5 * GB)  # resident Python + torch + transformers + trl before any model (CPU RAM)
# Above this many parameters a CPU flavour is never suggested: training there takes hours per hundred steps.
CPU_MAX_PARAMS = 500_000_000

# name -> memory in GB as sold (what the Hub's hardware tables quote).
GPUS: dict[str, int] = {
    "T4": 16,
    "L4": 24,
    "A10G": 24,
    "RTX 4090": 24,
    "A100 40GB": 40,
    "L40S": 48,
    "A100 80GB": 80,
    "H100": 80,
    "RTX PRO 6000": 96,
    "H200": 141,
    "B200": 192,
}


@dataclass(frozen=True)
class Flavor:
    """A Hugging Face Jobs hardware flavour (names as `huggingface_hub.JobHardware` 2.4.0 spells them)."""

    name: str
    gpu: str | None  # a key of GPUS; None for a CPU flavour
    count: int  # GPUs
    ram_gb: int | None  # CPU RAM; None where the Hub's public tables don't say
    vcpu: int | None

    @property
    def gpu_gb(self) -> int:
        return GPUS[self.gpu] * self.count if self.gpu else 0


# From the Hub's Spaces/Jobs hardware tables (huggingface.co/docs/hub/spaces-gpus, `hf jobs hardware`); the live
# list is `huggingface_hub.list_jobs_hardware()`. cpu-performance and cpu-xl are in the 2.4.0 enum but their RAM
# is not in the tables we could read, so they are listed without it and never suggested.
FLAVORS: tuple[Flavor, ...] = (
    Flavor("cpu-basic", None, 0, 16, 2),
    Flavor("cpu-upgrade", None, 0, 32, 8),
    Flavor("cpu-performance", None, 0, None, None),
    Flavor("cpu-xl", None, 0, None, None),
    Flavor("t4-small", "T4", 1, 15, 4),
    Flavor("t4-medium", "T4", 1, 30, 8),
    Flavor("l4x1", "L4", 1, 30, 8),
    Flavor("a10g-small", "A10G", 1, 15, 4),
    Flavor("a10g-large", "A10G", 1, 46, 12),
    Flavor("l40sx1", "L40S", 1, 62, 8),
    Flavor("a10g-largex2", "A10G", 2, 92, 24),
    Flavor("a100-large", "A100 80GB", 1, 142, 12),
    Flavor("rtx-pro-6000", "RTX PRO 6000", 1, None, None),
    Flavor("l4x4", "L4", 4, 186, 48),
    Flavor("a10g-largex4", "A10G", 4, 184, 48),
    Flavor("h200", "H200", 1, None, None),
    Flavor("l40sx4", "L40S", 4, 382, 48),
    Flavor("rtx-pro-6000x2", "RTX PRO 6000", 2, None, None),
    Flavor("a100x4", "A100 80GB", 4, 568, 48),
    Flavor("h200x2", "H200", 2, None, None),
    Flavor("l40sx8", "L40S", 8, 1534, 192),
    Flavor("rtx-pro-6000x4", "RTX PRO 6000", 4, None, None),
    Flavor("a100x8", "A100 80GB", 8, 1136, 96),
    Flavor("h200x4", "H200", 4, None, None),
    Flavor("rtx-pro-6000x8", "RTX PRO 6000", 8, None, None),
    Flavor("h200x8", "H200", 8, None, None),
)
FLAVOR_BY_NAME = {f.name: f for f in FLAVORS}


# recover.mode auto: the projector alone up to this ratio (the seed's guide: projector-only up to ~15 %, full SFT +
# distillation from 15-30 %; our study: projector 93.5 % retained at 15 % depth, 33 % at 30 %).
PROJECTOR_MAX_RATIO = 0.15


def device_capacity() -> tuple[str, int | None]:
    """(this machine's training device, its memory in bytes): the first GPU's total memory, else the CPU RAM
    available now (None where it cannot be read)."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"cuda:0 ({props.name})", int(props.total_memory)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return "cpu", int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return "cpu", os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return "cpu", None


def jobs_device() -> tuple[str, int]:
    """The device `recover.mode: auto` chooses for when the run goes to Hugging Face Jobs on a flavour still to be
    picked (`--on-jobs auto`): the biggest one-GPU flavour. Full training is chosen when it fits there, and the
    smallest flavour that fits it is then suggested; the Job, on that flavour, makes the same choice for its GPU.
    (Not the multi-GPU flavours: a run trains its student on one GPU.)"""
    best = max((f for f in FLAVORS if f.gpu and f.count == 1), key=lambda f: GPUS[f.gpu])
    return f"the {best.name} Jobs flavour", int(GPUS[best.gpu] * GB)


def choose_recovery(
    ratio: float,
    plan: Plan,
    config: dict[str, Any],
    spec: ArchSpec,
    backbone: Backbone,
    recover,
    device: tuple[str, int | None] | None = None,
) -> RecoveryChoice:
    """`recover.mode: auto` → projector up to PROJECTOR_MAX_RATIO, full above it, lora when full training's
    estimated peak (this recipe's batch, length, dtypes and teacher) does not fit `device` (default: this
    machine's, `device_capacity`)."""
    if ratio <= PROJECTOR_MAX_RATIO:
        return RecoveryChoice(
            mode="projector",
            reason=f"ratio {ratio:.0%} <= {PROJECTOR_MAX_RATIO:.0%}: the projector alone re-aligns the pruned model "
            "(seed: projector-only up to ~15 %; our study: 93.5 % retained at 15 % depth)",
        )
    name, capacity = device or device_capacity()
    on_gpu = not name.startswith("cpu")
    settings = RecoverySettings.of(recover.model_copy(update={"mode": "full"}), spec)
    peak, _ = recovery(Shape.of(plan, config, spec, backbone), settings, "gpu" if on_gpu else "cpu")
    need = gpu_need(peak) if on_gpu else cpu_need(peak)
    above = f"ratio {ratio:.0%} > {PROJECTOR_MAX_RATIO:.0%}"
    if capacity is None:
        return RecoveryChoice(
            mode="full",
            reason=f"{above}: full training (the memory of {name} could not be read; set recover.mode to choose)",
            device=name,
            need_bytes=need,
        )
    if need > capacity:
        return RecoveryChoice(
            mode="lora",
            reason=f"{above}, but full training needs {gb(need)} and {name} has {gb(capacity)}: LoRA instead "
            "(recover.mode full on a bigger device recovers more)",
            device=name,
            need_bytes=need,
            capacity_bytes=capacity,
        )
    return RecoveryChoice(
        mode="full",
        reason=f"{above}: full training, which needs {gb(need)} of {name}'s {gb(capacity)} (LoRA and the projector "
        "alone recover less above 15 %: README, Results)",
        device=name,
        need_bytes=need,
        capacity_bytes=capacity,
    )


# ---------------------------------------------------------------------------- the shape the estimate reads


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a model: widths before/after pruning and parameter counts."""

    hidden: int
    vocab: int
    layers_before: int
    layers_after: int
    heads_before: int
    heads_after: int
    kv_before: int
    kv_after: int
    head_dim: int
    inter_before: int
    inter_after: int
    total_before: int  # whole model
    total_after: int
    vision: int  # vision tower, less any projector inside it
    projector: int
    lm_head: int  # parameters of the LM head (0 when tied to the embeddings)
    mlp_inputs: int  # input projections of the MLP (2 for gated MLPs, 1 for Phi's fc1)

    @classmethod
    def of(cls, plan: Plan, config: dict[str, Any], spec: ArchSpec, backbone: Backbone) -> Shape:
        text = spec.text_config(config)
        p = plan.params
        vision = p.vision or 0
        projector = p.projector or 0
        total_before = (
            p.total_before if p.total_before is not None else p.backbone_before + vision + projector
        )
        total_after = p.total_after if p.total_after is not None else p.backbone_after + vision + projector
        tied = bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
        return cls(
            hidden=text["hidden_size"],
            vocab=text["vocab_size"],
            layers_before=plan.num_layers_before,
            layers_after=plan.num_layers_after,
            heads_before=plan.heads_before,
            heads_after=plan.heads_after,
            kv_before=plan.kv_heads_before,
            kv_after=plan.kv_heads_after,
            head_dim=plan.head_dim,
            inter_before=plan.intermediate_before,
            inter_after=plan.intermediate_after,
            total_before=total_before,
            total_after=total_after,
            vision=vision,
            projector=projector,
            lm_head=0 if tied else text["vocab_size"] * text["hidden_size"],
            mlp_inputs=len(backbone.mlp_in),
        )

    def lora_params(self, r: int) -> int:
        """Adapter parameters with rank r on every attention and MLP projection of every student layer."""
        h, q, kv, i = (
            self.hidden,
            self.heads_after * self.head_dim,
            self.kv_after * self.head_dim,
            self.inter_after,
        )
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + self.mlp_inputs * (h + i) + (i + h)
        return r * per_layer * self.layers_after


# ---------------------------------------------------------------------------- activations, per token


# Taylor scoring runs a decoder layer without activation checkpointing while the saved activations of the
# layers run so fit in this share of the weights' bytes (compressor/prune/importance/taylor.py; the estimate
# below models the same budget).
UNCHECKED_SHARE = 0.3


def unchecked_layers(
    num_layers: int,
    weight_bytes: int,
    tokens: int,
    per_token_layer_bytes: int,
    share: float = UNCHECKED_SHARE,
) -> int:
    """How many decoder layers keep their activations (no recomputation) within the budget."""
    per_layer = max(1, tokens * per_token_layer_bytes)
    return max(0, min(num_layers, int(share * weight_bytes // per_layer)))


def layer_saved(h: int, q: int, kv: int, i: int, mlp_inputs: int, b: int) -> int:
    """Bytes one decoder layer keeps for its backward, per token (read off the autograd graph of a Llama layer):
    each RMSNorm its input and normalised input in fp32 and its output in the compute dtype, the rotated q and k,
    v, the attention output, and the MLP's input projections, activation and product."""
    norms = 2 * h * (8 + b)
    return norms + (2 * q + 2 * kv + (mlp_inputs + 2) * i) * b


def _layer_transient(h: int, q: int, kv: int, i: int, mlp_inputs: int) -> int:
    """Elements alive at once inside one decoder layer's no-grad forward, per token (the larger of the
    attention block's q/k/v with their rotated copies and output, and the MLP's projections and product)."""
    attention = 2 * q + 3 * kv + q
    mlp = (mlp_inputs + 1) * i
    return 2 * h + max(attention, mlp)


def _bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def _dtype_on(requested: str, device: str) -> str:
    """What "auto" means on each device (compressor.models.resolve_dtype, recover.trainable.compute_dtype)."""
    if requested != "auto":
        return requested
    return "bfloat16" if device == "gpu" else "float32"


# ---------------------------------------------------------------------------- the stages


def scoring(
    shape: Shape, plan: Plan, recipe_dtype: str, max_length: int, chunked: bool, device: str
) -> tuple[int, dict]:
    """Peak bytes of `prune.apply` on the unpruned model: (peak, parts). `chunked`: Taylor's loss goes a chunk of
    positions at a time (`prune.importance.lm_loss`; every family whose code is in transformers)."""
    dtype = _dtype_on(recipe_dtype, device)
    b = _bytes(dtype)
    s = shape
    h, q, kv, i = s.hidden, s.heads_before * s.head_dim, s.kv_before * s.head_dim, s.inter_before
    weights = s.total_before * b
    parts: dict[str, int] = {"weights": weights}
    seq = max_length
    if plan.scorer == "taylor":
        saved = layer_saved(h, q, kv, i, s.mlp_inputs, b)
        # the first layers keep their activations while they fit the budget; the last ones are checkpointed, and
        # the backward reaches them first, while the first ones' activations are still held
        free = unchecked_layers(s.layers_before, weights, seq, saved) if chunked else 0
        checkpoints = (s.layers_before - free) * seq * h * b  # each checkpointed layer's input
        # the loss, at the start of the backward: the fp32 log-softmax kept for it, its incoming gradient and the
        # gradient of the logits (the logits themselves and their fp32 copy are freed by then; in the forward the
        # two of them with the log-softmax cost at most as much); chunked, that is one chunk's worth, recomputed
        # in the backward, plus the final hidden state the chunks read
        if chunked:
            from compressor.prune.importance.lm_loss import chunk_positions

            logits = min(seq, chunk_positions(s.vocab)) * s.vocab * 12 + seq * h * b
        else:
            logits = seq * s.vocab * 12
        # one layer recomputed (non-reentrant checkpointing) with its saved tensors, plus the gradient flowing in
        # and out of it; the weight gradients are folded away one by one (the largest is an MLP projection)
        # nothing recomputed when every layer keeps its activations: the gradient flowing through, and the weight
        # gradients
        recomputed = 0 if free == s.layers_before else saved
        layer = seq * (recomputed + 2 * h * b) + 3 * h * i * b
        parts |= {
            "unchecked layers": free * seq * saved,
            "checkpoints": checkpoints,
            "loss / recompute": max(logits, layer),
        }
    elif plan.scorer in ("block_influence", "angular", "activation"):
        hooks = 2 * seq * h * 4  # a layer's input and output as fp32 [tokens, hidden] copies
        inside = seq * _layer_transient(h, q, kv, i, s.mlp_inputs) * b
        # the LM head is bypassed (`calibration_pass`) except for remote-code families, whose forward ends with it
        logits = 0 if chunked else seq * s.vocab * b
        parts |= {"hooks": hooks, "forward": max(inside, logits) + 2 * seq * h * b}
    elif plan.scorer == "magnitude":
        parts["scores"] = 2 * h * i * 4  # w**2 of one projection in fp32
    return sum(parts.values()), parts


@dataclass(frozen=True)
class RecoverySettings:
    """The parts of `recover:` (and TRL's defaults, `recover.args.defaults`) that set its memory."""

    mode: str
    batch: int
    seq: int
    checkpointing: bool
    student_dtype: str
    teacher_dtype: str
    uses_teacher: bool
    needs_logits: bool
    lora_r: int

    @classmethod
    def of(cls, recover, spec: ArchSpec) -> RecoverySettings:
        from compressor.recover.args import BATCH
        from compressor.recover.losses import LOSSES

        sft = dict(recover.sft)
        checkpointing = sft.get("activation_checkpointing", sft.get("gradient_checkpointing", True))
        weights = {n: w for n, w in recover.loss.items() if w > 0}
        logit_terms = any(LOSSES.get(n).uses_logits for n in weights)
        return cls(
            mode=recover.mode,
            batch=int(sft.get("per_device_train_batch_size", BATCH["per_device_train_batch_size"])),
            seq=int(sft.get("max_length") or 2048),
            checkpointing=bool(checkpointing),
            student_dtype=recover.student_dtype,
            teacher_dtype=recover.teacher_dtype,
            uses_teacher=recover.uses_teacher,
            # a logit term, or a family whose backbone can't take the images (both models run whole)
            needs_logits=logit_terms or (recover.uses_teacher and not spec.backbone_takes_images),
            lora_r=recover.lora.r,
        )


# TRL's fused LM head (trl.kernels.chunked_logprob): a [tokens, vocab] tile buffer of at most this size
FUSED_TOKENS, FUSED_VOCAB = 4096, 32768
# tile-sized fp32 temporaries of its torch fallback (devices without Triton, e.g. the CPU) at the backward's peak
FUSED_CPU_TEMPORARIES = 8


def recovery(shape: Shape, r: RecoverySettings, device: str) -> tuple[int, dict]:
    """Peak bytes of an optimiser step of `recover.run` after the first (the AdamW states exist): the larger of
    the backward's start (activations and the LM head's loss work alive) and its end (every gradient)."""
    s = shape
    compute = _dtype_on(r.student_dtype, device)
    bc = _bytes(compute)
    h, q, kv, i = s.hidden, s.heads_after * s.head_dim, s.kv_after * s.head_dim, s.inter_after
    if r.mode == "projector":
        trainable, adapters = s.projector, 0
    elif r.mode == "lora":
        adapters = s.lora_params(r.lora_r)
        trainable = s.projector + adapters
    else:
        trainable, adapters = s.total_after - s.vision, 0
    frozen = s.total_after - trainable + adapters
    parts: dict[str, int] = {"student": frozen * bc + trainable * 4}
    if r.uses_teacher:
        parts["teacher"] = s.total_before * _bytes(_dtype_on(r.teacher_dtype, device))
    parts["optimizer"] = 2 * trainable * 4  # AdamW's two fp32 states per trainable weight
    tokens = r.batch * r.seq
    # the residual stream is fp32 in full mode (fp32 embeddings), else the frozen embeddings' dtype
    b_res = 4 if r.mode == "full" else bc
    saved = layer_saved(h, q, kv, i, s.mlp_inputs, bc)
    if r.checkpointing:  # each layer's input is kept; one layer at a time is recomputed in the backward
        acts = s.layers_after * tokens * h * b_res
        layer = tokens * (saved + 2 * h * b_res)
    else:
        acts = s.layers_after * tokens * saved
        layer = tokens * 2 * h * b_res
    acts += (
        tokens * h * 4 * 3
    )  # the distillation loss's fp32 copies of both final hidden states and their gap
    head_grad = (
        s.vocab * h * 4 if r.mode == "full" else 0
    )  # the LM head's (or tied embeddings') fp32 gradient
    if r.needs_logits:
        # whole logits: the student's fp32 log-softmax kept for the backward, its incoming and outgoing gradients
        # and the logits in the compute dtype; the teacher's logits (no grad)
        head = tokens * s.vocab * (bc + 12) + (tokens * s.vocab * bc if r.uses_teacher else 0)
    else:
        # TRL's fused head: one tile buffer in the compute dtype (a full FUSED_VOCAB wide, whatever the vocabulary)
        # and the fp32 gradient of the hidden states; without Triton the tile's fp32 temporaries
        rows = min(tokens, FUSED_TOKENS)
        head = rows * FUSED_VOCAB * bc + tokens * h * 4
        if device == "cpu":
            head += FUSED_CPU_TEMPORARIES * rows * min(s.vocab, FUSED_VOCAB) * 4
    teacher_fwd = tokens * (_layer_transient(h, q, kv, i, s.mlp_inputs) + 2 * h) * bc if r.uses_teacher else 0
    start = acts + max(head + head_grad, layer, teacher_fwd)
    # the backward's end: every gradient, plus the embeddings' dense gradient before it is added to the LM head's
    end = trainable * 4 + (s.vocab * h * 4 if r.mode == "full" and not s.lm_head else 0)
    if start >= end:
        parts |= {"activations": acts, "loss head / recompute": start - acts}
    else:
        parts |= {"grads": end}
    return sum(parts.values()), parts


def evaluation(
    shape: Shape, evaluate, eval_dtype: str, seq: int, device: str, new_tokens: int | None = None
) -> tuple[int, dict]:
    """Peak bytes of `evaluate.run`: both models loaded, one generate or one sequence's logits at a time.

    `seq`: the longest prompt; `new_tokens`: tokens generated (default: the most any task or the speed test asks).
    """
    s = shape
    b = _bytes(_dtype_on(eval_dtype, device))
    parts: dict[str, int] = {"original": s.total_before * b, "compressed": s.total_after * b}
    new = max([t.max_new_tokens for t in evaluate.tasks] or [16])
    if evaluate.speed:
        new = max(new, evaluate.speed_new_tokens)
    new = new_tokens or new
    cache = 2 * s.layers_before * s.kv_before * s.head_dim * (seq + new) * b
    h, q, kv, i = s.hidden, s.heads_before * s.head_dim, s.kv_before * s.head_dim, s.inter_before
    prefill = seq * _layer_transient(h, q, kv, i, s.mlp_inputs) * b
    work = cache + prefill
    if any(t.name in ("perplexity", "teacher_agreement") for t in evaluate.tasks):
        # the whole logits of one sequence, their fp32 copy, the scored rows and their log-softmax
        work = max(work, seq * s.vocab * (b + 12))
    parts["generate / logits"] = work
    return sum(parts.values()), parts


# ---------------------------------------------------------------------------- the plan's estimate


def estimate(
    plan: Plan, config: dict[str, Any], spec: ArchSpec, backbone: Backbone, recipe: Recipe | None = None
) -> MemoryEstimate:
    """Every stage the recipe runs (scoring only without a recipe), on a GPU and on the CPU."""
    shape = Shape.of(plan, config, spec, backbone)
    dtype = recipe.model.dtype if recipe is not None else "auto"
    max_length = recipe.prune.calibration.max_length if recipe is not None else 1024
    stages: list[StageMemory] = []

    def add(stage: str, detail: str, fn, *args) -> None:
        gpu, parts = fn(*args, "gpu")
        cpu, _ = fn(*args, "cpu")
        stages.append(StageMemory(stage=stage, detail=detail, gpu_bytes=gpu, cpu_bytes=cpu, parts=parts))

    samples = f", {plan.num_samples} x {max_length} tokens" if plan.num_samples else ""
    add("scoring", f"{plan.scorer}{samples}", scoring, shape, plan, dtype, max_length, not spec.remote_code)
    if recipe is not None and recipe.recover is not None:
        r = RecoverySettings.of(recipe.recover, spec)
        detail = f"{r.mode}, batch {r.batch} x {r.seq}" + (", teacher" if r.uses_teacher else "")
        add("recovery", detail, recovery, shape, r)
    if (
        recipe is not None
        and recipe.evaluate is not None
        and (recipe.evaluate.tasks or recipe.evaluate.speed)
    ):
        add("evaluation", "original + compressed", evaluation, shape, recipe.evaluate, dtype, max_length)
    notes: list[str] = []
    peak = max(s.gpu_bytes for s in stages)
    gpu = smallest_gpu(peak)
    flavor = _flavor(stages, shape.total_before, notes)
    return MemoryEstimate(stages=stages, gpu=gpu, flavor=flavor, notes=notes)


def gpu_need(peak: int) -> int:
    """Device memory a tensor peak needs on one GPU: the peak, the allocator's margin and the CUDA context."""
    return int(peak * (1 + ALLOCATOR_MARGIN)) + CUDA_CONTEXT_BYTES


def cpu_need(peak: int) -> int:
    return int(peak * (1 + ALLOCATOR_MARGIN)) + PROCESS_BYTES


def smallest_gpu(peak: int) -> str | None:
    need = gpu_need(peak)
    fits = [(gb, name) for name, gb in GPUS.items() if gb * GB >= need]
    return min(fits)[1] if fits else None


def _flavor(stages: list[StageMemory], params: int, notes: list[str]) -> str:
    gpu_peak = max(s.gpu_bytes for s in stages)
    cpu_peak = max(s.cpu_bytes for s in stages)
    if params <= CPU_MAX_PARAMS:
        for f in FLAVORS:
            if f.gpu is None and f.ram_gb is not None and f.ram_gb * GB >= cpu_need(cpu_peak):
                return f.name
    for f in FLAVORS:
        if f.gpu is None:
            continue
        per_gpu = GPUS[f.gpu] * GB
        # one process: a model that does not fit one GPU is spread over the flavour's GPUs (device_map auto)
        fits = gpu_need(gpu_peak) <= per_gpu or (
            f.count > 1 and gpu_need(gpu_peak) + (f.count - 1) * CUDA_CONTEXT_BYTES <= per_gpu * f.count
        )
        if fits:
            if gpu_need(gpu_peak) > per_gpu:
                notes.append(f"{f.name}: the models are spread over its {f.count} GPUs (device_map auto)")
            return f.name
    notes.append(f"no Jobs flavour holds {gpu_peak / GB:.0f} GB; h200x8 is the largest")
    return "h200x8"


def suggest_flavor(plan: Plan) -> str:
    """The smallest Hugging Face Jobs flavour (a `huggingface_hub.JobHardware` value) that fits the plan's run."""
    memory = getattr(plan, "memory", None)
    if memory is not None:
        return memory.flavor
    # a plan without an estimate (made by an older version): size the weights alone, bf16, with room to train
    params = plan.params.total_before or plan.params.backbone_before
    stage = StageMemory(
        stage="weights", detail="no estimate", gpu_bytes=params * 2 * 4, cpu_bytes=params * 4 * 4, parts={}
    )
    return _flavor([stage], params, [])


def gb(n: int) -> str:
    return f"{n / GB:.2f} GB" if n < 10 * GB else f"{n / GB:.0f} GB"


def render(memory: MemoryEstimate) -> list[tuple[str, str]]:
    """Rows for the plan's table: one per stage, then the hardware."""
    rows = [
        (f"memory: {s.stage}", f"{gb(s.gpu_bytes)} GPU / {gb(s.cpu_bytes)} CPU ({s.detail})")
        for s in memory.stages
    ]
    gpu = f"{memory.gpu} ({GPUS[memory.gpu]} GB)" if memory.gpu else "none single (spread over GPUs)"
    rows.append(("memory: fits", f"smallest GPU {gpu}; HF Jobs flavour {memory.flavor}"))
    rows += [("memory: note", note) for note in memory.notes]
    return rows
