"""`make demo`: the main job on an embedded default that needs no download.

The default is a tiny LLaVA (Llama backbone + CLIP vision tower, 0.3 M parameters) with a locally built
tokenizer and processor, trained for a few hundred steps on generated pictures of coloured squares and
circles until it names them right, so pruning and recovery change something measurable. It is built once
and cached (`$COMPRESSOR_CACHE`, default `~/.cache/compressor`). The demo prints the plan, prunes,
reloads the checkpoint with plain transformers, and prints the before/after table.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_VERSION = "embedded-default-v1"
TRAIN_ROWS, HELD_OUT_ROWS = 160, 32

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")


def write_dataset(folder: Path, n: int = 24, seed: int = 0) -> Path:
    """A local dataset folder in TRL's conversational vision format: data.jsonl + PNG files."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        color = rng.choice(sorted(COLORS))
        shape = rng.choice(SHAPES)
        img = Image.new("RGB", (32, 32), (250, 250, 250))
        draw = ImageDraw.Draw(img)
        box = (6, 6, 26, 26)
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLORS[color])
        name = f"images/{i:03d}.png"
        img.save(folder / name)
        rows.append(
            {
                "images": [name],
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": f"A {color} {shape}."}]},
                ],
            }
        )
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def answer_only_batch(processor, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A padded batch whose labels cover the assistant's answer only."""
    texts = [processor.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    prompts = [
        processor.apply_chat_template(r["messages"][:1], tokenize=False, add_generation_prompt=True)
        for r in rows
    ]
    images = [r["images"][0] for r in rows]
    enc = processor(text=texts, images=images, return_tensors="pt", padding=True)
    labels = enc["input_ids"].clone()
    for j, prompt in enumerate(prompts):
        n = processor(text=[prompt], images=[images[j]], return_tensors="pt")["input_ids"].shape[1]
        labels[j, :n] = -100
    labels[enc["attention_mask"] == 0] = -100
    enc["labels"] = labels
    return dict(enc)


def train_default(
    model_dir: Path, data_dir: Path, steps: int = 400, batch_size: int = 16, seed: int = 0
) -> None:
    """Teach the tiny model to name the shapes (a fixture-building step, not the product's recovery)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from compressor.data import load_rows

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    rows = load_rows(str(data_dir))
    train = [rows[i] for i in range(TRAIN_ROWS)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(train), (batch_size,), generator=generator).tolist()
        model(**answer_only_batch(processor, [train[i] for i in idx])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(model_dir)


def cache_dir() -> Path:
    return Path(os.environ.get("COMPRESSOR_CACHE") or Path.home() / ".cache" / "compressor") / DEFAULT_VERSION


def build_default(cache: Path | None = None) -> tuple[Path, Path]:
    """The embedded default model folder and its dataset folder, built once and cached.

    The first `TRAIN_ROWS` rows trained the model; the last `HELD_OUT_ROWS` are held out for evaluation.
    """
    from compressor.tiny import save_family

    cache = cache or cache_dir()
    model_dir, data_dir = cache / "tiny-llava", cache / "shapes"
    if (model_dir / "config.json").exists() and (data_dir / "data.jsonl").exists():
        return model_dir, data_dir
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache.parent))
    try:
        write_dataset(tmp / "shapes", n=TRAIN_ROWS + HELD_OUT_ROWS)
        save_family("llava", tmp / "tiny-llava", seed=0)
        print("building the embedded default: training a tiny LLaVA to name shapes (once, ~1 min on 2 cores)")
        train_default(tmp / "tiny-llava", tmp / "shapes")
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model_dir, data_dir


def _disk_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6


def compare(
    original_dir: Path, pruned_dir: Path, data_dir: Path, num_samples: int = 8
) -> list[tuple[str, Any, Any]]:
    """Before/after rows: shape, parameters, disk size, and top-1 agreement with the original's next tokens."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from compressor.arch import spec_for
    from compressor.data import load_rows
    from compressor.plan import count_params
    from compressor.prune.calibration import encode

    a = AutoModelForImageTextToText.from_pretrained(original_dir).eval()
    b = AutoModelForImageTextToText.from_pretrained(pruned_dir).eval()
    processor = AutoProcessor.from_pretrained(pruned_dir)
    spec, _ = spec_for(a.config.to_dict())
    rows = load_rows(str(data_dir))
    agree = total = 0
    with torch.no_grad():
        for i in range(min(num_samples, len(rows))):
            enc = encode(processor, rows[i], a.config)
            enc.pop("labels")
            top_a = a(**enc).logits.argmax(-1)
            top_b = b(**enc).logits.argmax(-1)
            agree += int((top_a == top_b).sum())
            total += top_a.numel()
    ta, tb = a.config.get_text_config(), b.config.get_text_config()
    ca, cb = count_params(a, spec), count_params(b, spec)
    return [
        ("decoder layers", ta.num_hidden_layers, tb.num_hidden_layers),
        (
            "query heads / KV groups",
            f"{ta.num_attention_heads} / {ta.num_key_value_heads}",
            f"{tb.num_attention_heads} / {tb.num_key_value_heads}",
        ),
        ("MLP intermediate", ta.intermediate_size, tb.intermediate_size),
        ("language backbone params", ca["backbone"], cb["backbone"]),
        ("whole model params", ca["total"], cb["total"]),
        ("safetensors on disk (MB)", f"{_disk_mb(original_dir):.2f}", f"{_disk_mb(pruned_dir):.2f}"),
        ("top-1 agreement with original", "100.0%", f"{100 * agree / max(total, 1):.1f}%"),
    ]


def format_rows(rows: list[tuple[str, Any, Any]]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'original':>14}  {'pruned':>14}"]
    lines += [f"{name:{width}}  {str(x):>14}  {str(y):>14}" for name, x, y in rows]
    return "\n".join(lines)


def run(workdir: Path | None = None) -> int:
    from compressor import api
    from compressor.recipe import parse_recipe

    workdir = Path(workdir or tempfile.mkdtemp(prefix="compressor-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir, data_dir = build_default()
    print(f"embedded default: {model_dir} (tiny LLaVA, built locally)\ncalibration data: {data_dir}\n")
    for method, scorer in (("depth", "block_influence"), ("width", "taylor")):
        recipe = parse_recipe(
            {
                "model": {"source": str(model_dir)},
                "prune": {
                    "method": method,
                    "ratio": 0.3,
                    "scorer": scorer,
                    "round_to": 16,
                    "calibration": {"dataset": str(data_dir), "num_samples": 8},
                },
            },
            "demo",
        )
        print(f"== plan ({method})\n{api.plan(recipe).table()}\n")
        out = workdir / f"pruned-{method}"
        report = api.prune(recipe, out, overwrite=True)
        if report.dropped_layers is not None:
            print(f"dropped layers (by {scorer}): {report.dropped_layers}")
        print(
            f"== before / after ({method}, reloaded from {out})\n{format_rows(compare(model_dir, out, data_dir))}\n"
        )
    return 0
