"""`make demo`: the main job on an embedded default that needs no download.

The default is a tiny LLaVA (Llama backbone + CLIP vision tower, 0.3 M parameters) with a locally built
tokenizer and processor, trained for a few hundred steps on generated pictures of coloured squares and
circles until it names them right, so pruning and recovery change something measurable. It is built once
and cached (`$COMPRESSOR_CACHE`, default `~/.cache/compressor`).

The demo starts the embedded Hub in-process, publishes the default model and its datasets there, runs
`compressor/demo.yaml` (plan, prune, a short recovery, eval, card, push), loads the pushed model back
through the Hub into a fresh cache, and prints the card and the before/after table.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from compressor.evaluate.tasks import SHORT_ANSWER  # the eval prompt the default is trained to answer

DEFAULT_VERSION = "embedded-default-v4"
TRAIN_ROWS, EVAL_ROWS = 192, 64

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")


def _picture(rng) -> tuple[Any, str, str]:
    from PIL import Image, ImageDraw

    color, shape = rng.choice(sorted(COLORS)), rng.choice(SHAPES)
    img = Image.new("RGB", (32, 32), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    (draw.rectangle if shape == "square" else draw.ellipse)((6, 6, 26, 26), fill=COLORS[color])
    return img, color, shape


def _question(rng, color: str, shape: str) -> tuple[str, str, str]:
    """(kind, question, answer): what colour, what shape, or a yes/no question about the colour."""
    kind = rng.choice(("color", "shape", "yes_no"))
    if kind == "color":
        return kind, "What color is the shape?", color
    if kind == "shape":
        return kind, "What shape is it?", shape
    asked = color if rng.random() < 0.5 else rng.choice(sorted(set(COLORS) - {color}))
    return kind, f"Is the shape {asked}?", "yes" if asked == color else "no"


def _write(folder: Path, rows: list[dict[str, Any]], images: list[Any]) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img.save(folder / f"images/{i:03d}.png")
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def write_dataset(folder: Path, n: int = 24, seed: int = 0) -> Path:
    """Conversations in TRL's conversational vision format (data.jsonl + PNGs): questions about the colour
    and the shape of one coloured square or circle, answered in a word, as LLaVA-1.5's evaluation asks."""
    import random

    rng = random.Random(seed)
    rows, images = [], []
    for i in range(n):
        img, color, shape = _picture(rng)
        _, question, answer = _question(rng, color, shape)
        images.append(img)
        user = [{"type": "image"}, {"type": "text", "text": f"{question}\n{SHORT_ANSWER}"}]
        rows.append(
            {
                "images": [f"images/{i:03d}.png"],
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": [{"type": "text", "text": answer.capitalize()}]},
                ],
            }
        )
    return _write(folder, rows, images)


def write_eval_sets(folder: Path, n: int = 32, seed: int = 1) -> dict[str, Path]:
    """Held-out pictures as eval rows: `vqa` (question, answers) and `yes_no` (POPE-style question, answer)."""
    import random

    rng = random.Random(seed)
    sets: dict[str, tuple[list, list]] = {"vqa": ([], []), "yes_no": ([], [])}
    for _ in range(n):
        img, color, shape = _picture(rng)
        kind, question, answer = _question(rng, color, shape)
        rows, images = sets["yes_no" if kind == "yes_no" else "vqa"]
        row = {"image": f"images/{len(images):03d}.png", "question": question}
        row.update({"answer": answer} if kind == "yes_no" else {"answers": [answer]})
        rows.append(row)
        images.append(img)
    return {name: _write(folder / f"shapes-{name}", rows, images) for name, (rows, images) in sets.items()}


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
    model_dir: Path, data_dir: Path, steps: int = 800, batch_size: int = 16, lr: float = 1e-3, seed: int = 0
) -> None:
    """Teach the tiny model to name the shapes (a fixture-building step, not the product's recovery)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from compressor.data import load_rows

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    rows = load_rows(str(data_dir))
    train = [rows[i] for i in range(len(rows))]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)  # linear to zero
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(train), (batch_size,), generator=generator).tolist()
        model(**answer_only_batch(processor, [train[i] for i in idx])).loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(model_dir)


def _builder_digest() -> str:
    """A hash of everything that decides the default's weights: the code that writes its data and trains it, the
    tiny model's definition (compressor/tiny.py) and the torch / transformers versions. A change to any of them
    builds it anew instead of reusing a cache made by other code."""
    import hashlib
    import inspect
    from importlib.metadata import version

    from compressor import tiny

    parts = [inspect.getsource(f) for f in (_picture, _question, _write, write_dataset, write_eval_sets)]
    parts += [inspect.getsource(f) for f in (answer_only_batch, train_default, build_default)]
    parts += [inspect.getsource(tiny), repr((TRAIN_ROWS, EVAL_ROWS, COLORS, SHAPES, SHORT_ANSWER))]
    parts += [version("torch"), version("transformers")]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    """Where the default is cached: `$COMPRESSOR_CACHE` (default ~/.cache/compressor)/VERSION-DIGEST."""
    root = Path(os.environ.get("COMPRESSOR_CACHE") or Path.home() / ".cache" / "compressor")
    return root / f"{DEFAULT_VERSION}-{_builder_digest()}"


@dataclass(frozen=True)
class Default:
    """The embedded default: the model, its training conversations and two held-out eval sets."""

    model: Path
    data: Path
    vqa: Path
    yes_no: Path


def build_default(cache: Path | None = None, steps: int = 800) -> Default:
    """The embedded default, built once and cached (rebuilt when `DEFAULT_VERSION` or the code that builds it
    changes, see `cache_dir`). `steps` of training: fewer only where a test checks the building itself."""
    from compressor.tiny import save_family

    cache = cache or cache_dir()
    default = Default(cache / "tiny-llava", cache / "shapes", cache / "shapes-vqa", cache / "shapes-yes_no")
    if all((p / name).exists() for p, name in zip(astuple(default), ("config.json", *["data.jsonl"] * 3))):
        return default
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache.parent))
    try:
        write_dataset(tmp / "shapes", n=TRAIN_ROWS)
        write_eval_sets(tmp, n=EVAL_ROWS)
        save_family("llava", tmp / "tiny-llava", seed=0)
        print(
            "building the embedded default: training a tiny LLaVA to name shapes (once, 1-2 min on 2 cores)"
        )
        train_default(tmp / "tiny-llava", tmp / "shapes", steps=steps)
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return default


RECIPE = Path(__file__).with_name("demo.yaml")
TOKEN = "hf_demo_write_token"  # of the embedded Hub's one user, `demo`; it exists only in this process


def _point_client_at(url: str, workdir: Path) -> None:
    """HF_ENDPOINT is read when huggingface_hub is imported: it must be set before anything imports it."""
    import sys

    if "huggingface_hub" in sys.modules:
        from huggingface_hub import constants

        if url != constants.ENDPOINT:
            raise RuntimeError(
                "the demo must start before huggingface_hub is imported (it points it at its own Hub)"
            )
    os.environ.update(
        HF_ENDPOINT=url, HF_HUB_DISABLE_XET="1", HF_HOME=str(workdir / "hf-home"), HF_TOKEN=TOKEN
    )
    # per-file upload/download bars of the demo's own publishing would drown what the demo shows
    os.environ.update(HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")


def _publish_inputs(default: Default) -> None:
    from huggingface_hub import HfApi

    api = HfApi(token=TOKEN)
    api.create_repo("demo/tiny-llava", exist_ok=True)
    api.upload_folder(repo_id="demo/tiny-llava", folder_path=default.model, commit_message="embedded default")
    api.upload_file(
        path_or_fileobj=b"---\nlicense: apache-2.0\n---\n# tiny-llava\n",
        path_in_repo="README.md",
        repo_id="demo/tiny-llava",
    )
    for name, folder in (
        ("shapes", default.data),
        ("shapes-vqa", default.vqa),
        ("shapes-yes_no", default.yes_no),
    ):
        api.create_repo(f"demo/{name}", repo_type="dataset", exist_ok=True)
        api.upload_folder(repo_id=f"demo/{name}", repo_type="dataset", folder_path=folder)


def run(workdir: Path | None = None) -> int:
    """Embedded Hub → pull → plan → prune → recover → eval → card → push → load back through the Hub."""
    import socket

    workdir = Path(workdir or tempfile.mkdtemp(prefix="compressor-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _point_client_at(f"http://127.0.0.1:{port}", workdir)

    from compressor import api, hubserver
    from compressor.evaluate.report import EvalReport
    from compressor.recipe import load_recipe

    default = build_default()
    server = hubserver.serve(port, workdir / "hub-data", {TOKEN: {"user": "demo", "role": "write"}})
    try:
        print(f"embedded Hub at {server.url}; embedded default model {default.model}")
        _publish_inputs(default)
        recipe = load_recipe(RECIPE)
        print(f"\n== recipe ({RECIPE})\n{RECIPE.read_text()}")
        print(f"== plan\n{api.plan(recipe, token=TOKEN).table()}\n")
        summary = api.run(recipe, workdir / "run", token=TOKEN)
        repo_id = recipe.publish.repo_id
        print(f"\n== pushed {summary['url']}; loading it back through the Hub into a fresh cache")
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(
            repo_id, cache_dir=workdir / "fresh-cache", token=TOKEN
        )
        text = model.config.get_text_config()
        print(
            f"loaded {repo_id}: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{text.num_attention_heads} heads, MLP {text.intermediate_size}"
        )
        card = (Path(summary["model"]) / "README.md").read_text()
        print(f"\n== model card\n{card}")
        report = EvalReport.model_validate_json((workdir / "run" / "reports" / "eval.json").read_text())
        print(f"== before / after (original vs pruned and recovered)\n{report.table()}")
        from compressor import evaluate

        without = evaluate.run(
            report.original, workdir / "run" / "pruned", recipe.evaluate.model_copy(update={"speed": False})
        )
        print(f"\n== for comparison: the pruned model before recovery\n{without.table()}")
    finally:
        server.shutdown()
    return 0
