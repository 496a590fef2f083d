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
    rows: int  # rows in the sources
    used: int  # rows in the training stream
    source: str  # the sources' names, joined by " + "
    sources: list[dict[str, Any]]  # per source: dataset, split, rows, fraction, drawn, weight, share, stream
    seen: dict[str, int]  # rows read by the trainer so far, per source name
    mixed_batches: list[int]  # [batches read that held image rows and text-only rows, batches read]


def subset_size(total: int, fraction: float) -> int:
    return max(1, min(total, round(total * fraction)))


def shares(sizes: list[int], weights: list[float]) -> list[int]:
    """Rows each source contributes to a stream of sum(sizes) rows, proportional to the weights (largest
    remainder, so the counts add up exactly)."""
    total, whole = sum(sizes), sum(weights)
    exact = [total * w / whole for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def interleave(counts: list[int]) -> list[int]:
    """Source index per stream position: a smooth weighted round robin, so every stretch of the stream holds the
    sources in their proportions (deterministic; the trainer's sampler shuffles it with the training seed)."""
    total = sum(counts)
    credit = [0.0] * len(counts)
    out = []
    for _ in range(total):
        for i, c in enumerate(counts):
            credit[i] += c / total
        pick = max(range(len(counts)), key=lambda i: (credit[i], -i))
        credit[pick] -= 1.0
        out.append(pick)
    return out


def build(sources, seed: int, token: str | None = None) -> TrainData:
    """A training stream from one or several `RecoverData` sources (fractions resolved, see `Recover.sources`).

    Each source gives a seeded uniform subset of its rows (its `fraction`). The stream holds as many rows as the
    subsets together; each source fills weight / sum(weights) of it, its subset repeated in order when it is
    smaller than its share and cut when larger. With one source the stream is its subset.
    """
    import datasets

    from compressor.data import load_rows

    opened, names = [], []
    for k, src in enumerate(sources):
        rows = load_rows(src.dataset, split=src.split, image_folder=src.image_folder, token=token)
        if len(rows) == 0:
            raise CompressorError(f"dataset {src.dataset!r} (split {src.split!r}) has no rows")
        name = src.dataset if src.dataset not in names else f"{src.dataset}#{k}"
        names.append(name)
        opened.append((rows, rows.sample(subset_size(len(rows), src.fraction), seed + k)))
    counts = shares([len(drawn) for _, drawn in opened], [s.weight for s in sources])
    picks = interleave(counts)  # one source: all of it, in order
    cursor = [0] * len(sources)
    stream_source, stream_row = [], []
    for k in picks:
        drawn = opened[k][1]
        stream_source.append(k)
        stream_row.append(drawn[cursor[k] % len(drawn)])
        cursor[k] += 1
    for k, (rows, drawn) in enumerate(opened):
        rows.prefetch(drawn[: counts[k]])  # a Hub dataset's images of these rows only

    seen = dict.fromkeys(names, 0)
    mixed = [0, 0]

    def to_rows(batch: dict[str, list[int]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"images": [], "messages": []}
        for k, i in zip(batch["source"], batch["row"]):
            row = opened[int(k)][0][int(i)]
            seen[names[int(k)]] += 1
            out["images"].append(row["images"])
            out["messages"].append(row["messages"])
        kinds = {bool(images) for images in out["images"]}
        mixed[0] += len(kinds) == 2
        mixed[1] += 1
        return out

    ds = datasets.Dataset.from_dict({"source": stream_source, "row": stream_row}).with_transform(to_rows)
    described = []
    for k, (src, (rows, drawn)) in enumerate(zip(sources, opened)):
        described.append(
            {
                "dataset": src.dataset,
                "split": src.split,
                "rows": len(rows),
                "fraction": src.fraction,
                "drawn": len(drawn),
                "weight": src.weight,
                "stream": counts[k],
                "share": round(counts[k] / max(1, sum(counts)), 4),
                "commit": rows.commit,
            }
        )
        log.info(
            "training source %s: %d of %d rows drawn (fraction %g), %d rows of the stream (weight %g)",
            src.dataset,
            len(drawn),
            len(rows),
            src.fraction,
            counts[k],
            src.weight,
        )
    return TrainData(
        dataset=ds,
        rows=sum(len(r) for r, _ in opened),
        used=len(stream_row),
        source=" + ".join(names),
        sources=described,
        seen=seen,
        mixed_batches=mixed,
    )


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
