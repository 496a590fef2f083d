"""The tiny model zoo: every family builds, trains, generates, saves and reloads with transformers' own classes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from compressor import tiny

FAMILIES = tiny.FAMILIES
WITH_PROCESSOR = list(FAMILIES)  # every family: those in NO_VIDEO_PROCESSOR without a video processor


def _reload_processor(family, path):
    """AutoProcessor, or compressor's loader for the families whose AutoProcessor needs torchvision."""
    from compressor.models import load_processor

    return load_processor(path) if family in tiny.NO_VIDEO_PROCESSOR else AutoProcessor.from_pretrained(path)


MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Noise."}]},
]


def _no_labels(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if k != "labels"}


@pytest.fixture(scope="module")
def models() -> dict:
    """One seed-0 model per family, built lazily and shared by this module's tests (never mutated)."""
    cache: dict = {}

    def get(family: str):
        if family not in cache:
            cache[family] = tiny.build_model(family)
        return cache[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_text_backbone_shape(family: str, models) -> None:
    model = models(family)
    text = model.config.get_text_config()
    assert (text.num_hidden_layers, text.hidden_size, text.intermediate_size) == (6, 64, 128)
    assert (text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (4, 2, 16)
    assert text.vocab_size == tiny.VOCAB_SIZE
    assert len(model.get_decoder().layers) == 6
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_gives_finite_loss(family: str, models) -> None:
    model = models(family)
    inputs = tiny.make_inputs(family, model.config, batch_size=2, text_len=8)
    image_id = model.config.image_token_id
    n_image = (inputs["input_ids"] == image_id).sum(dim=1)
    assert n_image.tolist() == [tiny.num_image_tokens(family, model.config)] * 2
    assert (inputs["labels"][inputs["input_ids"] == image_id] == -100).all()
    assert (inputs["labels"][:, -8:] == inputs["input_ids"][:, -8:]).all()
    with torch.no_grad():
        out = model(**inputs)
    assert torch.isfinite(out.loss)
    assert out.logits.shape == (*inputs["input_ids"].shape, tiny.VOCAB_SIZE)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_and_without_cache(family: str, models) -> None:
    model = models(family)
    inputs = _no_labels(tiny.make_inputs(family, model.config))
    cached = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    uncached = model.generate(**inputs, max_new_tokens=4, do_sample=False, use_cache=False)
    assert cached.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_reload_gives_identical_logits(family: str, models, tiny_saved) -> None:
    path = tiny_saved(family)
    assert list(path.glob("*.safetensors")) and not list(path.glob("*.bin"))
    reloaded = AutoModelForImageTextToText.from_pretrained(path).eval()
    model = models(family)
    assert type(reloaded) is type(model)
    inputs = _no_labels(tiny.make_inputs(family, model.config))
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)
    assert len(AutoTokenizer.from_pretrained(path)) == tiny.VOCAB_SIZE
    assert type(_reload_processor(family, path)).__name__ == type(tiny.build_processor(family)).__name__


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_weights_and_inputs(family: str, models) -> None:
    again = tiny.build_model(family, seed=0).state_dict()
    first = models(family).state_dict()
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = tiny.build_model(family, seed=1).state_dict()
    assert any(not torch.equal(first[k], other[k]) for k in first)
    config = models(family).config
    a, b = tiny.make_inputs(family, config, seed=3), tiny.make_inputs(family, config, seed=3)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_overrides(family: str) -> None:
    model = tiny.build_model(family, num_hidden_layers=2, intermediate_size=96)
    text = model.config.get_text_config()
    assert (text.num_hidden_layers, text.intermediate_size, text.hidden_size) == (2, 96, 64)
    assert len(model.get_decoder().layers) == 2
    with torch.no_grad():
        assert torch.isfinite(model(**tiny.make_inputs(family, model.config, batch_size=1)).loss)


@pytest.mark.parametrize("family", WITH_PROCESSOR)
def test_processor_feeds_model_and_reloads(family: str, models, tiny_saved) -> None:
    processor = tiny.build_processor(family)
    text = processor.apply_chat_template(MESSAGES)
    images = [[image] for image in tiny.tiny_images(2)]
    out = processor(images=images, text=[text, text], return_tensors="pt", padding=True)
    model = models(family)
    with torch.no_grad():
        result = model(**out, labels=out["input_ids"])
    assert torch.isfinite(result.loss)
    reloaded = _reload_processor(family, tiny_saved(family))
    again = reloaded(images=images, text=[text, text], return_tensors="pt", padding=True)
    assert out.keys() == again.keys() and all(torch.equal(out[k], again[k]) for k in out)
    assert reloaded.apply_chat_template(MESSAGES) == text


@pytest.mark.parametrize("family", sorted(tiny.NO_VIDEO_PROCESSOR))
def test_video_processor_families_load_their_real_processor_without_torchvision(family, tiny_saved, caplog):
    """AutoProcessor fails here (its video processor needs torchvision); the loader builds the family's own
    processor class over its PIL image processor, says so, and never falls back to a bare tokenizer."""
    import importlib.util
    import logging

    from compressor.models import load_processor

    path = tiny_saved(family)
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(OSError, match="Can't load video processor for .*video_preprocessor_config.json"):
            AutoProcessor.from_pretrained(path)
    with caplog.at_level(logging.INFO, logger="compressor.arch.processors"):
        processor = load_processor(path)
    assert type(processor).__name__ == tiny.NO_VIDEO_PROCESSOR[family]
    assert (
        "PIL" in type(processor.image_processor).__name__ or "Pil" in type(processor.image_processor).__name__
    )
    assert "no video processor" in caplog.text


def test_a_missing_package_is_an_error_naming_it(tiny_saved):
    """SmolVLM's processor needs num2words: with it unimportable, loading fails with `pip install num2words`."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['num2words'] = None\n"
        "from compressor.models import load_processor\n"
        "from compressor.errors import CompressorError\n"
        "try:\n"
        f"    load_processor({str(tiny_saved('smolvlm'))!r})\n"
        "except CompressorError as e:\n"
        "    print('refused:', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "pip install num2words" in proc.stdout


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_image_processor_matches_make_inputs(family: str, models, tiny_saved) -> None:
    """Every family's saved image processor turns a 16x16 image into the pixel tensors `make_inputs` fakes."""
    image_processor = AutoImageProcessor.from_pretrained(tiny_saved(family))
    pixels = image_processor(images=[[im] for im in tiny.tiny_images(2, size=16)], return_tensors="pt")
    model = models(family)
    inputs = tiny.make_inputs(family, model.config)
    for key in ("pixel_values", "image_sizes", "image_grid_thw", "pixel_attention_mask", "batch_num_images"):
        if key in inputs:
            assert pixels[key].shape == inputs[key].shape, key
            if key != "pixel_values":
                assert torch.equal(pixels[key].to(inputs[key].dtype), inputs[key]), key
    inputs["pixel_values"] = pixels["pixel_values"]
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).loss)


def test_tokenizer(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    assert len(tok) == tiny.VOCAB_SIZE
    assert [tok.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS] == list(
        range(len(tiny.SPECIAL_TOKENS))
    )
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (tiny.PAD_ID, tiny.BOS_ID, tiny.EOS_ID)
    text = "Héllo, wörld! <image> 123"
    assert tok.decode(tok(text)["input_ids"]) == text
    out = tok.apply_chat_template(MESSAGES, return_dict=True, return_assistant_tokens_mask=True)
    trained = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(trained) == "Noise.<|im_end|>"
    prompt = tok.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and "<image>" in prompt
    assert tiny.build_tokenizer().get_vocab() == tok.get_vocab()


def test_family_tokenizers_name_their_tokens() -> None:
    assert tiny.build_tokenizer("gemma3").boi_token == "<start_of_image>"
    assert tiny.build_tokenizer("qwen2_vl").image_token_id == tiny.TOKEN_ID["<|image_pad|>"]
    assert tiny.build_tokenizer("internvl").context_image_token == "<IMG_CONTEXT>"


def test_tiny_images_are_deterministic() -> None:
    a, b = tiny.tiny_images(2, size=8, seed=1), tiny.tiny_images(2, size=8, seed=1)
    assert [im.tobytes() for im in a] == [im.tobytes() for im in b]
    assert a[0].size == (8, 8) and a[0].mode == "RGB"
    assert a[0].tobytes() != a[1].tobytes()


def test_unknown_family_is_rejected() -> None:
    with pytest.raises(ValueError, match="known: llava"):
        tiny.tiny_config("blip")


def test_llava_phi_is_bunnys_parts_in_native_llava() -> None:
    config = tiny.tiny_config("llava_phi")
    assert config.model_type == "llava"
    assert config.text_config.model_type == "phi"
    assert config.vision_config.model_type == "siglip_vision_model"
    assert config.vision_feature_select_strategy == "full"
