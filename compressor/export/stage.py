"""Before any conversion: the checks that refuse bad input, and the staging copy the converter reads.

The staging copy links every file of the model folder and writes a new config.json with only what llama.cpp's
converter lacks for this family or this pruned shape (the facts are data in `compressor.arch.spec`). The user's
folder is never written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError

# quant -> who writes it: the converter (`--outtype`) or llama-quantize (from the f16 file)
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
QUANTIZER_TYPES = ("q4_k_m", "q5_k_m", "q6_k")
QUANTS = CONVERTER_TYPES + QUANTIZER_TYPES


@dataclass(frozen=True)
class Source:
    """A model folder the export can read, with its family's spec and backbone."""

    folder: Path
    config: dict[str, Any]
    spec: Any  # ArchSpec
    backbone: Any  # Backbone


def check_quants(quants: list[str] | tuple[str, ...]) -> list[str]:
    """The quants, lower-cased and in order; an unknown one, or a k-quant without llama-quantize, is refused."""
    from compressor.export.toolchain import QUANTIZER_HINT, quantizer
    from compressor.registry import closest

    out: list[str] = []
    if not quants:
        raise CompressorError(
            f"no quant given; pass --quant (recipe export.gguf.quants), e.g. {QUANTS[1]},q8_0"
        )
    for q in quants:
        q = str(q).strip().lower()
        if q not in QUANTS:
            raise CompressorError(
                f"unknown quant {q!r}{closest(q, QUANTS)} in --quant (recipe export.gguf.quants); known: "
                f"{', '.join(QUANTS)}"
            )
        if q not in out:
            out.append(q)
    if any(q in QUANTIZER_TYPES for q in out) and quantizer() is None:
        k = ", ".join(q for q in out if q in QUANTIZER_TYPES)
        raise CompressorError(f"quant {k} needs {QUANTIZER_HINT}")
    return out


def read_source(folder: str | Path) -> Source:
    """The model folder's config, family and backbone; a folder that is not a model, or a family that cannot be
    exported, is refused here (before any work)."""
    from compressor.arch.spec import FAMILIES, spec_for, supported_families

    folder = Path(folder)
    config_file = folder / "config.json"
    if not folder.is_dir() or not config_file.is_file():
        raise CompressorError(
            f"SRC {str(folder)!r} is not a model folder (no config.json); give the folder of a pruned or "
            "recovered model, a run folder, or any saved model of a supported family"
        )
    if not any(folder.glob("*.safetensors")):
        raise CompressorError(
            f"SRC {str(folder)!r} has a config.json but no *.safetensors weights; llama.cpp's converter (and the "
            "export) reads safetensors: save the model with save_pretrained (safe_serialization)"
        )
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CompressorError(
            f"{config_file} is not valid JSON ({err}); it is not a saved model's config"
        ) from None
    model_type = config.get("model_type")
    spec = next((s for s in FAMILIES if model_type in s.model_types), None)
    if spec is None:
        raise CompressorError(
            f"cannot export model_type {model_type!r} to GGUF: not a supported family "
            f"({', '.join(supported_families())})"
        )
    if spec.gguf.refusal:
        raise CompressorError(f"cannot export {spec.family} to GGUF: {spec.gguf.refusal}")
    spec, backbone = spec_for(config, trust_remote_code=True)  # remote-code families are refused above
    return Source(folder, config, spec, backbone)


def extra_kv(source: Source) -> tuple[dict[str, Any], list[str]]:
    """Metadata the converter does not write but llama.cpp needs (keys relative to the architecture), and what
    each is for."""
    kv: dict[str, Any] = {}
    fixes: list[str] = []
    types = source.spec.text_config(source.config).get("layer_types") or []
    if source.spec.gguf.sliding_window_pattern and types:
        kv["attention.sliding_window_pattern"] = [t == "sliding_attention" for t in types]
        glob = [i for i, t in enumerate(types) if t != "sliding_attention"]
        fixes.append(f"attention.sliding_window_pattern from layer_types (global layers {glob})")
    return kv, fixes


def byte_level_bpe(source: Source) -> str | None:
    """What the export does for a byte-level BPE tokenizer without merges that splits with GPT-2's regex (the tiny
    models', the embedded default's), or None for any other tokenizer: llama.cpp's converter does not recognise it
    and llama.cpp's loader wants merges (compressor/export/converter_main.py). The check then compares both
    tokenizers on the probe text."""
    path = source.folder / "tokenizer.json"
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    model, pre = data.get("model") or {}, data.get("pre_tokenizer") or {}
    if (
        model.get("type") == "BPE"
        and not model.get("merges")
        and data.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
    ):
        return (
            "tokenizer: a byte-level BPE without merges, written as llama.cpp's gpt-2 pre-tokenizer with one merge "
            "that never applies ('a 0': GPT-2's split never puts a letter and a digit in one word)"
        )
    return None


def mmproj_note(source: Source) -> str | None:
    """Why no mmproj is written for this model (None: it is written and checked with an image)."""
    facts = source.spec.gguf
    if facts.no_mmproj:
        return facts.no_mmproj
    if not any((source.folder / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        return (
            "the folder has no image processor (preprocessor_config.json or processor_config.json), so the mmproj "
            "cannot be checked with an image; save the model's processor with it to get one"
        )
    if facts.mmproj_writer == "llava":
        from compressor.export.llava_mmproj import refusal

        why = refusal(source.config)
        if why:
            return f"{why}; the text GGUF is written alone"
    vision = source.config.get("vision_config") or {}
    for key, value, why in facts.mmproj_requires:
        if key in vision and vision[key] != value:
            return f"vision_config.{key} is {vision[key]!r}, not {value!r}: {why}; the text GGUF is written alone"
    return None


def head_pruned(text: dict[str, Any]) -> bool:
    heads, hidden = text.get("num_attention_heads"), text.get("hidden_size")
    head_dim = text.get("head_dim") or (hidden // heads if heads and hidden else None)
    return bool(heads and hidden and head_dim and heads * head_dim != hidden)


def text_architecture(source: Source) -> str | None:
    """The class the converter must convert the text model as, when the saved config does not say it."""
    facts, backbone = source.spec.gguf, source.backbone
    text = source.spec.text_config(source.config)
    if head_pruned(text) and backbone.gguf_head_pruned_architecture:
        return backbone.gguf_head_pruned_architecture
    if facts.text_architecture == "backbone":
        return backbone.gguf_architecture
    return facts.text_architecture


def stage(source: Source, into: Path) -> tuple[Path, list[str]]:
    """A staging copy of the model folder (links + a rewritten config.json) and what was changed in it."""
    into.mkdir(parents=True)
    for item in source.folder.iterdir():
        if item.name != "config.json" and not item.name.startswith("."):
            os.symlink(item.resolve(), into / item.name)
    config = json.loads(json.dumps(source.config))
    fixes: list[str] = []
    arch = text_architecture(source)
    key = source.spec.text_config_key
    if arch and key and (config.get(key) or {}).get("architectures") != [arch]:
        config.setdefault(key, {})["architectures"] = [arch]
        why = (
            "heads are pruned"
            if head_pruned(source.spec.text_config(source.config))
            else "the converter's name"
        )
        fixes.append(f"{key}.architectures = [{arch!r}] ({why})")
    (into / "config.json").write_text(json.dumps(config, indent=1))
    return into, fixes
