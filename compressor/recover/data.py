"""The training set: a seeded subset of `compressor.data.load_rows`, in TRL's conversational vision format.

Rows are read and their images opened only when the trainer asks for them (a `datasets.Dataset` of row
indices with an on-access transform), so 5 % of LLaVA-665k costs no up-front decoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from compressor.errors import CompressorError

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    dataset: Any  # datasets.Dataset yielding {"images": [PIL], "messages": [...]}
    rows: int  # rows in the source
    used: int  # rows in the subset
    source: str


def subset_size(total: int, fraction: float) -> int:
    return max(1, min(total, round(total * fraction)))


def build(
    source: str,
    fraction: float,
    seed: int,
    split: str = "train",
    image_folder: str | None = None,
    token: str | None = None,
) -> TrainData:
    """`fraction` of the rows of `source`, a deterministic uniform subset drawn with `seed`."""
    import datasets

    from compressor.data import load_rows

    rows = load_rows(source, split=split, image_folder=image_folder, token=token)
    if len(rows) == 0:
        raise CompressorError(f"dataset {source!r} (split {split!r}) has no rows")
    indices = rows.sample(subset_size(len(rows), fraction), seed)
    rows.prefetch(indices)  # a Hub dataset's images of these rows only

    def to_rows(batch: dict[str, list[int]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"images": [], "messages": []}
        for i in batch["row"]:
            row = rows[int(i)]
            out["images"].append(row["images"])
            out["messages"].append(row["messages"])
        return out

    ds = datasets.Dataset.from_dict({"row": indices}).with_transform(to_rows)
    log.info(
        "training on %d of %d rows of %s (fraction %g, seed %d)",
        len(indices),
        len(rows),
        source,
        fraction,
        seed,
    )
    return TrainData(dataset=ds, rows=len(rows), used=len(indices), source=source)


def assistant_only(processor) -> bool:
    """Whether TRL can restrict the loss to assistant turns with this processor's chat template.

    True when the template has `{% generation %}` markers or TRL ships a training version of it.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = getattr(processor, "chat_template", None)
    if not template:
        return False
    if has_generation_markers(template):
        return True
    try:
        return get_training_chat_template(processor) is not None
    except (ValueError, TypeError, KeyError) as err:
        log.info("assistant-only loss unavailable with this chat template (%s); training on every token", err)
        return False
