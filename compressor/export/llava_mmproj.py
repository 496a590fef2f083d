"""LLaVA-1.5's projector file (`mmproj-*.gguf`), which the pinned converter does not write.

The converter converts LLaVA's CLIP tower only for Pixtral. llama.cpp still reads the layout its legacy
`tools/mtmd/legacy-models/convert_image_encoder_to_gguf.py --llava-projector` writes (an arch `clip` file with
`clip.has_llava_projector` and the MLP as `mm.0` / `mm.2`), but that script loads a pickled projector and
transformers 4's `CLIPModel`. This module writes the same keys and tensor names with gguf-py's `GGUFWriter`, from
the safetensors transformers 5 saves (`vision_tower.*`, `multi_modal_projector.linear_{1,2}.*`).

Two facts of llama.cpp's LLaVA graph (tools/mtmd/models/llava.cpp at the pinned commit) decide what is written:

- It appends the CLS token **after** the patches and adds position embedding i to row i, where CLIP puts CLS first
  with position 0. The legacy script writes the table as it is, so every patch gets its left neighbour's position.
  Written here rotated (`rotate_positions`: rows 1..n, then row 0), each token gets its own: the tower's outputs
  are then exactly CLIP's.
- It keeps rows 1..n of that output as the image tokens: patches 1..n-1 and CLS, not patches 0..n-1. No file can
  change that, so the language model sees the CLS token's features in place of the first patch's. The export's
  image check measures both: against a transformers replica of that order (which must pass the usual bars: it
  proves the file) and against the unmodified model (reported, with what it costs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compressor.errors import CompressorError

# the legacy script's renaming rules, in order, applied after "vision_tower." -> "v."
_RENAMES = (
    ("encoder.layers", "blk"),
    ("embeddings.", ""),
    ("_proj", ""),
    ("self_attn.", "attn_"),
    ("layer_norm", "ln"),
    ("layernorm", "ln"),
    ("mlp.fc1", "ffn_up"),
    ("mlp.fc2", "ffn_down"),
    ("embedding", "embd"),
    ("final", "post"),
    ("layrnorm", "ln"),
)
# CLIP's (OpenAI) normalisation, the image processor's default
_DEFAULT_MEAN = (0.48145466, 0.4578275, 0.40821073)
_DEFAULT_STD = (0.26862954, 0.26130258, 0.27577711)
_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "gelu_quick"}  # llama.cpp's clip: use_gelu, else quick GELU


def tensor_name(name: str) -> str | None:
    """The legacy layout's name for a saved tensor (without `model.`), or None for one it leaves out."""
    if name.startswith("multi_modal_projector."):
        return name.replace("multi_modal_projector", "mm").replace("linear_1", "0").replace("linear_2", "2")
    if not name.startswith("vision_tower.") or "post_layernorm" in name or name.endswith("position_ids"):
        return None
    name = "v." + name[len("vision_tower.") :].removeprefix("vision_model.")
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name


def feature_blocks(config: dict) -> int:
    """How many CLIP blocks run before LLaVA takes its features (vision_feature_layer -2: all but the last)."""
    layer = config.get("vision_feature_layer", -2)
    n = int(config["vision_config"]["num_hidden_layers"])
    if not isinstance(layer, int):
        raise CompressorError(
            f"vision_feature_layer {layer!r}: llama.cpp's LLaVA projector file takes one feature layer"
        )
    return layer if layer >= 0 else n + layer + 1


def refusal(config: dict) -> str | None:
    """Why this LLaVA's projector cannot be written in llama.cpp's layout (None: it can)."""
    vision = config.get("vision_config") or {}
    if vision.get("model_type", "clip_vision_model") != "clip_vision_model":
        return (
            f"llama.cpp's LLaVA projector file takes a CLIP tower, this one is {vision.get('model_type')!r}"
        )
    if config.get("vision_feature_select_strategy", "default") != "default":
        return "llama.cpp's LLaVA graph drops the CLS token (vision_feature_select_strategy 'default' only)"
    if vision.get("hidden_act", "quick_gelu") not in _ACTIVATIONS:
        return f"llama.cpp's clip runs GELU or quick GELU, not the tower's {vision.get('hidden_act')!r}"
    if config.get("projector_hidden_act", "gelu") != "gelu":
        return f"llama.cpp's LLaVA projector runs GELU, not {config.get('projector_hidden_act')!r}"
    if not isinstance(config.get("vision_feature_layer", -2), int):
        return "llama.cpp's LLaVA projector file takes one vision_feature_layer, not a list"
    return None


def rotate_positions(table: np.ndarray) -> np.ndarray:
    """CLIP's position table (row 0: CLS, row i: patch i-1) in the order llama.cpp's graph adds it (patches, then
    CLS)."""
    return np.concatenate([table[1:], table[:1]], axis=0)


def write(folder: Path, out: Path) -> None:
    """The mmproj GGUF (f16 matrices, f32 vectors and position table) of the LLaVA model saved in `folder`."""
    from gguf import GGUFWriter
    from safetensors import safe_open

    config = json.loads((folder / "config.json").read_text())
    why = refusal(config)
    if why:
        raise CompressorError(f"cannot write the LLaVA mmproj: {why}")
    vision = config["vision_config"]
    processor: dict = {}
    for name in ("preprocessor_config.json", "processor_config.json"):
        if (folder / name).is_file():
            data = json.loads((folder / name).read_text())
            processor = data.get("image_processor", data)
            break
    blocks = feature_blocks(config)
    writer = GGUFWriter(str(out), arch="clip")
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_llava_projector", True)
    writer.add_file_type(1)  # mostly f16
    writer.add_name(folder.name)
    writer.add_description("LLaVA image encoder + projector, written by compressor (legacy clip layout)")
    writer.add_string("clip.projector_type", "mlp")
    writer.add_uint32("clip.vision.image_size", int(vision["image_size"]))
    writer.add_uint32("clip.vision.patch_size", int(vision["patch_size"]))
    writer.add_uint32("clip.vision.embedding_length", int(vision["hidden_size"]))
    writer.add_uint32("clip.vision.feed_forward_length", int(vision["intermediate_size"]))
    writer.add_uint32("clip.vision.projection_dim", int(vision.get("projection_dim", 512)))
    writer.add_uint32("clip.vision.attention.head_count", int(vision["num_attention_heads"]))
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", float(vision.get("layer_norm_eps", 1e-5)))
    writer.add_uint32("clip.vision.block_count", blocks)
    writer.add_array("clip.vision.feature_layer", [blocks])
    writer.add_array(
        "clip.vision.image_mean", [float(x) for x in processor.get("image_mean") or _DEFAULT_MEAN]
    )
    writer.add_array("clip.vision.image_std", [float(x) for x in processor.get("image_std") or _DEFAULT_STD])
    writer.add_bool("clip.use_gelu", vision.get("hidden_act", "quick_gelu") == "gelu")
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                name = tensor_name(key.removeprefix("model."))
                if name is None:
                    continue
                if name.startswith("v.blk.") and int(name.split(".")[2]) >= blocks:
                    continue  # blocks after the feature layer never run
                data = f.get_tensor(key).float().numpy()
                if name == "v.position_embd.weight":
                    data = rotate_positions(data)
                data = data.squeeze()
                matrix = data.ndim == 4 or (
                    data.ndim == 2 and name.endswith(".weight") and "position" not in name
                )
                writer.add_tensor(name, data.astype(np.float16 if matrix else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
