"""GPU check: the whole prune → recover → reload path in bf16 at the seed's scale, one table, loud on any error.

What it runs, on each model:
- **LLaVA-1.5-7B at its real shape** (CLIP ViT-L/14-336 + Llama-2-7B text, 576 image tokens) from a config written
  here, with random bf16 weights: no download. It proves memory and time, not quality: a 7B teacher (14 GB) and
  its 30 %-pruned ≈ 5 B student fit one 80–140 GB card. `--quick`: the same shape with 8 of the 32 decoder layers
  (≈ 2 B, for 24–48 GB cards). `--tiny`: compressor's tiny LLaVA (seconds, on the CPU; what the tests run).
- **the real SmolLM2 LLaVA** (`compressor reference build`) from the study's cache, when it is built there.

Stages per model (each row: seconds, peak GPU memory against the weights' size):
1. build + save the original (bf16 safetensors, processor);
2. prune in bf16 by 30 %: depth with block influence, width with Taylor, on 10 calibration samples of
   576 image + 128 text tokens (the seed's Taylor setting);
3. recover the width student for `--steps` (20) optimiser steps in each mode — projector, lora, full (full only
   where its fp32 master weights + AdamW states fit the free memory; the row says so otherwise) — with
   0.5·CE + 0.5·hidden-MSE against the teacher, bf16 compute, fp32 trainable weights; tokens/s of recovery;
4. reload each saved checkpoint in bf16 and require identical logits to the trained model, and bf16 files;
5. decode speed (greedy, KV cache) original vs the depth and width students;
6. `plan --speed` in bf16: the 30 % width shape against depth at the same ratio, batch 1 and 8, random weights;
7. one lmms-eval task through the bridge (`make lmms` once): POPE's, on 64 POPE-shaped local rows (8 with
   `--tiny`), the original against the width student, in bf16 on the device (`--no-lmms` skips it).

Run: `python benchmarks/gpu_check.py` (≤ 9 minutes on one H100/H200), `--quick` for smaller cards,
`--device cpu --tiny` on a machine without a GPU. `--out DIR` keeps the folders and writes `gpu_check.json`.
Any failure raises: the exit status is non-zero and nothing is reported as passed.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RATIO = 0.3
SAMPLES = 10
TEXT_TOKENS = 128


@dataclass
class Row:
    model: str
    stage: str
    seconds: float | None = None
    peak_gb: float | None = None
    weights_gb: float | None = None
    tokens_per_s: float | None = None
    note: str = ""


class Check:
    def __init__(self, device: str) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.rows: list[Row] = []

    @contextmanager
    def stage(self, model: str, stage: str, weights_bytes: int | None = None, **extra: Any):
        """Time a stage and record its peak GPU memory; the caller may fill `row` further."""
        import torch

        row = Row(model, stage, weights_gb=None if weights_bytes is None else weights_bytes / 1e9, **extra)
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        yield row
        if self.cuda:
            torch.cuda.synchronize(self.device)
            row.peak_gb = torch.cuda.max_memory_allocated(self.device) / 1e9
        row.seconds = time.perf_counter() - start
        self.rows.append(row)
        print(_line(row), flush=True)

    def free_bytes(self) -> int | None:
        import torch

        return torch.cuda.mem_get_info(self.device)[0] if self.cuda else None


def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


HEADER = f"{'model':<16} {'stage':<28} {'s':>8} {'peak GB':>8} {'weights GB':>10} {'tok/s':>9}  note"


def _line(r: Row) -> str:
    return (
        f"{r.model:<16} {r.stage:<28} {_fmt(r.seconds, '8.1f')} {_fmt(r.peak_gb, '8.2f')} "
        f"{_fmt(r.weights_gb, '10.3f')} {_fmt(r.tokens_per_s, '9.1f')}  {r.note}"
    )


def _free(*objs: Any) -> None:
    import torch

    del objs
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- the models


def llava_config(layers: int | None = None):
    """LLaVA-1.5-7B's config (llava-hf/llava-1.5-7b-hf), written here; `layers` shortens the decoder."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    from compressor import tiny

    text = LlamaConfig(
        vocab_size=32064,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=layers or 32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        pad_token_id=tiny.PAD_ID,
    )
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )
    return LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=tiny.TOKEN_ID["<image>"],  # the tokenizer used here is compressor's byte-level one
        image_seq_length=576,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        pad_token_id=tiny.PAD_ID,
    )


def llava_processor(config):
    import transformers as tf

    from compressor import tiny

    side = config.vision_config.image_size
    images = tf.CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return tf.LlavaProcessor(
        image_processor=images,
        tokenizer=tiny.build_tokenizer("llava"),
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tiny.chatml_template()
        if hasattr(tiny, "chatml_template")
        else tiny._chat_template("llava"),
    )


def build_original(check: Check, name: str, shape: str, folder: Path) -> dict[str, Any]:
    """Write the original model (random bf16 weights) and its processor into `folder`."""
    import torch
    from transformers import AutoModelForImageTextToText

    from compressor import tiny

    if shape == "tiny":
        config, processor = tiny.tiny_config("llava"), tiny.build_processor("llava")
    else:
        config = llava_config(8 if shape == "quick" else None)
        processor = llava_processor(config)
    with check.stage(name, "build + save original") as row:
        torch.manual_seed(0)
        with torch.device(check.device):
            model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        row.weights_gb = _weights(model) / 1e9
        n = _params(model)
        row.note = (f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M") + " params, bf16"
    _free(model)
    return {"folder": folder, "image_size": config.vision_config.image_size}


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _weights(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# ---------------------------------------------------------------------------- data


def calibration(processor, config, image_size: int, text_tokens: int, samples: int = SAMPLES):
    """`samples` single-image batches: the image's placeholder tokens + `text_tokens` text tokens, with labels."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    batches = []
    for _ in range(samples):
        image = Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8), "RGB")
        text = "<image>" + "".join(chr(97 + int(c)) for c in rng.integers(0, 26, text_tokens))
        enc = processor(images=[image], text=[text], return_tensors="pt")
        labels = enc["input_ids"].clone()
        labels[labels == config.image_token_id] = -100
        batches.append({**enc, "labels": labels})
    return batches


def write_rows(folder: Path, n: int, image_size: int, answer_chars: int) -> Path:
    """`n` training rows (TRL conversational vision format) with random pictures and ~`answer_chars` answers."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8), "RGB").save(
            folder / f"img{i:04d}.png"
        )
        answer = " ".join(
            "".join(chr(97 + int(c)) for c in rng.integers(0, 26, 7)) for _ in range(answer_chars // 8)
        )
        lines.append(
            json.dumps(
                {
                    "images": [f"img{i:04d}.png"],
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}],
                        },
                        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                    ],
                }
            )
        )
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    return folder


# ---------------------------------------------------------------------------- stages


def prune_both(
    check: Check, name: str, original: Path, work: Path, text_tokens: int, tiny: bool
) -> dict[str, Path]:
    """Depth (block influence) and width (Taylor) students of `original`, pruned in bf16 on the device."""
    from compressor import prune
    from compressor.arch import spec_for
    from compressor.models import load_model, load_processor, save_model
    from compressor.plan import resolve
    from compressor.recipe import Prune

    config = json.loads((original / "config.json").read_text())
    spec, backbone = spec_for(config)
    processor = load_processor(original)
    out = {}
    for method, scorer in (("depth", "block_influence"), ("width", "taylor")):
        with check.stage(name, f"prune {method} ({scorer})") as row:
            model = load_model(original, spec, "bfloat16", device_map={"": str(check.device)})
            size = json.loads((original / "config.json").read_text())["vision_config"]["image_size"]
            batches = calibration(processor, model.config, size, text_tokens)
            recipe = Prune(method=method, ratio=RATIO, scorer=scorer, **({"round_to": 8} if tiny else {}))
            plan = resolve(config, spec, backbone, recipe)
            report = prune.apply(model, spec, backbone, plan, batches, progress=lambda it, _d: it)
            folder = work / f"{method}"
            save_model(model, processor, folder)
            (folder / "prune_report.json").write_text(report.model_dump_json())
            row.weights_gb = _weights(model) / 1e9
            row.note = f"{plan.achieved_ratio:.1%} of the backbone removed, {SAMPLES} samples"
        _require_bf16(folder)
        out[method] = folder
        _free(model)
    return out


def _require_bf16(folder: Path) -> None:
    from safetensors import safe_open

    for file in folder.glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            bad = {str(f.get_slice(k).get_dtype()) for k in f.keys()} - {"BF16"}  # noqa: SIM118
        if bad:
            raise SystemExit(f"FAIL: {file} holds {sorted(bad)} tensors; the source is bf16")
    dtype = json.loads((folder / "config.json").read_text()).get("dtype")
    if dtype != "bfloat16":
        raise SystemExit(f"FAIL: {folder}/config.json says dtype {dtype}, the source is bfloat16")


def full_fits(check: Check, student: Path, teacher: Path) -> tuple[bool, str]:
    """Whether full mode fits: fp32 masters + grads + AdamW (16 B/param) + the bf16 teacher + 20 % headroom."""
    import torch

    from compressor.models import weights_bytes

    free = check.free_bytes()
    need = weights_bytes(student, torch.float32) * 4 + weights_bytes(teacher, torch.bfloat16)
    if free is None:
        return True, ""
    if need * 1.2 > free:
        return False, f"skipped: full needs ≈{need / 1e9:.0f} GB, {free / 1e9:.0f} GB free"
    return True, ""


def recover_modes(check: Check, name: str, student: Path, teacher: Path, work: Path, steps: int, tiny: bool):
    import torch
    from accelerate.utils import extract_model_from_parallel
    from transformers import AutoModelForImageTextToText

    from compressor.models import weights_bytes
    from compressor.recover import prepare
    from compressor.recover.config import parse_recover

    size = json.loads((student / "config.json").read_text())["vision_config"]["image_size"]
    batch = 2 if tiny else 4
    data = write_rows(work / "data", steps * batch, size, 32 if tiny else TEXT_TOKENS)
    for mode in ("projector", "lora", "full"):
        if mode == "full":
            fits, why = full_fits(check, student, teacher)
            if not fits:
                check.rows.append(Row(name, "recover full", note=why))
                print(_line(check.rows[-1]), flush=True)
                continue
        cfg = parse_recover(
            {
                "mode": mode,
                "loss": {"ce": 0.5, "hidden_mse": 0.5},
                "fraction": 1.0,
                "max_steps": steps,
                "seed": 0,
                "student_dtype": "bfloat16",
                "teacher_dtype": "bfloat16",
                "sft": {
                    "per_device_train_batch_size": batch,
                    "gradient_accumulation_steps": 1,
                    "learning_rate": 2e-5,
                    "logging_steps": 1,
                    "save_strategy": "no",
                    "max_length": 1024,
                    "dataloader_pin_memory": False,
                    "disable_tqdm": True,
                },
            }
        )
        out = work / f"recovered-{mode}"
        with check.stage(
            name, f"recover {mode} ({steps} steps)", weights_bytes(student, torch.bfloat16)
        ) as row:
            session = prepare(student, teacher, cfg, str(data), out, overwrite=True)
            report = session.finish()
            tokens = max((e.get("num_tokens", 0.0) for e in report.losses), default=0.0)
            row.tokens_per_s = tokens / report.seconds if report.seconds else None  # image + text tokens
            row.note = (
                f"loss {report.final_loss:.3g}, trainable {report.trainable['trainable_params'] / 1e6:.1f} M "
                f"{report.precision['trainable_dtypes']}, frozen {report.precision['frozen_dtypes']}, "
                f"saved {report.precision['saved']}"
            )
        if report.steps != steps:
            raise SystemExit(f"FAIL: recover {mode} ran {report.steps} steps, not {steps}")
        if report.precision["trainable_dtypes"] != ["float32"]:
            raise SystemExit(f"FAIL: recover {mode} trained {report.precision['trainable_dtypes']} weights")
        _require_bf16(out)
        with check.stage(name, f"reload {mode} in bf16") as row:
            trained = extract_model_from_parallel(session.student, keep_fp32_wrapper=False).eval()
            reloaded = AutoModelForImageTextToText.from_pretrained(
                out, dtype=torch.bfloat16, device_map={"": str(check.device)}
            ).eval()
            inputs = calibration(session.processor, reloaded.config, size, 16, samples=1)[0]
            inputs = {k: v.to(check.device) for k, v in inputs.items() if k != "labels"}
            with torch.no_grad():
                a = trained(**inputs, use_cache=False).logits
                b = reloaded(**inputs, use_cache=False).logits
            diff = (a.float() - b.float()).abs().max().item()
            row.note = f"max |Δlogit| {diff:.3g}"
        if a.dtype != b.dtype or diff != 0.0:
            raise SystemExit(
                f"FAIL: {out} reloads with different logits ({a.dtype} vs {b.dtype}, max diff {diff})"
            )
        _free(session, trained, reloaded, a, b)


def decode_speed(check: Check, name: str, folders: dict[str, Path], new_tokens: int) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    from compressor.evaluate.speed import timed_generate

    ids = torch.randint(10, 200, (1, 32), generator=torch.Generator().manual_seed(0))
    base = None
    for label, folder in folders.items():
        model = AutoModelForImageTextToText.from_pretrained(
            folder, dtype=torch.bfloat16, device_map={"": str(check.device)}
        ).eval()
        timed_generate(model, ids, 2, model.config.text_config.pad_token_id)  # warm-up
        with check.stage(name, f"decode {label}", _weights(model)) as row:
            seconds = timed_generate(model, ids, new_tokens, model.config.text_config.pad_token_id)
            row.tokens_per_s = new_tokens / seconds
            base = base or row.tokens_per_s
            row.note = f"{new_tokens} new tokens, batch 1, {row.tokens_per_s / base:.2f}x the original"
        _free(model)


def speed_probe(check: Check, name: str, original: Path) -> None:
    """`plan --speed` in bf16 on this device: the 30 % width plan against depth at the same ratio, batch 1 and 8."""
    from compressor import speed_probe as probe_
    from compressor.arch import spec_for
    from compressor.plan import resolve
    from compressor.recipe import Prune

    config = json.loads((original / "config.json").read_text())
    spec, backbone = spec_for(config)
    prune = Prune(method="width", ratio=RATIO, scorer="magnitude")
    plan = resolve(config, spec, backbone, prune)
    with check.stage(name, "plan --speed (bf16)") as row:
        got = probe_.probe(config, spec, backbone, plan, prune, dtype="bfloat16", device=str(check.device))
        planned, alt = got.rows[1], got.rows[2]
        row.tokens_per_s = planned.tokens_per_s[1]
        row.note = "; ".join(
            f"{r.label} {r.speedup[1]:.2f}x / {r.speedup[8]:.2f}x at batch 1 / 8 (ideal {r.ideal:.2f}x)"
            for r in (planned, alt)
        )


def pope_parquet(folder: Path, n: int, image_size: int) -> Path:
    """`n` POPE-shaped rows (question_id, question, answer, category, image), balanced yes/no, random pictures."""
    import numpy as np
    from PIL import Image

    from compressor.evaluate.lmms import write_pope

    rng = np.random.default_rng(2)
    rows = [
        {
            "question_id": str(i),
            "question": f"Is there a {('cat', 'dog')[i % 4 // 2]} in the image?",
            "answer": ("yes", "no")[i % 2],
            "category": "random",
            "image": Image.fromarray(
                rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8), "RGB"
            ),
        }
        for i in range(n)
    ]
    return write_pope(rows, folder / "pope.parquet")


def lmms_pope(check: Check, name: str, original: Path, student: Path, work: Path, rows: int) -> None:
    """One lmms-eval task (POPE's, on a local POPE-shaped parquet) on the original and the width student, through the
    bridge: lmms-eval's llava_hf in bf16 on this device, both models' scores and retained %."""
    from compressor.evaluate import Evaluate, LmmsEval, run
    from compressor.evaluate.lmms import check_installed

    size = json.loads((original / "config.json").read_text())["vision_config"]["image_size"]
    cfg = LmmsEval(
        tasks=["pope"],
        max_new_tokens=4,
        datasets={"pope": str(pope_parquet(work / "pope", rows, size))},
        output_dir=str(work / "lmms-eval"),
    )
    check_installed(cfg)  # `make lmms` once; else this stage fails, saying so
    with check.stage(name, f"lmms-eval pope ({rows} rows, bf16)") as row:
        report = run(
            original,
            student,
            Evaluate(speed=False, lmms_eval=cfg),
            device=str(check.device),
            dtype="bfloat16",
        )
        (pope,) = report.tasks
        acc, f1 = pope.metrics["pope_accuracy"], pope.metrics["pope_f1_score"]
        row.note = (
            f"lmms-eval {report.versions['lmms_eval']}: accuracy {acc.original:.3f} / {acc.compressed:.3f}, "
            f"F1 {f1.original:.3f} / {f1.compressed:.3f} (original / width), {pope.samples} samples"
        )


def check_model(check: Check, name: str, original: Path, work: Path, args) -> None:
    students = prune_both(check, name, original, work, 16 if args.tiny else TEXT_TOKENS, args.tiny)
    recover_modes(check, name, students["width"], original, work, args.steps, args.tiny)
    decode_speed(check, name, {"original": original, **students}, 8 if args.tiny else 64)
    speed_probe(check, name, original)
    if not args.no_lmms:
        lmms_pope(check, name, original, students["width"], work, 8 if args.tiny else 64)


def reference_model() -> Path | None:
    """The study's real SmolLM2 LLaVA, when `compressor reference build` has put it in the cache."""
    try:
        from compressor.reference import find_reference

        return find_reference().model
    except Exception as err:  # not built, or the module is missing in this checkout
        print(f"# the real SmolLM2 LLaVA is not available: {str(err).splitlines()[0][:160]}", flush=True)
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (the default: this process's GPU) or cpu")
    p.add_argument("--tiny", action="store_true", help="compressor's tiny LLaVA instead of the 7B shape")
    p.add_argument("--quick", action="store_true", help="LLaVA-1.5-7B's shape with 8 decoder layers (≈2 B)")
    p.add_argument("--steps", type=int, default=20, help="recovery steps per mode")
    p.add_argument("--no-reference", action="store_true", help="skip the real SmolLM2 LLaVA")
    p.add_argument("--no-lmms", action="store_true", help="skip the lmms-eval stage (it needs `make lmms`)")
    p.add_argument("--out", type=Path, help="keep the folders here and write gpu_check.json")
    args = p.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("FAIL: no GPU is visible; pass --device cpu --tiny to check the path on the CPU")
    check = Check(args.device)
    work = args.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(
        f"# device {check.device}" + (f" ({torch.cuda.get_device_name(check.device)})" if check.cuda else "")
    )
    print(HEADER, flush=True)
    try:
        shape = "tiny" if args.tiny else "quick" if args.quick else "7b"
        name = {"tiny": "tiny-llava", "quick": "llava-7b-8L", "7b": "llava-1.5-7b"}[shape]
        built = build_original(check, name, shape, work / name / "original")
        check_model(check, name, built["folder"], work / name, args)
        ref = None if args.no_reference else reference_model()
        if ref is not None:
            check_model(check, "smollm2-llava", ref, work / "smollm2-llava", args)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - start
    print()
    print(HEADER)
    for r in check.rows:
        print(_line(r))
    print(f"# all stages passed in {total:.0f} s")
    if args.out is not None:
        (args.out / "gpu_check.json").write_text(
            json.dumps(
                {"device": str(check.device), "seconds": total, "rows": [asdict(r) for r in check.rows]},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
