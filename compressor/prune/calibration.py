"""Calibration batches: N multimodal samples, tokenised one per batch with the model's processor."""

from __future__ import annotations

import logging
from typing import Any

from compressor.errors import CompressorError

log = logging.getLogger(__name__)


def image_token_id(config) -> int | None:
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    return None


def encode(processor, row: dict[str, Any], config, needs_mm_token_type_ids: bool = False) -> dict[str, Any]:
    """One normalised row → model inputs with labels (-100 on image and padding positions)."""
    text = processor.apply_chat_template(row["messages"], tokenize=False, add_generation_prompt=False)
    kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
    if row["images"]:
        kwargs["images"] = row["images"]
    enc = dict(processor(**kwargs))
    labels = enc["input_ids"].clone()
    labels[labels < 0] = -100  # a placeholder id the model's forward splices images at (Bunny's -200)
    image_id = image_token_id(config)
    if image_id is not None:
        labels[enc["input_ids"] == image_id] = -100
    if "attention_mask" in enc:
        labels[enc["attention_mask"] == 0] = -100
    enc["labels"] = labels
    if needs_mm_token_type_ids and "mm_token_type_ids" not in enc and image_id is not None:
        enc["mm_token_type_ids"] = (enc["input_ids"] == image_id).long()
    return enc


def build_batches(
    rows,
    processor,
    config,
    num_samples: int,
    max_length: int,
    seed: int,
    needs_mm_token_type_ids: bool = False,
) -> list[dict[str, Any]]:
    """`num_samples` encoded samples drawn with `seed`, skipping those longer than `max_length` tokens."""
    if processor is None:
        raise CompressorError(
            "calibration needs the model's processor, and none was found next to the weights; save one with "
            "processor.save_pretrained into the model folder"
        )
    from tqdm.auto import tqdm

    batches: list[dict[str, Any]] = []
    skipped = 0
    with tqdm(total=num_samples, desc="calibration samples", unit="sample") as bar:
        for i in rows.sample(len(rows), seed):
            enc = encode(processor, rows[i], config, needs_mm_token_type_ids)
            if enc["input_ids"].shape[1] > max_length:
                skipped += 1
                continue
            batches.append(enc)
            bar.update()
            if len(batches) == num_samples:
                break
    if not batches:
        raise CompressorError(
            f"no calibration sample is at most {max_length} tokens long ({skipped} skipped); raise "
            "--max-length (recipe prune.calibration.max_length)"
        )
    if len(batches) < num_samples:
        log.warning(
            "calibration: %d samples used (%d asked, %d too long)", len(batches), num_samples, skipped
        )
    return batches
