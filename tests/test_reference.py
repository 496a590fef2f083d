"""The reference MLLM's build path, end to end with a tiny random LM standing in for SmolLM2.

The real build (`make reference`: the real SmolLM2-135M-Instruct, ~40 min on 2 cores) is not run here; every
step of its code path is: a tiny Llama written as a GGUF file by the `gguf` package (F32, with llama.cpp's
q/k row permutation) is converted back, the LLaVA is assembled around it, trained through stages 0-2 on a
miniature easy-VQA folder of the package's layout, scored, carded, cached, and a study cell runs on it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>"]  # SmolLM2's first four tokens
SHAPE = {"hidden": 64, "ffn": 128, "layers": 4, "heads": 4, "kv": 2, "head_dim": 16}


def _permute(w, n_head: int):
    """llama.cpp's row order for q/k projections (transformers undoes it when it loads a GGUF)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, seed: int = 0):
    """A tiny Llama (tied embeddings, GQA) as an F32 GGUF with a byte-level tokenizer; returns the HF model."""
    import gguf
    import numpy as np
    import torch
    from tokenizers import pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    toks = SPECIAL + sorted(pre_tokenizers.ByteLevel.alphabet())
    s = SHAPE
    config = LlamaConfig(
        vocab_size=len(toks),
        hidden_size=s["hidden"],
        intermediate_size=s["ffn"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv"],
        head_dim=s["head_dim"],
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(256)
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["ffn"])
    w.add_embedding_length(s["hidden"])
    w.add_rope_dimension_count(s["head_dim"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(toks))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_types([gguf.TokenType.CONTROL] * len(SPECIAL) + [gguf.TokenType.NORMAL] * (len(toks) - 4))
    w.add_token_merges([])
    w.add_token_scores([0.0] * len(toks))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    names = {
        "attn_norm": "input_layernorm",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], s["heads"]))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], s["kv"]))
        for ours, theirs in names.items():
            w.add_tensor(f"blk.{i}.{ours}.weight", sd[p + theirs + ".weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


def write_tiny_easy_vqa(root: Path, seed: int = 0) -> Path:
    """easy-VQA's package layout (split/images/N.png + split/questions.json of [question, answer, image])."""
    from PIL import Image, ImageDraw

    from compressor.reference import COLORS

    rng = random.Random(seed)
    palette = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "black": (0, 0, 0)}
    for split, n in (("train", 12), ("test", 8)):
        (root / split / "images").mkdir(parents=True)
        questions = []
        for i in range(n):
            color, shape = rng.choice(sorted(palette)), rng.choice(["circle", "rectangle"])
            img = Image.new("RGB", (64, 64), (255, 255, 255))
            draw = ImageDraw.Draw(img)
            (draw.ellipse if shape == "circle" else draw.rectangle)((10, 10, 50, 50), fill=palette[color])
            img.save(root / split / "images" / f"{i}.png")
            other = rng.choice([c for c in COLORS if c != color])
            questions += [
                ["what color is the shape?", color, i],
                ["what shape is in the image?", shape, i],
                [f"is there a {other} shape?", "no", i],
                [f"is there a {color} shape in the image?", "yes", i],
            ]
        (root / split / "questions.json").write_text(json.dumps(questions))
    return root


def test_yes_no_question_kinds_and_a_stream_without_their_answer_prior():
    """Each easy-VQA negation form is read as negated; `by_kind` draws the kinds evenly whatever the data's
    prior, and the default stream (what v1 and v2 were built on) still draws yes/no questions as one pool."""
    import collections

    from compressor.reference import _balanced, question_kind

    assert question_kind("does the image contain a circle?", "no") == "shape, plain, no"
    assert question_kind("is no red shape present?", "yes") == "colour, negated, yes"
    assert question_kind("is there not a triangle in the image?", "yes") == "shape, negated, yes"
    assert question_kind("does the image not contain a gray shape?", "no") == "colour, negated, no"
    assert question_kind("is a teal shape present?", "yes") == "colour, plain, yes"

    def row(q, a):
        return {
            "images": ["images/0.png"],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q + "\nAnswer."}]},
                {"role": "assistant", "content": [{"type": "text", "text": a}]},
            ],
        }

    # a skewed mix, like easy-VQA's: negated colour questions are mostly "yes", plain ones mostly "no"
    rows = [row("is there not a red shape?", "yes")] * 45 + [row("is there not a red shape?", "no")] * 5
    rows += [row("is there a red shape?", "no")] * 45 + [row("is there a red shape?", "yes")] * 5
    rows += [row("what color is the shape?", "red")] * 50
    rng = random.Random(0)
    drawn = [next(s) for s in [_balanced(rows, rng, yes_no_share=1.0, by_kind=True)] for _ in range(2000)]
    kinds = collections.Counter(question_kind(q, a) for _, q, a in drawn)
    assert len(kinds) == 4 and all(450 <= n <= 550 for n in kinds.values()), kinds
    pooled = collections.Counter(
        question_kind(q, a) for _, q, a in (next(s) for s in [_balanced(rows, rng, 1.0)] for _ in range(2000))
    )
    assert (
        pooled["colour, negated, yes"] > 5 * pooled["colour, negated, no"]
    )  # the data's prior, as v2 saw it
    mixed = [a for _, _, a in (next(s) for s in [_balanced(rows, rng)] for _ in range(2000))]
    assert 850 <= sum(a == "red" for a in mixed) <= 1150  # half open questions by default


def test_minimal_pairs_differ_only_in_the_word_that_decides_the_answer():
    """Each yes/no question comes beside its twin: same picture, same wording, the picture's own colour (or
    shape) in one and another in the other, with opposite answers that the picture's labels decide."""
    import collections
    import re

    from compressor.reference import COLORS, SHAPES, _minimal_pairs, question_kind

    def row(image, q, a):
        return {
            "images": [image],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q + "\nAnswer."}]},
                {"role": "assistant", "content": [{"type": "text", "text": a}]},
            ],
        }

    truth = {"a.png": ("red", "circle"), "b.png": ("teal", "triangle"), "c.png": ("gray", "rectangle")}
    rows = []
    for image, (color, shape) in truth.items():
        rows += [row(image, "what color is the shape?", color), row(image, "what shape is this?", shape)]
    # the data's yes/no questions only lend their wording: all "no" here, and about other pictures
    rows += [row("a.png", "is there not a blue shape?", "yes"), row("b.png", "is a circle present?", "no")]
    rows += [row("c.png", "is there a green shape in the image?", "no")]
    stream = _minimal_pairs(rows, random.Random(0), yes_no_share=1.0)
    drawn = [next(stream) for _ in range(2000)]
    words = re.compile(r"\b(" + "|".join(COLORS + SHAPES) + r")\b")
    kinds = collections.Counter()
    for (img1, q1, a1), (img2, q2, a2) in zip(drawn[::2], drawn[1::2]):
        assert img1 == img2 and words.sub("_", q1) == words.sub("_", q2) and q1 != q2, (q1, q2)
        assert {a1, a2} == {"yes", "no"}
        for q, a in ((q1, a1), (q2, a2)):
            named = words.search(q).group(1)
            own = truth[img1][1] if named in SHAPES else truth[img1][0]
            negated = "negated" in question_kind(q, a)
            assert a == ("yes" if (named == own) != negated else "no"), (img1, q, a)
            kinds[question_kind(q, a)] += 1
    assert len(kinds) == 6  # colour plain/negated and shape plain, each yes and no
    assert kinds["colour, negated, yes"] == kinds["colour, negated, no"]
    opened = [
        a for _, _, a in (next(s) for s in [_minimal_pairs(rows, random.Random(1), 0.0)] for _ in range(50))
    ]
    assert set(opened) <= {"red", "teal", "gray", "circle", "triangle", "rectangle"} and len(set(opened)) > 3


def test_gguf_converts_to_a_plain_checkpoint_with_equal_logits(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compressor.reference import convert_gguf

    original = write_tiny_gguf(tmp_path / "tiny.gguf")
    out = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "converted")
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(out.glob("*.bin")) and not list(out.glob("*.gguf"))
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("what color is the shape?<|im_end|>", return_tensors="pt")["input_ids"]
    assert ids[0, -1] == 2 and ids.shape[1] > 10
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)


def test_assembled_llava_keeps_the_language_model_exactly(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from compressor.reference import IMAGE_TOKEN, IMAGE_TOKEN_ID, BuildConfig, assemble, convert_gguf

    write_tiny_gguf(tmp_path / "tiny.gguf")
    lm_dir = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "lm")
    model, processor = assemble(lm_dir, BuildConfig(image_size=32, vision_hidden=32, vision_layers=1))
    bare = AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) == IMAGE_TOKEN_ID and len(tok) == bare.config.vocab_size
    ids = tok("a text-only prompt", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids).logits, bare(ids).logits)
    # an image row expands to the vision tower's patch count (CLS dropped)
    from PIL import Image

    enc = processor(text=["<image>hi"], images=[Image.new("RGB", (64, 64))], return_tensors="pt")
    assert int((enc["input_ids"] == IMAGE_TOKEN_ID).sum()) == (32 // 16) ** 2


def test_reference_build_end_to_end_and_a_study_cell_on_it(tmp_path, caplog):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from compressor.reference import BuildConfig, build, find_reference
    from compressor.study import load_study, run_study

    write_tiny_gguf(tmp_path / "tiny.gguf")
    easy = write_tiny_easy_vqa(tmp_path / "easy_vqa")
    cfg = BuildConfig(
        image_size=32,
        vision_hidden=32,
        vision_layers=1,
        stage0_epochs=1,
        stage1_steps=2,
        stage2_steps=2,
        stage3_steps=0,
        batch_size=4,
        eval_open=4,
        eval_yes_no=4,
        ppl_texts=2,
        ppl_tokens=32,
    )
    ref = build(tmp_path / "ref", cfg, gguf=tmp_path / "tiny.gguf", easy_vqa=easy)
    assert find_reference(tmp_path / "ref").root == ref.root
    assert not [p for p in tmp_path.iterdir() if ".build-" in p.name], (
        "the build folder is renamed into place"
    )
    report = json.loads(ref.report.read_text())
    counts = report["counts"]
    assert {k: counts[k] for k in ("train", "test_open", "test_yes_no", "heldout_text")} == {
        "train": 48,
        "test_open": 16,
        "test_yes_no": 16,
        "heldout_text": 2,
    }
    # general text (the first half of the topics, never the held-out half) and a mixed calibration set
    text_rows = [json.loads(r) for r in (ref.general_text / "data.jsonl").read_text().splitlines()]
    assert len(text_rows) == counts["general_text"] > 0 and not any(r.get("images") for r in text_rows)
    held_out = (ref.heldout_text / "data.jsonl").read_text()
    assert all(r["messages"][1]["content"][0]["text"] not in held_out for r in text_rows[:50])
    mixed = [json.loads(r) for r in (ref.mixed_calibration / "data.jsonl").read_text().splitlines()]
    assert counts["mixed_calibration"] == len(mixed) == 2 * min(48, len(text_rows))
    assert [bool(r.get("images")) for r in mixed[:4]] == [True, False, True, False]
    assert (ref.mixed_calibration / mixed[0]["images"][0]).is_file()
    assert [report["stages"][s]["steps"] for s in ("stage1_projector", "stage2_finetune")] == [2, 2]
    assert "dequantised from the Q4_1 GGUF" in report["language_model"]
    assert report["heldout_perplexity"]["bare_lm"] > 1 and report["heldout_perplexity"]["after_stage2"] > 1
    card = (ref.model / "README.md").read_text()
    for line in ("| open (colour, shape) | 4 |", "| yes/no | 4 |", "Held-out perplexity", "Whole build:"):
        assert line in card
    model = AutoModelForImageTextToText.from_pretrained(ref.model)
    processor = AutoProcessor.from_pretrained(ref.model)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert "{%- generation -%}" in processor.chat_template  # assistant-only loss in TRL
    rows = (ref.train / "data.jsonl").read_text().splitlines()
    first = json.loads(rows[0])
    assert (ref.train / first["images"][0]).is_file() and first["messages"][1]["role"] == "assistant"
    assert torch.isfinite(model(**processor(text=["hi"], return_tensors="pt")).logits).all()
    # the card's yes/no sample by kind (benchmarks/reference_yes_no.py): every question counted once
    from compressor.reference import yes_no_breakdown

    kinds = yes_no_breakdown(model, processor, ref, 4)
    assert sum(n for _, n in kinds.values()) == 4 and all(0 <= r <= n for r, n in kinds.values())
    assert set(kinds) <= {"colour, plain, yes", "colour, plain, no"}  # the tiny data asks only those
    # benchmarks/reference_yes_no.py on it, with a one-step stage 3 on an in-memory copy: nothing written to the cache
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_yes_no.py"
    spec = importlib.util.spec_from_file_location("reference_yes_no", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in ref.model.iterdir())
    bench.main(["--root", str(ref.root), "--n", "4", "--stage3-steps", "1", "--out", str(tmp_path / "yn.md")])
    table = (tmp_path / "yn.md").read_text()
    assert "| question kind | ref | + stage 3: 1 steps" in table and "| **yes/no, all** | **" in table
    assert "by kind, lr" in table
    bench.main(
        [
            "--root",
            str(ref.root),
            "--n",
            "4",
            "--stage3-steps",
            "1",
            "--stream",
            "pairs",
            "--out",
            str(tmp_path / "yn.md"),
        ]
    )
    assert "minimal pairs, lr" in (tmp_path / "yn.md").read_text()
    assert sorted((p.name, p.stat().st_mtime_ns) for p in ref.model.iterdir()) == before
    # a training stage trains only its groups' parameters and leaves every parameter frozen
    from compressor.reference import _balanced, _train_stage, read_jsonl

    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    stream = _balanced(read_jsonl(ref.train / "data.jsonl"), random.Random(0))
    groups = [{"params": list(model.model.multi_modal_projector.parameters()), "lr": 1e-2}]
    _train_stage(model, processor, stream, ref.train, groups, 1, cfg, "test")
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, weights[n])}
    assert changed and all("multi_modal_projector" in n for n in changed)
    assert not any(p.requires_grad for p in model.parameters())

    # cached: a second build returns it untouched
    stamp = ref.report.stat().st_mtime_ns
    assert (
        build(tmp_path / "ref", cfg, gguf=tmp_path / "tiny.gguf", easy_vqa=easy).report.stat().st_mtime_ns
        == stamp
    )

    # a build with a stage 3 continues from a built one with the same first stages (v3 = v2 + stage 3): the earlier
    # folder is left as it was, the new one records where stages 0-2 were trained and what stage 3 changed
    from dataclasses import replace

    before = sorted((p.name, p.stat().st_mtime_ns) for p in ref.model.iterdir())
    ref3 = build(
        tmp_path / "ref3", replace(cfg, stage3_steps=2), after=ref, version="reference-smollm2-llava-v2"
    )
    assert sorted((p.name, p.stat().st_mtime_ns) for p in ref.model.iterdir()) == before
    report3 = json.loads(ref3.report.read_text())
    assert (
        report3["stages"]["stage3_pairs"]["steps"] == 2
        and "built_in" not in report3["stages"]["stage3_pairs"]
    )
    assert report3["stages"]["stage2_finetune"]["built_in"] == report["version"]
    assert (
        report3["continued_from"]["version"] == report["version"] and report3["config"]["stage3_steps"] == 2
    )
    assert report3["accuracy_after_stage2"] == report["accuracy"]  # the same weights, scored the same way
    assert report3["counts"] == report["counts"] and (ref3.train / "data.jsonl").is_file()
    card3 = (ref3.model / "README.md").read_text()
    assert "| 3 | projector + LM on yes/no minimal pairs, vision frozen | 2 |" in card3
    assert f"continuing from {report['version']}'s weights" in card3 and "Before stage 3: open" in card3
    reloaded = AutoModelForImageTextToText.from_pretrained(ref3.model)
    assert any(
        not torch.equal(p, dict(model.named_parameters())[n])
        for n, p in reloaded.named_parameters()
        if "language_model" in n
    ), "stage 3 trains the language model"

    # the shipped study's base recipe runs on it (one no-recovery cell, small limits)
    import yaml

    study = yaml.safe_load((Path(__file__).parent.parent / "studies" / "seed-miniature.yaml").read_text())
    study["groups"] = [{"name": "one", "set": {"recover": None, "prune.ratio": 0.5}}]
    for task in study["base"]["evaluate"]["tasks"]:
        task["limit"] = 2
    study["base"]["evaluate"]["speed_new_tokens"] = 2
    study["base"]["evaluate"]["speed_repeats"] = 1
    study["base"]["prune"]["calibration"]["num_samples"] = 2
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    out = run_study(load_study(path, {"reference": str(ref.root)}), tmp_path / "study")
    md = (out / "results.md").read_text()
    assert "| width | 50% (" in md and "Reference (original)" in md
    assert "dequantised from the Q4_1 GGUF" in md  # the weights' caveat travels into the study's tables

    # study v2 in miniature: two of its cells, recovery on VQA + general text, and calibration on text only
    v2 = yaml.safe_load((Path(__file__).parent.parent / "studies" / "seed-miniature-v2.yaml").read_text())
    by_name = {g["name"]: g for g in v2["groups"]}
    data_group, cal_group = by_name["3-recovery-data"], by_name["4-calibration"]
    data_group.update(grid={"prune.method": ["depth"]}, cells=[data_group["cells"][1]])
    cal_group.update(grid={"prune.method": ["width"]}, cells=[cal_group["cells"][1]])
    v2["groups"] = [data_group, cal_group]
    for task in v2["base"]["evaluate"]["tasks"]:
        task["limit"] = 2
    v2["base"]["evaluate"].update(speed_new_tokens=2, speed_repeats=1)
    v2["base"]["prune"]["calibration"]["num_samples"] = 2
    v2["base"]["prune"]["ratio"] = 0.5
    v2["base"]["recover"].update(max_steps=2, sft={"per_device_train_batch_size": 2, "save_steps": 1000})
    path = tmp_path / "study-v2.yaml"
    path.write_text(yaml.safe_dump(v2))
    out = run_study(load_study(path, {"reference": str(ref.root)}), tmp_path / "study-v2")
    md = (out / "results.md").read_text()
    assert "## 3-recovery-data" in md and "| depth | 50% (" in md
    assert "## 4-calibration" in md and "| width | 50% (" in md
    cells = sorted((out / "cells").iterdir())
    train = [
        json.loads((c / "reports" / "recover.json").read_text())
        for c in cells
        if (c / "reports" / "recover.json").is_file()
    ]
    assert len(cells) == 2 and len(train) == 1
    sources = train[0]["data"]["sources"]
    assert [Path(s["dataset"]).name for s in sources] == ["easyvqa-train", "general-text"]
    assert [s["weight"] for s in sources] == [3, 1] and sources[0]["share"] >= 0.7
    plan = next(
        json.loads((c / "plan.json").read_text())
        for c in cells
        if not (c / "reports" / "recover.json").is_file()
    )
    assert any("measured on text only" in w for w in plan["warnings"])


def test_each_reference_version_has_its_own_build_and_cache(tmp_path, monkeypatch):
    """v1 and v2 stay buildable (the first study pins v1); the current version is v3; an unknown one is named."""
    import pytest

    from compressor.errors import CompressorError
    from compressor.reference import REFERENCE_VERSION, build_config, cache_root, find_reference
    from compressor.study import load_study

    monkeypatch.setenv("COMPRESSOR_CACHE", str(tmp_path))
    v1 = build_config("reference-smollm2-llava-v1")
    assert (v1.stage0_epochs, v1.stage2_steps, v1.stage3_steps) == (4, 200, 0) and REFERENCE_VERSION.endswith(
        "-v3"
    )
    assert build_config().stage0_epochs > v1.stage0_epochs
    assert cache_root("reference-smollm2-llava-v1") == tmp_path / "reference-smollm2-llava-v1"
    with pytest.raises(CompressorError, match=r"reference build --version reference-smollm2-llava-v1"):
        find_reference(version="reference-smollm2-llava-v1")
    with pytest.raises(
        CompressorError, match=r"unknown reference version 'v9'; known: reference-smollm2-llava-v1"
    ):
        cache_root("v9")
    # v3 is v2 + stage 3: it continues from a cached v2 (found by their configs, not by name) and from nothing else
    from dataclasses import replace

    from compressor.reference import Reference, _earlier_build

    v3 = build_config("reference-smollm2-llava-v3")
    assert v3.stage3_steps > 0 and replace(v3, stage3_steps=0) == build_config("reference-smollm2-llava-v2")
    assert _earlier_build("reference-smollm2-llava-v3", v3) is None  # nothing built yet
    for version in ("reference-smollm2-llava-v1", "reference-smollm2-llava-v2"):
        Reference(tmp_path / version).model.mkdir(parents=True)
        Reference(tmp_path / version).report.write_text("{}")
    assert _earlier_build("reference-smollm2-llava-v3", v3).root == tmp_path / "reference-smollm2-llava-v2"
    assert _earlier_build("reference-smollm2-llava-v3", replace(v3, stage2_steps=1)) is None
    assert _earlier_build("reference-smollm2-llava-v2", build_config("reference-smollm2-llava-v2")) is None
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nreference: v9\nbase: {model: {source: x}}\ngroups: [{name: g}]\n")
    with pytest.raises(CompressorError, match="unknown reference version 'v9'"):
        load_study(study)
