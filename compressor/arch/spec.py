"""ArchSpec per model family and Backbone per text decoder layout; lookup by config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compressor.errors import CompressorError


@dataclass(frozen=True)
class Backbone:
    """Where things live inside one decoder layer of a text backbone."""

    name: str
    model_types: tuple[str, ...]
    attention: str = "self_attn"
    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"
    mlp: str = "mlp"
    mlp_in: tuple[str, ...] = ("gate_proj", "up_proj")
    mlp_out: str = "down_proj"
    # None when a pruned head count reloads in plain transformers (head_dim read from the config);
    # otherwise the reason it cannot.
    head_pruning_refusal: str | None = None
    # int config keys that count layers and must be remapped when layers are dropped
    layer_count_keys: tuple[str, ...] = ()
    # llama.cpp's converter: the text class it converts this backbone as (written to text_config.architectures
    # where the family's GGUFFacts say "backbone"), and the class to convert it as once heads are pruned
    # (heads x head_dim != hidden) when llama.cpp's own graph for it hard-codes square Q/O (qwen2: it takes
    # {n_embd, n_embd}; the llama graph takes any head_dim and optional q/k/v biases)
    gguf_architecture: str | None = None
    gguf_head_pruned_architecture: str | None = None


_QWEN_VL_HEAD_DIM = (
    "{family} computes the text attention's head_dim as hidden_size / num_attention_heads "
    "(transformers 5.24, {cls}), so a checkpoint with fewer heads cannot reload without custom code. "
    "Prune MLP channels only (--targets mlp, recipe `prune.targets: [mlp]`) or use --method depth."
)

BACKBONES: tuple[Backbone, ...] = (
    Backbone("llama", ("llama", "mistral", "vicuna"), gguf_architecture="LlamaForCausalLM"),
    Backbone(
        "qwen2",
        ("qwen2",),
        layer_count_keys=("max_window_layers",),
        gguf_architecture="Qwen2ForCausalLM",
        gguf_head_pruned_architecture="LlamaForCausalLM",
    ),
    Backbone("qwen3", ("qwen3",), layer_count_keys=("max_window_layers",)),
    Backbone("phi", ("phi", "bunny-phi"), o="dense", mlp_in=("fc1",), mlp_out="fc2"),
    Backbone("gemma3_text", ("gemma3_text",)),
    Backbone(
        "qwen2_vl_text",
        ("qwen2_vl_text",),
        head_pruning_refusal=_QWEN_VL_HEAD_DIM.format(family="Qwen2-VL", cls="Qwen2VLAttention"),
        layer_count_keys=("max_window_layers",),
    ),
    Backbone(
        "qwen2_5_vl_text",
        ("qwen2_5_vl_text",),
        head_pruning_refusal=_QWEN_VL_HEAD_DIM.format(family="Qwen2.5-VL", cls="Qwen2_5_VLAttention"),
        layer_count_keys=("max_window_layers",),
    ),
    Backbone("qwen3_vl_text", ("qwen3_vl_text",)),
)


@dataclass(frozen=True)
class GGUFFacts:
    """What llama.cpp's converter (pinned in compressor.export.toolchain) does with a family, and what the
    export writes on its staging copy for it. research/export-gguf.md has where each fact was seen."""

    # why the family cannot be exported at all (refused before any work); None: it can
    refusal: str | None = None
    # written to text_config.architectures on the staging copy (the converter picks its text class by it):
    # a class name, "backbone" (the Backbone's gguf_architecture), or None (the top-level class decides)
    text_architecture: str | None = None
    # why no mmproj file is written; None: the converter writes it (`--mmproj`)
    no_mmproj: str | None = None
    # True: write the text layers' local/global pattern from layer_types as
    # `<arch>.attention.sliding_window_pattern` (one bool per layer). The converter writes only `sliding_window`,
    # and llama.cpp then assumes every 6th layer global: a depth-pruned checkpoint would load and answer wrongly
    # (research/export-gguf.md, Gemma 3)
    sliding_window_pattern: bool = False
    # the mmproj's image check (compressor.export.verify.ImageReference): what transformers' processor takes in the
    # text for one image (llama.cpp's mtmd adds the family's own markers around its `<__media__>`), and how the
    # check's picture is sized so that neither side resamples it differently: "longest_edge" (the image processor's
    # size.longest_edge: Idefics3 tiles it, and both sides make the overview with Lanczos), "patch_merge" (a
    # multiple of patch_size x spatial_merge_size near 128 px: Qwen resizes nothing) or "size" (the image
    # processor's size.height: a fixed-size tower such as Gemma 3's)
    image_prompt: str = "<image>"
    picture: str = "longest_edge"
    # the text llama.cpp's side gets for the image: `<__media__>`, with what transformers' processor writes around
    # the image that mtmd does not (Gemma 3: "\n\n" before and after), so both tokenize the same text
    media_text: str = "<__media__>"
    # [old prefix, new prefix] of checkpoint tensor names the converter reads under another name (see
    # compressor/export/converter_main.py)
    tensor_renames: tuple[tuple[str, str], ...] = ()
    # vision_config values the pinned llama.cpp assumes instead of reading them from the mmproj: (key, value,
    # why). A checkpoint with another value gets no mmproj (the text GGUF is still written), with the reason
    mmproj_requires: tuple[tuple[str, Any, str], ...] = ()
    # "llava": the converter writes no projector for this family; compressor.export.llava_mmproj writes it in the
    # legacy clip layout llama.cpp reads, and the image check compares llama.cpp with a transformers replica of
    # the image tokens llama.cpp's LLaVA graph keeps (patches 1..n-1, then CLS) as well as with the model itself
    mmproj_writer: str | None = None


_NOT_CHECKED = (
    "{family} export is not checked against llama.cpp yet (issue 18): its converter path for {what} is untested "
    "with the pinned llama.cpp, so a file could load and answer wrongly; export a supported family or the text "
    "backbone alone"
)

# Families whose projector llama.cpp does not read (yet), and why.
_LLAVA_NEXT_MMPROJ = (
    "llama.cpp reads LLaVA-NeXT's any-res projector (image_grid_pinpoints, unpadding, image_newline) only from the "
    "legacy llava-1.6 layout, which compressor does not write yet, and the pinned converter has none; the text GGUF "
    "is written alone"
)
_INTERNVL_MMPROJ = (
    "the pinned converter reads InternVL's projector only in OpenGVLab's remote-code layout (InternVisionModel: "
    "vision_model.* with a fused qkv, mlp1.*), not in the -hf layout transformers saves, and llama.cpp's InternVL "
    "graph appends CLS after the patches and adds the position table in that order (as its LLaVA graph does), so "
    "a file converted as is would give every patch its neighbour's position; the text GGUF is written alone"
)
_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
# Measured with the pinned llama.cpp (tools/mtmd/clip.cpp): for Qwen2.5-VL its clip never reads the window size from
# the mmproj and takes 112 px; a tiny model with window_size 16 then answered the image question differently from
# transformers (2 of 12 tokens agreed) and the same model with window_size 64 (one window either way) agreed on 12 of 12
_QWEN25_WINDOW = (
    (
        "window_size",
        112,
        "llama.cpp's clip (pinned commit) uses a 112-pixel attention window for Qwen2.5-VL whatever the checkpoint "
        "says, so its image features would differ from transformers'",
    ),
)
_ONEVISION_MMPROJ = (
    "llama.cpp's clip has no projector type for LLaVA-OneVision; the text GGUF is written alone"
)


@dataclass(frozen=True)
class ArchSpec:
    """One MLLM family: module paths are relative to the loaded top-level model."""

    family: str
    model_types: tuple[str, ...]
    example: str  # a Hub repo of this family, for messages and docs
    projector: tuple[str, ...]  # module paths trained in `projector` mode; never pruned
    vision: tuple[str, ...]  # module paths of the vision tower; never pruned, always frozen
    decoder: str  # path of the text decoder (the module with `.layers`)
    auto_class: str = "AutoModelForImageTextToText"
    remote_code: bool = False  # the Hub repo needs trust_remote_code
    text_config_key: str | None = "text_config"  # None: the text config is the top-level config
    # forward needs `mm_token_type_ids` (0 text, 1 image) next to input_ids
    needs_mm_token_type_ids: bool = False
    # vision-config key whose length is the number of first text layers fed by the vision tower
    # (Qwen3-VL's deepstack): those layers can't be dropped
    protected_first_layers_key: str | None = None
    frozen_extra: tuple[str, ...] = field(default=())
    # "auto": the family's processor class (AutoProcessor); "bunny": tokenizer + SigLIP image processor joined by
    # compressor.arch.processors.BunnyProcessor (the repo ships no processor)
    processor: str = "auto"
    # False when the top-level forward splices the image features into the sequence (Bunny: at -200 in input_ids)
    # and the backbone never sees pixels: the backbone alone cannot be run on model inputs, and its sequence is
    # longer than input_ids
    backbone_takes_images: bool = True
    gguf: GGUFFacts = field(default_factory=GGUFFacts)

    def text_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        if self.text_config_key is None:
            return dict(config)
        return dict(config.get(self.text_config_key) or {})

    def protected_layers(self, config: Mapping[str, Any]) -> list[int]:
        if self.protected_first_layers_key is None:
            return []
        vision = config.get("vision_config") or {}
        return list(range(len(vision.get(self.protected_first_layers_key) or [])))


FAMILIES: tuple[ArchSpec, ...] = (
    ArchSpec(
        "llava",
        ("llava",),
        "llava-hf/llava-1.5-7b-hf",
        projector=("model.multi_modal_projector",),
        vision=("model.vision_tower",),
        decoder="model.language_model",
        gguf=GGUFFacts(mmproj_writer="llava", picture="size"),
    ),
    ArchSpec(
        "llava_next",
        ("llava_next",),
        "llava-hf/llava-v1.6-mistral-7b-hf",
        projector=("model.multi_modal_projector", "model.image_newline"),
        vision=("model.vision_tower",),
        decoder="model.language_model",
        gguf=GGUFFacts(text_architecture="backbone", no_mmproj=_LLAVA_NEXT_MMPROJ),
    ),
    ArchSpec(
        "llava_onevision",
        ("llava_onevision",),
        "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        projector=("model.multi_modal_projector", "model.image_newline"),
        vision=("model.vision_tower",),
        decoder="model.language_model",
        gguf=GGUFFacts(text_architecture="backbone", no_mmproj=_ONEVISION_MMPROJ),
    ),
    ArchSpec(
        "qwen2_vl",
        ("qwen2_vl",),
        "Qwen/Qwen2-VL-2B-Instruct",
        projector=("model.visual.merger",),
        vision=("model.visual",),
        decoder="model.language_model",
        needs_mm_token_type_ids=True,
        gguf=GGUFFacts(image_prompt=_QWEN_IMAGE, picture="patch_merge"),
    ),
    ArchSpec(
        "qwen2_5_vl",
        ("qwen2_5_vl",),
        "Qwen/Qwen2.5-VL-3B-Instruct",
        projector=("model.visual.merger",),
        vision=("model.visual",),
        decoder="model.language_model",
        needs_mm_token_type_ids=True,
        gguf=GGUFFacts(image_prompt=_QWEN_IMAGE, picture="patch_merge", mmproj_requires=_QWEN25_WINDOW),
    ),
    ArchSpec(
        "qwen3_vl",
        ("qwen3_vl",),
        "Qwen/Qwen3-VL-2B-Instruct",
        projector=("model.visual.merger", "model.visual.deepstack_merger_list"),
        vision=("model.visual",),
        decoder="model.language_model",
        needs_mm_token_type_ids=True,
        protected_first_layers_key="deepstack_visual_indexes",
        gguf=GGUFFacts(refusal=_NOT_CHECKED.format(family="Qwen3-VL", what="deepstack layers")),
    ),
    ArchSpec(
        "idefics3",
        ("idefics3",),
        "HuggingFaceM4/Idefics3-8B-Llama3",
        projector=("model.connector",),
        vision=("model.vision_model",),
        decoder="model.text_model",
        gguf=GGUFFacts(text_architecture="VLlama3ForCausalLM"),
    ),
    ArchSpec(
        "smolvlm",
        ("smolvlm",),
        "HuggingFaceTB/SmolVLM-256M-Instruct",
        projector=("model.connector",),
        vision=("model.vision_model",),
        decoder="model.text_model",
        gguf=GGUFFacts(text_architecture="VLlama3ForCausalLM"),
    ),
    ArchSpec(
        "gemma3",
        ("gemma3",),
        "google/gemma-3-4b-it",
        projector=("model.multi_modal_projector",),
        vision=("model.vision_tower",),
        decoder="model.language_model",
        gguf=GGUFFacts(
            sliding_window_pattern=True,
            image_prompt="<start_of_image>",
            picture="size",
            media_text="\n\n<__media__>\n\n",
            tensor_renames=(("vision_tower.", "vision_tower.vision_model."),),
        ),
    ),
    ArchSpec(
        "internvl",
        ("internvl",),
        "OpenGVLab/InternVL3-1B-hf",
        projector=("model.multi_modal_projector",),
        vision=("model.vision_tower",),
        decoder="model.language_model",
        gguf=GGUFFacts(text_architecture="backbone", no_mmproj=_INTERNVL_MMPROJ),
    ),
    # Bunny-v1.0-3B (Phi-2 + SigLIP + MLP projector) ships its own modeling code on the Hub.
    ArchSpec(
        "bunny",
        ("bunny-phi",),
        "BAAI/Bunny-v1_0-3B",
        projector=("model.mm_projector",),
        vision=("model.vision_tower",),
        decoder="model",
        auto_class="AutoModelForCausalLM",
        remote_code=True,
        text_config_key=None,
        processor="bunny",
        backbone_takes_images=False,
        gguf=GGUFFacts(
            refusal="Bunny ships its own modeling code and a checkpoint layout (model.mm_projector around Phi-2) that llama.cpp's converter does not read"
        ),
    ),
)


def family_spec(family: str) -> ArchSpec:
    """The spec of a family by its name (as a Plan records it)."""
    for spec in FAMILIES:
        if spec.family == family:
            return spec
    raise CompressorError(f"unknown family {family!r}; known: {', '.join(supported_families())}")


def supported_families() -> list[str]:
    return sorted(spec.family for spec in FAMILIES)


def _as_dict(config: Any) -> dict[str, Any]:
    return config if isinstance(config, Mapping) else config.to_dict()


def spec_for(config: Any, trust_remote_code: bool = False) -> tuple[ArchSpec, Backbone]:
    """The family spec and the text-backbone layout for a config (a dict or a PreTrainedConfig)."""
    config = _as_dict(config)
    model_type = config.get("model_type")
    spec = next((s for s in FAMILIES if model_type in s.model_types), None)
    if spec is None:
        raise CompressorError(
            f"unsupported model_type {model_type!r}; supported families: {', '.join(supported_families())}. "
            "Only multimodal LLMs whose language backbone is one of these layouts can be pruned."
        )
    if spec.remote_code and not trust_remote_code:
        raise CompressorError(
            f"{model_type!r} ({spec.example}) ships its own modeling code on the Hub; pass "
            "--trust-remote-code (recipe `model.trust_remote_code: true`) after reading that code."
        )
    text_type = spec.text_config(config).get("model_type", model_type)
    backbone = next((b for b in BACKBONES if text_type in b.model_types), None)
    if backbone is None:
        known = sorted(t for b in BACKBONES for t in b.model_types)
        raise CompressorError(
            f"{spec.family} with a {text_type!r} language backbone is not supported; "
            f"supported backbones: {', '.join(known)}"
        )
    return spec, backbone
