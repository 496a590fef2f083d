"""The two models under evaluation, loaded side by side with one processor, and what every task asks of them.

Both models stay loaded for the whole evaluation (tasks run them on the same sample one after the other, and
the speed test interleaves them), so the machine needs room for both. The processor is the original's: the
compressed model keeps its tokenizer and image processor, so the same inputs go to both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError


@dataclass
class ModelPair:
    original: Any
    compressed: Any
    processor: Any
    spec: Any
    original_dir: Path
    compressed_dir: Path
    device: str
    dtype: str
    # The original's greedy answers by input fingerprint, reused across runs of the same original (see
    # `evaluate.run`'s `cache`); None: no reuse. `reused` counts the answers taken from it.
    memo: dict[str, str] | None = None
    reused: int = 0

    @classmethod
    def load(
        cls,
        original: Path,
        compressed: Path,
        device: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
    ) -> ModelPair:
        from compressor.arch import spec_for
        from compressor.models import load_model, load_processor

        specs = []
        for folder in (original, compressed):
            if not (folder / "config.json").is_file():
                raise CompressorError(
                    f"{str(folder)!r} has no config.json: point at a folder saved with save_pretrained"
                )
            specs.append(spec_for(json.loads((folder / "config.json").read_text()), trust_remote_code)[0])
        if specs[0].family != specs[1].family:
            raise CompressorError(
                f"{original} is a {specs[0].family} model but {compressed} is a {specs[1].family} model; compare a "
                "compressed model with the model it came from"
            )
        device_map = {"": device} if device else None
        models = [
            load_model(f, specs[0], dtype, device_map, trust_remote_code) for f in (original, compressed)
        ]
        processor = load_processor(original, trust_remote_code)
        if processor is None:
            raise CompressorError(
                f"{original} has no processor or tokenizer; save one with processor.save_pretrained into the folder"
            )
        used, dtype_name = str(models[0].device), str(models[0].dtype).removeprefix("torch.")
        return cls(models[0], models[1], processor, specs[0], original, compressed, used, dtype_name)

    def sides(self) -> tuple[tuple[str, Any], tuple[str, Any]]:
        return ("original", self.original), ("compressed", self.compressed)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def _inputs(self, text: str, images: list, model) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        enc = dict(self.processor(**kwargs))
        if self.spec.needs_mm_token_type_ids and "mm_token_type_ids" not in enc:
            from compressor.prune.calibration import image_token_id

            image_id = image_token_id(model.config)
            enc["mm_token_type_ids"] = (enc["input_ids"] == image_id).long()
        return {k: v.to(model.device) if hasattr(v, "to") else v for k, v in enc.items()}

    def chat_text(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        if (
            getattr(self.processor, "chat_template", None) is None
            and getattr(self.tokenizer, "chat_template", None) is None
        ):
            raise CompressorError(
                f"the processor of {self.original_dir} has no chat template, which the eval tasks need to build "
                "prompts; add one (chat_template.jinja) to the model folder"
            )
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode(self, messages: list[dict[str, Any]], images: list, add_generation_prompt: bool = False):
        """Model inputs of a conversation, on the original's device (both models share it unless device-mapped)."""
        text = self.chat_text(messages, add_generation_prompt)
        return self._inputs(text, images, self.original)

    def encode_text(self, text: str) -> dict[str, Any]:
        """Token ids of plain text (no chat template, no image), on the original's device."""
        enc = self.tokenizer(text, return_tensors="pt")
        return {k: v.to(self.original.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def answer(self, question: str, images: list, max_new_tokens: int) -> dict[str, str]:
        """Greedy answers of both models to one user turn: {'original': …, 'compressed': …}."""
        import torch

        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
        enc = self.encode([{"role": "user", "content": content}], images, add_generation_prompt=True)
        n = enc["input_ids"].shape[1]
        out: dict[str, str] = {}
        key = None if self.memo is None else _fingerprint(enc, max_new_tokens)
        with torch.inference_mode():
            for name, model in self.sides():
                if name == "original" and key in (self.memo or {}):
                    out[name] = self.memo[key]
                    self.reused += 1
                    continue
                ids = model.generate(
                    **_to(enc, model.device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                out[name] = self.tokenizer.decode(ids[0, n:], skip_special_tokens=True).strip()
                if name == "original" and key is not None:
                    self.memo[key] = out[name]
        return out


def _fingerprint(enc: dict[str, Any], max_new_tokens: int) -> str:
    """A digest of everything a greedy answer depends on besides the weights: the inputs and the length."""
    import hashlib

    import torch

    h = hashlib.sha256(str(max_new_tokens).encode())
    for k in sorted(enc):
        v = enc[k]
        if hasattr(v, "detach"):
            h.update(k.encode() + str(tuple(v.shape)).encode() + str(v.dtype).encode())
            h.update(v.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _to(enc: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in enc.items()}
