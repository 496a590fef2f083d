"""A tiny Bunny saved as the Hub holds one: config.json with `auto_map`, its modeling code beside it, safetensors,
the tokenizer and a SigLIP image processor (no processor class: Bunny ships none). Loaded only through
`trust_remote_code=True`, exactly as `BAAI/Bunny-v1_0-3B` is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

HERE = Path(__file__).parent
CODE_FILES = ("configuration_bunny_phi.py", "modeling_bunny_phi.py")


def tiny_bunny_config() -> dict:
    from compressor.tiny import IMAGE_SIZE, TEXT_SHAPE

    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
    }
    return {
        **TEXT_SHAPE,
        "model_type": "bunny-phi",
        "architectures": ["BunnyPhiForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_bunny_phi.BunnyPhiConfig",
            "AutoModelForCausalLM": "modeling_bunny_phi.BunnyPhiForCausalLM",
        },
        "mm_vision_tower": f"tiny-siglip-patch8-{IMAGE_SIZE}",
        "mm_vision_config": vision,
        "mm_hidden_size": vision["hidden_size"],
        "mm_projector_type": "mlp2x_gelu",
        "image_aspect_ratio": "pad",
        "tokenizer_padding_side": "right",
        "use_mm_proj": True,
        "dtype": "float32",
    }


def save_tiny_bunny(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny Bunny folder at `path` (random weights from `seed`) and return it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from compressor.tiny import build_image_processor, build_tokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name in CODE_FILES:
        shutil.copyfile(HERE / name, path / name)
    (path / "config.json").write_text(json.dumps(tiny_bunny_config(), indent=1))
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=True, dtype=torch.float32)
    model.save_pretrained(path)
    tokenizer = build_tokenizer("llava_phi")
    tokenizer.save_pretrained(path)
    build_image_processor("llava_phi").save_pretrained(path)
    return path


def bunny_inputs(model, batch_size: int = 2, seed: int = 0, text_len: int = 8) -> dict:
    """Model-ready inputs: -200 (one image) after BOS, then random text; `images` pixel tensors; labels."""
    import torch

    from compressor.tiny import BOS_ID, IMAGE_SIZE, SPECIAL_TOKENS, VOCAB_SIZE

    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(len(SPECIAL_TOKENS), VOCAB_SIZE, (batch_size, text_len), generator=gen)
    prefix = torch.tensor([BOS_ID, -200]).expand(batch_size, -1)
    input_ids = torch.cat([prefix, text], dim=1)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "images": torch.rand(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen) * 2 - 1,
        "labels": input_ids.masked_fill(input_ids < 0, -100),
    }
