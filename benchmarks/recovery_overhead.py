"""Step time of distillation (0.5 CE + 0.5 hidden MSE, teacher online) over plain SFT, side by side.

Two LLaVA students at 30 % width pruning (data-free magnitude scorer, the project's own pruner):
- tiny: the test model (`compressor.tiny`, 6 layers, hidden 64);
- ~30M: a Llama text backbone of 8 layers, hidden 512, 8 heads / 4 KV groups, MLP 1408, vocab 8192 with
  tied embeddings (the LM head is ~15 % of the teacher's forward, as SmolLM2-135M's is ~20 %), and a CLIP
  tower of 4 layers x 256 on 64 px images (64 image tokens).

Every operation runs through the product: `compressor.recover.prepare` builds the trainers (plain SFT = loss
ce only, no teacher) and each step is `trainer.training_step` + the AdamW step on the same fixed batch of
4 x 128 tokens (64 image + 64 text), all student parameters outside the vision tower training (mode full).
Operations are interleaved round by round after warm-up; min and median are reported. The floor is what a
distillation step cannot beat: 1 + teacher forward / SFT step, for the full teacher (with its LM head) and
for the backbone-only teacher that `DistillationSFTTrainer` runs.

Run: `.venv/bin/python benchmarks/recovery_overhead.py real` for the real SmolLM2-135M-Instruct weights (the LLaVA
of benchmarks/shapes.py, 64 px CLIP tower: 16 image tokens + text); `tiny` and `30M` for the random models above
(about two minutes on two cores), `smollm2` for SmolLM2-135M's shape with random weights.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROUNDS, WARMUP, BATCH, SEQ = 12, 2, 4, 128
OPS = ("sft", "kd", "kd_no_share", "teacher_full", "teacher_backbone", "vision")


def _small_clip(config) -> None:
    """A CLIP tower of 4 layers x 256 on 64 px images: 64 image tokens."""
    v = config.vision_config
    v.image_size, v.patch_size, v.hidden_size, v.intermediate_size = 64, 8, 256, 1024
    v.num_hidden_layers, v.num_attention_heads = 4, 4
    config.image_seq_length = 64


def build(size: str):
    import torch
    from transformers import AutoModelForImageTextToText

    from compressor import tiny

    if (
        size == "real"
    ):  # the real SmolLM2-135M-Instruct weights in a LLaVA (a 64 px CLIP tower, 16 image tokens)
        from shapes import real_smollm2_llava

        return real_smollm2_llava()[0]
    if size == "tiny":
        config = tiny.tiny_config("llava")
    elif size == "smollm2":  # SmolLM2-135M's language-model shape, the research notes' anchor
        from shapes import SMOLLM2_135M

        config = tiny.tiny_config("llava", **SMOLLM2_135M)
        _small_clip(config)
    else:
        config = tiny.tiny_config(
            "llava",
            hidden_size=512,
            intermediate_size=1408,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=64,
            vocab_size=8192,
            tie_word_embeddings=True,
        )
        _small_clip(config)
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(config, dtype=torch.float32).eval()


def prune_width(model, round_to: int):
    from compressor import prune
    from compressor.arch import spec_for
    from compressor.plan import resolve
    from compressor.recipe import Prune

    config = model.config.to_dict()
    spec, backbone = spec_for(config)
    plan = resolve(
        config, spec, backbone, Prune(method="width", ratio=0.3, scorer="magnitude", round_to=round_to)
    )
    prune.apply(model, spec, backbone, plan, [], progress=lambda it, _d: it)
    return plan


def inputs_for(model):
    """BATCH rows of 128 tokens: BOS, the image's placeholder tokens, random text; loss on the text."""
    import torch

    from compressor.tiny import BOS_ID, SPECIAL_TOKENS, TOKEN_ID, VOCAB_SIZE

    vision = model.config.vision_config
    n_img = (vision.image_size // vision.patch_size) ** 2
    image_id, vocab = model.config.image_token_id, model.config.text_config.vocab_size
    if vocab == VOCAB_SIZE:  # the tiny tokenizer's ids
        first, image_id, bos = len(SPECIAL_TOKENS), TOKEN_ID["<image>"], BOS_ID
    else:  # a real vocabulary: ordinary tokens above its specials
        first, bos = 100, model.config.text_config.bos_token_id or 1
    g = torch.Generator().manual_seed(0)
    text = torch.randint(first, vocab, (BATCH, SEQ - 1 - n_img), generator=g)
    prefix = torch.tensor([bos] + [image_id] * n_img).expand(BATCH, -1)
    ids = torch.cat([prefix, text], 1)
    labels = ids.clone()
    labels[:, : 1 + n_img] = -100
    pixels = torch.rand(BATCH, 3, vision.image_size, vision.image_size, generator=g) * 2 - 1
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": pixels,
        "labels": labels,
    }


def write_data(folder: Path) -> Path:
    import json

    from compressor.tiny import tiny_images

    folder.mkdir(parents=True)
    tiny_images(1, size=16)[0].save(folder / "0.png")
    row = {
        "images": ["0.png"],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        ],
    }
    (folder / "data.jsonl").write_text(json.dumps(row) + "\n")
    return folder


def real_processor():
    from compressor.reference import BuildConfig, language_model, processor_for

    return processor_for(language_model(), BuildConfig())


def sessions(size: str, root: Path):
    from compressor.plan import count_params
    from compressor.recover import prepare
    from compressor.recover.config import parse_recover
    from compressor.tiny import build_processor

    teacher = build(size)
    teacher_dir, student_dir = root / f"{size}-teacher", root / f"{size}-student"
    teacher.save_pretrained(teacher_dir)
    processor = real_processor() if size == "real" else build_processor("llava")
    processor.save_pretrained(teacher_dir)
    student = build(size)
    from compressor.arch import spec_for

    spec, _ = spec_for(student.config)
    before = count_params(student, spec)["backbone"]
    prune_width(student, round_to=8 if size == "tiny" else 64)
    after = count_params(student, spec)["backbone"]
    student.save_pretrained(student_dir)
    processor.save_pretrained(student_dir)
    data = str(write_data(root / f"{size}-data"))
    sft = {
        "per_device_train_batch_size": BATCH,
        "activation_checkpointing": False,
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_pin_memory": False,
    }

    def make(name: str, **fields):
        cfg = parse_recover({"mode": "full", "fraction": 1.0, "max_steps": 1, "sft": sft, **fields})
        s = prepare(student_dir, teacher_dir, cfg, data, root / f"{size}-{name}")
        s.trainer.create_optimizer()
        s.trainer.current_gradient_accumulation_steps = 1  # normally set by the training loop
        s.trainer.model.train()
        return s

    built = {
        "sft": make("sft", loss={"ce": 1.0}),
        "kd": make("kd"),
        "kd_no_share": make("kd_no_share", share_vision=False),
    }
    info = {
        "teacher": sum(p.numel() for p in teacher.parameters()),
        "student": sum(p.numel() for p in built["sft"].student.parameters()),
        "backbone": (before, after),
    }
    return built, info


def timers(built, batch):
    import torch

    labels = batch["labels"]
    n_items = (labels[:, 1:] != -100).sum()
    plain = {k: v for k, v in batch.items() if k != "labels"}
    teacher = built["kd"].teacher.eval()
    vision = teacher.model

    def step(session):
        trainer = session.trainer

        def run():
            trainer.training_step(trainer.model, dict(batch), n_items)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)

        return run

    @torch.no_grad()
    def teacher_full():
        teacher(**plain, output_hidden_states=True, use_cache=False)

    @torch.no_grad()
    def teacher_backbone():
        teacher.model(**plain, use_cache=False)

    @torch.no_grad()
    def vision_tower():
        vision.get_image_features(pixel_values=batch["pixel_values"])

    return {
        "sft": step(built["sft"]),
        "kd": step(built["kd"]),
        "kd_no_share": step(built["kd_no_share"]),
        "teacher_full": teacher_full,
        "teacher_backbone": teacher_backbone,
        "vision": vision_tower,
    }


def measure(fns) -> dict[str, list[float]]:
    for fn in fns.values():
        for _ in range(WARMUP):
            fn()
    times: dict[str, list[float]] = {op: [] for op in OPS}
    for r in range(ROUNDS):
        order = OPS[r % len(OPS) :] + OPS[: r % len(OPS)]  # rotate so no operation always runs first
        for op in order:
            start = time.perf_counter()
            fns[op]()
            times[op].append(time.perf_counter() - start)
    return times


def report(size: str, info, times) -> None:
    mn = {op: min(t) for op, t in times.items()}
    md = {op: statistics.median(t) for op, t in times.items()}
    b0, b1 = info["backbone"]
    print(
        f"\n## {size}: teacher {info['teacher'] / 1e6:.2f} M params, student {info['student'] / 1e6:.2f} M "
        f"(backbone {b0 / 1e6:.2f} M -> {b1 / 1e6:.2f} M, -{1 - b1 / b0:.0%}); batch {BATCH} x "
        f"{len(times['sft'])} interleaved rounds"
    )
    rows = [
        ("(a) SFT step: fwd + bwd + AdamW, CE (TRL fused head)", "sft"),
        ("(b) teacher fwd, full model + LM head, all hidden states", "teacher_full"),
        ("(b') teacher backbone only (what the trainer runs)", "teacher_backbone"),
        ("(v) vision tower + projector fwd (shared per batch)", "vision"),
        ("(c) distillation step, 0.5 CE + 0.5 hidden MSE, shared vision", "kd"),
        ("(c') same, each model runs its own vision tower", "kd_no_share"),
    ]
    print("| what | min ms | median ms | ratio to (a), min / median |")
    print("| --- | --- | --- | --- |")
    for label, op in rows:
        ratio = f"{mn[op] / mn['sft']:.2f} / {md[op] / md['sft']:.2f}"
        print(f"| {label} | {mn[op] * 1e3:.1f} | {md[op] * 1e3:.1f} | {ratio} |")
    per_round = statistics.median(k / s for k, s in zip(times["kd"], times["sft"]))
    print(
        f"| floor 1 + (b)/(a) | | | {1 + mn['teacher_full'] / mn['sft']:.2f} / {1 + md['teacher_full'] / md['sft']:.2f} |"
    )
    print(
        f"| floor 1 + (b')/(a) | | | {1 + mn['teacher_backbone'] / mn['sft']:.2f} / "
        f"{1 + md['teacher_backbone'] / md['sft']:.2f} |"
    )
    print(f"| median of per-round (c)/(a) | | | {per_round:.2f} |")
    saved = md["kd_no_share"] - md["kd"]
    print(
        f"vision sharing saves {saved * 1e3:.1f} ms per step (median), {saved / md['kd_no_share']:.1%} of the "
        f"unshared distillation step; the vision tower alone takes {md['vision'] * 1e3:.1f} ms"
    )


def main() -> int:
    import logging

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("compressor").setLevel(logging.WARNING)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, transformers {transformers.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in sys.argv[1:] or ("tiny", "30M"):
            built, info = sessions(size, Path(tmp))
            batch = inputs_for(built["sft"].student)
            report(size, info, measure(timers(built, batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
