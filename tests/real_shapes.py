"""Real models' config shapes, built locally (no download): what the plan tests and recipes are checked on."""

from __future__ import annotations

from typing import Any


def llava_1_5_7b() -> dict[str, Any]:
    """llava-hf/llava-1.5-7b-hf: Vicuna-7B (32 layers, hidden 4096, 32 heads, intermediate 11008) + CLIP-L/336."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    text = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32064,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )
    return LlavaConfig(text_config=text, vision_config=vision, image_token_id=32000).to_dict()


def bunny_v1_0_3b() -> dict[str, Any]:
    """BAAI/Bunny-v1_0-3B's config.json keys that matter (Phi-2 backbone, remote code)."""
    return {
        "model_type": "bunny-phi",
        "architectures": ["BunnyPhiForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_bunny_phi.BunnyPhiConfig",
            "AutoModelForCausalLM": "modeling_bunny_phi.BunnyPhiForCausalLM",
        },
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 51200,
        "partial_rotary_factor": 0.4,
        "hidden_act": "gelu_new",
        "max_position_embeddings": 2048,
        "layer_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "mm_hidden_size": 1152,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
    }


def qwen2_5_vl_3b() -> dict[str, Any]:
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "tie_word_embeddings": True,
            "max_position_embeddings": 128000,
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
        tie_word_embeddings=True,
    ).to_dict()


def smolvlm_256m() -> dict[str, Any]:
    from transformers import SmolVLMConfig

    return SmolVLMConfig(
        text_config={
            "model_type": "llama",
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "head_dim": 64,
            "vocab_size": 49280,
            "tie_word_embeddings": True,
        },
        vision_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "patch_size": 16,
            "image_size": 512,
        },
        scale_factor=4,
    ).to_dict()


def qwen2_vl_2b() -> dict[str, Any]:
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config={
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "tie_word_embeddings": True,
        },
        vision_config={"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16},
    ).to_dict()
