"""Tiny, deterministic, randomly initialised MLLMs built from configs with transformers' own classes.

Used by `make demo` and the tests: nothing is downloaded and every family is expressed natively (no remote
code), so a saved folder loads back with `AutoModelForImageTextToText`, and with `AutoProcessor` where the
family has a processor (`compressor.models.load_processor` for those in `NO_VIDEO_PROCESSOR`).

Every text backbone has the same shape: 6 decoder layers, hidden 64, 4 query heads over 2 KV heads
(head_dim 16), MLP 128, and the 276-token vocabulary of `build_tokenizer()` (byte-level). Vision towers are
2 layers of width 32 on 16x16 images, so one image becomes 4 placeholder tokens (10 for the any-res
LLaVA-NeXT / OneVision layout: base view + one tile with a newline per row).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

FAMILIES = (
    "llava",
    "llava_phi",
    "llava_next",
    "llava_onevision",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "idefics3",
    "smolvlm",
    "gemma3",
    "internvl",
)

# Special tokens, in vocabulary order: their ids are their positions (0-3: pad, bos, eos = end of turn, unk).
SPECIAL_TOKENS = (
    "<pad>",
    "<s>",
    "<|im_end|>",
    "<unk>",
    "<|im_start|>",
    "<image>",
    "<video>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
)
TOKEN_ID = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
# 256 byte-level symbols follow the special tokens.
VOCAB_SIZE = len(SPECIAL_TOKENS) + 256

IMAGE_SIZE = 16  # pixels per side fed to every vision tower (and produced by every image processor)

TEXT_SHAPE: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
    "pad_token_id": PAD_ID,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
}

# Named tokens of each family's tokenizer: attributes such as `tokenizer.image_token` that the processors read.
_FAMILY_TOKENS: dict[str, dict[str, str]] = {
    "llava": {"image_token": "<image>"},
    "llava_phi": {"image_token": "<image>"},
    "llava_next": {"image_token": "<image>"},
    "llava_onevision": {"image_token": "<image>", "video_token": "<video>"},
    "qwen2_vl": {
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_start_token": "<|vision_start|>",
        "vision_end_token": "<|vision_end|>",
    },
    "idefics3": {
        "image_token": "<image>",
        "fake_image_token": "<fake_token_around_image>",
        "global_image_token": "<global-img>",
        "end_of_utterance_token": "<end_of_utterance>",
    },
    "gemma3": {
        "image_token": "<image_soft_token>",
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
    },
    "internvl": {
        "context_image_token": "<IMG_CONTEXT>",
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "video_token": "<video>",
    },
}
_FAMILY_TOKENS["qwen2_5_vl"] = _FAMILY_TOKENS["qwen3_vl"] = _FAMILY_TOKENS["qwen2_vl"]
_FAMILY_TOKENS["smolvlm"] = {**_FAMILY_TOKENS["idefics3"], "video_token": "<video>"}

# The placeholder repeated once per image feature ("<image>" for the others).
_IMAGE_TOKEN: dict[str, str] = {
    "qwen2_vl": "<|image_pad|>",
    "qwen2_5_vl": "<|image_pad|>",
    "qwen3_vl": "<|image_pad|>",
    "gemma3": "<image_soft_token>",
    "internvl": "<IMG_CONTEXT>",
}

# What a chat template writes for one {"type": "image"} item; the processor expands it.
_CHAT_IMAGE: dict[str, str] = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "gemma3": "<start_of_image>",
    "internvl": "<IMG_CONTEXT>",
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def _text_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs = dict(TEXT_SHAPE)
    kwargs.update(overrides)
    return kwargs


def _vit(**extra: Any) -> dict[str, Any]:
    """Shape shared by the ViT-style towers (CLIP, SigLIP, Idefics3, InternVL)."""
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    shape.update(extra)
    return shape


def tiny_config(family: str, **text_overrides: Any) -> PreTrainedConfig:
    """The config of a tiny `family` model; `text_overrides` change the text backbone."""
    _check_family(family)
    import transformers as tf

    text = _text_kwargs(**text_overrides)
    anyres = {"image_grid_pinpoints": [[IMAGE_SIZE, IMAGE_SIZE], [2 * IMAGE_SIZE, 2 * IMAGE_SIZE]]}
    if family == "llava":
        return tf.LlavaConfig(
            text_config=tf.LlamaConfig(**text),
            vision_config=tf.CLIPVisionConfig(**_vit(image_size=IMAGE_SIZE, patch_size=8, projection_dim=32)),
            image_token_index=TOKEN_ID["<image>"],
            image_seq_length=4,
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
            pad_token_id=PAD_ID,
        )
    if family == "llava_phi":
        # Bunny-v1.0-3B's parts (Phi-2 + SigLIP without a CLS token, so every patch is kept, + a 2-layer GELU MLP
        # projector) in transformers' native LLaVA: the native family Bunny's backbone exercises. Bunny itself runs
        # through its remote code: tests/bunny_remote.
        return tf.LlavaConfig(
            text_config=tf.PhiConfig(**text),
            vision_config=tf.SiglipVisionConfig(
                **_vit(image_size=IMAGE_SIZE, patch_size=8, vision_use_head=False)
            ),
            image_token_index=TOKEN_ID["<image>"],
            image_seq_length=4,
            vision_feature_select_strategy="full",
            vision_feature_layer=-2,
            pad_token_id=PAD_ID,
        )
    if family == "llava_next":
        return tf.LlavaNextConfig(
            text_config=tf.MistralConfig(**text, sliding_window=None),
            vision_config=tf.CLIPVisionConfig(**_vit(image_size=IMAGE_SIZE, patch_size=8, projection_dim=32)),
            image_token_index=TOKEN_ID["<image>"],
            image_seq_length=4,
            pad_token_id=PAD_ID,
            **anyres,
        )
    if family == "llava_onevision":
        return tf.LlavaOnevisionConfig(
            text_config=tf.Qwen2Config(**text),
            vision_config=tf.SiglipVisionConfig(
                **_vit(image_size=IMAGE_SIZE, patch_size=8, vision_use_head=False)
            ),
            image_token_index=TOKEN_ID["<image>"],
            video_token_index=TOKEN_ID["<video>"],
            pad_token_id=PAD_ID,
            **anyres,
        )
    if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        head_dim = text["head_dim"]
        # M-RoPE splits the rotary half-dimension into (temporal, height, width) sections.
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(head_dim)}
        vision = {
            "depth": 2,
            "num_heads": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
        ids = {
            "image_token_id": TOKEN_ID["<|image_pad|>"],
            "video_token_id": TOKEN_ID["<|video_pad|>"],
            "vision_start_token_id": TOKEN_ID["<|vision_start|>"],
            "vision_end_token_id": TOKEN_ID["<|vision_end|>"],
        }
        if family == "qwen2_vl":
            return tf.Qwen2VLConfig(
                text_config=tf.Qwen2VLTextConfig(**text, rope_parameters=rope),
                vision_config=tf.Qwen2VLVisionConfig(
                    **vision, embed_dim=32, mlp_ratio=2, hidden_size=text["hidden_size"]
                ),
                **ids,
            )
        if family == "qwen2_5_vl":
            return tf.Qwen2_5_VLConfig(
                text_config=tf.Qwen2_5_VLTextConfig(**text, rope_parameters=rope),
                vision_config=tf.Qwen2_5_VLVisionConfig(
                    **vision,
                    hidden_size=32,
                    intermediate_size=64,
                    out_hidden_size=text["hidden_size"],
                    window_size=16,
                    fullatt_block_indexes=[1],
                ),
                **ids,
            )
        return tf.Qwen3VLConfig(
            text_config=tf.Qwen3VLTextConfig(**text, rope_parameters={**rope, "mrope_interleaved": True}),
            vision_config=tf.Qwen3VLVisionConfig(
                **vision,
                hidden_size=32,
                intermediate_size=64,
                out_hidden_size=text["hidden_size"],
                num_position_embeddings=16,
                deepstack_visual_indexes=[0],
            ),
            **ids,
        )
    if family in ("idefics3", "smolvlm"):
        cls, vision_cls = (
            (tf.Idefics3Config, tf.Idefics3VisionConfig)
            if family == "idefics3"
            else (tf.SmolVLMConfig, tf.SmolVLMVisionConfig)
        )
        return cls(
            text_config=tf.LlamaConfig(**text),
            vision_config=vision_cls(**_vit(image_size=IMAGE_SIZE, patch_size=4)),
            image_token_id=TOKEN_ID["<image>"],
            scale_factor=2,
            pad_token_id=PAD_ID,
        )
    if family == "gemma3":
        return tf.Gemma3Config(
            text_config=tf.Gemma3TextConfig(
                **text, query_pre_attn_scalar=text["head_dim"], sliding_window=64
            ),
            vision_config=tf.SiglipVisionConfig(
                **_vit(image_size=IMAGE_SIZE, patch_size=4, vision_use_head=False)
            ),
            mm_tokens_per_image=4,
            boi_token_index=TOKEN_ID["<start_of_image>"],
            eoi_token_index=TOKEN_ID["<end_of_image>"],
            image_token_index=TOKEN_ID["<image_soft_token>"],
        )
    # internvl
    return tf.InternVLConfig(
        text_config=tf.Qwen2Config(**text),
        vision_config=tf.InternVLVisionConfig(**_vit(image_size=IMAGE_SIZE, patch_size=4)),
        image_token_id=TOKEN_ID["<IMG_CONTEXT>"],
        image_seq_length=4,
        downsample_ratio=0.5,
    )


def _mrope_section(head_dim: int) -> list[int]:
    """M-RoPE (temporal, height, width) split of head_dim / 2, in Qwen's 1 : 1.5 : 1.5 proportions."""
    half = head_dim // 2
    t = half // 4 if half >= 4 else 0
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_model(family: str, seed: int = 0, **text_overrides: Any) -> PreTrainedModel:
    """A randomly initialised tiny `family` model, float32, in eval mode; the same seed gives the same weights."""
    import torch
    from transformers import AutoModelForImageTextToText

    config = tiny_config(family, **text_overrides)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    return model.eval()


def num_image_tokens(family: str, config: Any = None) -> int:
    """Placeholder tokens that one `IMAGE_SIZE` image takes in `make_inputs`."""
    _check_family(family)
    if family in ("llava_next", "llava_onevision"):
        cfg = config if config is not None else tiny_config(family)
        side = cfg.vision_config.image_size // cfg.vision_config.patch_size
        # base view (side*side) + one any-res tile (side rows of side features + a newline)
        return side * side + side * (side + 1)
    return 4


def make_inputs(
    family: str, config: Any, batch_size: int = 2, seed: int = 0, text_len: int = 8
) -> dict[str, torch.Tensor]:
    """Model-ready inputs: one `IMAGE_SIZE` image per sample then `text_len` random text tokens, plus `labels`."""
    import torch

    _check_family(family)
    gen = torch.Generator().manual_seed(seed)
    n_img = num_image_tokens(family, config)
    image_id = TOKEN_ID[_IMAGE_TOKEN.get(family, "<image>")]
    if family.startswith("qwen"):
        prefix = [TOKEN_ID["<|vision_start|>"], *[image_id] * n_img, TOKEN_ID["<|vision_end|>"]]
    elif family in ("idefics3", "smolvlm"):
        fake = TOKEN_ID["<fake_token_around_image>"]
        prefix = [BOS_ID, fake, TOKEN_ID["<global-img>"], *[image_id] * n_img, fake]
    elif family == "gemma3":
        prefix = [BOS_ID, TOKEN_ID["<start_of_image>"], *[image_id] * n_img, TOKEN_ID["<end_of_image>"]]
    elif family == "internvl":
        prefix = [BOS_ID, TOKEN_ID["<img>"], *[image_id] * n_img, TOKEN_ID["</img>"]]
    else:
        prefix = [BOS_ID, *[image_id] * n_img]
    text = torch.randint(len(SPECIAL_TOKENS), VOCAB_SIZE, (batch_size, text_len), generator=gen)
    input_ids = torch.cat([torch.tensor(prefix).expand(batch_size, -1), text], dim=1)
    attention_mask = torch.ones_like(input_ids)
    multimodal = torch.tensor(sorted(set(prefix) - {BOS_ID}))
    labels = input_ids.masked_fill(torch.isin(input_ids, multimodal), -100)

    out: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    vision = config.vision_config
    size = IMAGE_SIZE

    def pixels(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen) * 2 - 1

    if family in ("llava", "llava_phi", "internvl"):
        out["pixel_values"] = pixels(batch_size, 3, size, size)
    elif family in ("llava_next", "llava_onevision"):
        out["pixel_values"] = pixels(batch_size, 2, 3, size, size)  # base view + one tile
        out["image_sizes"] = torch.tensor([[size, size]] * batch_size)
        if family == "llava_onevision":
            out["batch_num_images"] = torch.ones(batch_size, dtype=torch.long)
    elif family.startswith("qwen"):
        p, tp = vision.patch_size, vision.temporal_patch_size
        grid = size // p
        out["pixel_values"] = pixels(batch_size * grid * grid, 3 * tp * p * p)
        out["image_grid_thw"] = torch.tensor([[1, grid, grid]] * batch_size)
        out["mm_token_type_ids"] = (input_ids == image_id).int()
    elif family in ("idefics3", "smolvlm"):
        out["pixel_values"] = pixels(batch_size, 1, 3, size, size)
        out["pixel_attention_mask"] = torch.ones(batch_size, 1, size, size, dtype=torch.bool)
    elif family == "gemma3":
        out["pixel_values"] = pixels(batch_size, 3, size, size)
        out["token_type_ids"] = (input_ids == image_id).long()
    out["labels"] = labels
    return out


def _chat_template(family: str | None) -> str:
    return chatml_template(
        _CHAT_IMAGE.get(family or "", "<image>"), bos=not (family and family.startswith("qwen"))
    )


def chatml_template(image: str = "<image>", bos: bool = True) -> str:
    """ChatML-style template over TRL's conversational vision format, with `{% generation %}` markers."""
    return (
        ("{{- bos_token -}}" if bos else "") + "{%- for message in messages -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
        "{%- if message['content'] is string -%}"
        "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
        "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
        "{%- if message['role'] == 'assistant' -%}"
        "{%- generation -%}"
        "{%- for part in parts if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}"
        "{{- '<|im_end|>' -}}"
        "{%- endgeneration -%}"
        "{{- '\\n' -}}"
        "{%- else -%}"
        "{%- for part in parts -%}"
        "{%- if part['type'] == 'image' -%}{{- '" + image + "' -}}"
        "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
        "{%- endfor -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


def build_tokenizer(family: str | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (no merges) over all 256 bytes plus every family's special tokens.

    The vocabulary and ids are the same for every family; `family` only picks the named tokens the processors
    read (`tokenizer.image_token`, `tokenizer.boi_token`, ...) and the image placeholder of the chat template.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if family is not None:
        _check_family(family)
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    named = _FAMILY_TOKENS[family] if family is not None else {"image_token": "<image>"}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_specific_special_tokens=dict(named),
        chat_template=_chat_template(family),
        model_max_length=512,
    )


# Families whose `AutoProcessor` needs a video processor, and so torchvision (every transformers 5.24 video
# processor class requires it, and passing None fails the class check). Without torchvision their processor class
# is built with its PIL image processor and no video processor (`compressor.arch.processors.without_video`), which
# is what `build_processor` returns and `compressor.models.load_processor` loads: images work, videos do not.
# SmolVLM's processor also needs the `num2words` package.
NO_VIDEO_PROCESSOR: dict[str, str] = {
    "llava_onevision": "LlavaOnevisionProcessor",
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
    "smolvlm": "SmolVLMProcessor",
    "internvl": "InternVLProcessor",
}
# No tiny family is left without a processor (kept for callers that still ask).
NO_PROCESSOR: dict[str, str] = {}


def tiny_images(n: int, size: int = 32, seed: int = 0) -> list[Image.Image]:
    """`n` deterministic random RGB images of `size` x `size` pixels."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB") for _ in range(n)]


def build_image_processor(family: str) -> Any:
    """The family's PIL-backend image processor, sized for the tiny vision tower (works for every family)."""
    _check_family(family)
    import transformers as tf

    side = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    longest = {"longest_edge": IMAGE_SIZE}
    config = tiny_config(family)
    if family == "llava":
        return tf.CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=side)
    if family in ("llava_phi", "gemma3"):
        cls = tf.SiglipImageProcessorPil if family == "llava_phi" else tf.Gemma3ImageProcessorPil
        return cls(size=side)
    if family == "llava_next":
        return tf.LlavaNextImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE},
            crop_size=side,
            image_grid_pinpoints=config.image_grid_pinpoints,
        )
    if family == "llava_onevision":
        return tf.LlavaOnevisionImageProcessorPil(size=side, image_grid_pinpoints=config.image_grid_pinpoints)
    if family.startswith("qwen"):
        vision = config.vision_config
        return tf.Qwen2VLImageProcessorPil(
            # pixel-count bounds: images are resized to between 16x16 and 32x32, in multiples of 8
            size={"shortest_edge": IMAGE_SIZE * IMAGE_SIZE, "longest_edge": 4 * IMAGE_SIZE * IMAGE_SIZE},
            patch_size=vision.patch_size,
            temporal_patch_size=vision.temporal_patch_size,
            merge_size=vision.spatial_merge_size,
        )
    if family in ("idefics3", "smolvlm"):
        cls = tf.Idefics3ImageProcessorPil if family == "idefics3" else tf.SmolVLMImageProcessorPil
        return cls(size=longest, max_image_size=longest, do_image_splitting=False)
    return tf.GotOcr2ImageProcessorPil(size=side, crop_to_patches=False)  # internvl


def build_processor(family: str, tokenizer: PreTrainedTokenizerFast | None = None) -> ProcessorMixin | None:
    """The family's own processor class over its PIL image processor (no torchvision).

    `tokenizer` defaults to `build_tokenizer(family)` (a generic one lacks e.g. Gemma3's `boi_token`). The
    families in `NO_VIDEO_PROCESSOR` get theirs without a video processor.
    """
    _check_family(family)
    if family in NO_PROCESSOR:
        return None
    import transformers as tf

    tok = tokenizer if tokenizer is not None else build_tokenizer(family)
    template = _chat_template(family)
    images = build_image_processor(family)
    config = tiny_config(family)
    if family in ("llava", "llava_phi", "llava_next"):
        cls = tf.LlavaNextProcessor if family == "llava_next" else tf.LlavaProcessor
        strategy = config.vision_feature_select_strategy
        return cls(
            image_processor=images,
            tokenizer=tok,
            patch_size=config.vision_config.patch_size,
            vision_feature_select_strategy=strategy,
            num_additional_image_tokens=1 if strategy == "default" else 0,  # CLIP's CLS token
            chat_template=template,
        )
    if family == "idefics3":
        seq_len = num_image_tokens(family, config)
        return tf.Idefics3Processor(images, tok, image_seq_len=seq_len, chat_template=template)
    if family in NO_VIDEO_PROCESSOR:
        from compressor.arch.processors import without_video

        extra: dict[str, Any] = {}
        if family == "smolvlm":
            extra["image_seq_len"] = num_image_tokens(family, config)
        elif family == "internvl":
            extra["image_seq_length"] = config.image_seq_length
        elif family == "llava_onevision":
            side = config.vision_config.image_size // config.vision_config.patch_size
            extra["num_image_tokens"] = side * side
            extra["vision_feature_select_strategy"] = config.vision_feature_select_strategy
        cls = without_video(getattr(tf, NO_VIDEO_PROCESSOR[family]))
        return cls(images, tok, video_processor=None, chat_template=template, **extra)
    return tf.Gemma3Processor(
        images, tok, chat_template=template, image_seq_length=config.mm_tokens_per_image
    )


def save_family(family: str, path: str | Path, seed: int = 0) -> Path:
    """Save a tiny `family` model (safetensors) with its processor, else its tokenizer and image processor."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    build_model(family, seed=seed).save_pretrained(path)
    processor = build_processor(family)
    if processor is not None:
        processor.save_pretrained(path)
    else:
        build_tokenizer(family).save_pretrained(path)
        build_image_processor(family).save_pretrained(path)
    return path
