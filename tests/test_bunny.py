"""Bunny through its remote code: a tiny model of Bunny-v1.0's structure (tests/bunny_remote) saved with `auto_map`,
loaded only with `trust_remote_code=True`, through plan, prune (depth and width), calibration with images,
recovery (projector, lora, full), evaluation, the card, a push to the embedded Hub and a reload from it.

The proofs are the native families' (tests/test_prune_families.py): after a save and a reload through the remote
code, logits equal the in-memory pruned model's, greedy `generate` is the same with and without the KV cache,
and the parameter count equals the plan.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compressor import prune as pruning
from compressor.arch import spec_for
from compressor.errors import CompressorError
from compressor.plan import count_params, resolve
from compressor.recipe import Prune
from tests.bunny_remote import CODE_FILES, bunny_inputs, save_tiny_bunny


@pytest.fixture(scope="module")
def bunny(tmp_path_factory) -> Path:
    return save_tiny_bunny(tmp_path_factory.mktemp("bunny") / "src")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from compressor.demo import write_dataset

    return write_dataset(tmp_path_factory.mktemp("bunny-data") / "shapes", n=12)


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _load(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()


def _generate(model, inputs, use_cache: bool):
    gen = {k: v for k, v in inputs.items() if k != "labels"}
    return model.generate(**gen, max_new_tokens=5, do_sample=False, use_cache=use_cache)


def test_the_tiny_bunny_is_remote_code_only(bunny):
    from transformers import AutoModelForCausalLM

    config = _config(bunny)
    assert config["model_type"] == "bunny-phi" and "AutoModelForCausalLM" in config["auto_map"]
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForCausalLM.from_pretrained(bunny)
    with pytest.raises(CompressorError, match="--trust-remote-code"):
        spec_for(config)
    model = _load(bunny)
    assert type(model).__module__.startswith("transformers_modules.")  # the folder's own code ran
    assert {"vision_tower", "mm_projector", "layers"} <= {n for n, _ in model.model.named_children()}


def test_bunny_processor_is_its_tokenizer_and_siglip_image_processor(bunny):
    from compressor.models import load_processor
    from compressor.tiny import tiny_images

    processor = load_processor(bunny, trust_remote_code=True)
    assert type(processor).__name__ == "BunnyProcessor"
    assert type(processor.image_processor).__name__.startswith("SiglipImageProcessor")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]}]
    enc = processor(
        text=[processor.apply_chat_template(messages, tokenize=False)],
        images=tiny_images(1, size=24),
        return_tensors="pt",
    )
    assert (enc["input_ids"] == -200).sum() == 1  # one placeholder per image, spliced by the model
    assert enc["images"].shape == (1, 3, 16, 16)  # padded to a square, resized to the tower's input


@pytest.mark.parametrize(
    ("method", "scorer"), [("depth", "block_influence"), ("width", "taylor")], ids=["depth", "width"]
)
def test_pruned_bunny_reloads_through_its_remote_code(bunny, shapes, method, scorer, tmp_path):
    from compressor.data import load_rows
    from compressor.models import load_model, load_processor, save_model
    from compressor.prune.calibration import build_batches

    config = _config(bunny)
    spec, backbone = spec_for(config, trust_remote_code=True)
    plan = resolve(config, spec, backbone, Prune(method=method, ratio=0.3, scorer=scorer, round_to=8))
    model = load_model(bunny, spec, "float32", trust_remote_code=True)
    processor = load_processor(bunny, trust_remote_code=True)
    before = count_params(model, spec)
    batches = build_batches(load_rows(str(shapes)), processor, model.config, 3, 512, 0)
    assert all("images" in b and (b["input_ids"] == -200).any() for b in batches)  # calibration sees images
    report = pruning.apply(model, spec, backbone, plan, batches, progress=lambda it, _d: it)

    counts = count_params(model, spec)
    assert (
        counts["backbone"] == plan.params.backbone_after < plan.params.backbone_before == before["backbone"]
    )
    assert counts["vision"] == before["vision"] > 0 and counts["projector"] == before["projector"] > 0
    assert counts["total"] == before["total"] - (plan.params.backbone_before - plan.params.backbone_after)
    if method == "depth":
        assert len(report.dropped_layers) == plan.drop_count > 0
        assert model.config.num_hidden_layers == plan.num_layers_after
    else:
        assert model.config.num_key_value_heads == plan.kv_heads_after < plan.kv_heads_before
        assert model.config.intermediate_size == plan.intermediate_after

    out = tmp_path / "pruned"
    save_model(model, processor, out)
    assert {*CODE_FILES, "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()
    }
    reloaded = _load(out)
    assert count_params(reloaded, spec) == counts
    inputs = bunny_inputs(model, batch_size=2, seed=11)
    with torch.no_grad():
        a = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        b = reloaded(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    assert torch.equal(a, b)
    cached, uncached = _generate(reloaded, inputs, True), _generate(reloaded, inputs, False)
    assert torch.equal(cached, uncached) and cached.shape[1] == inputs["input_ids"].shape[1] + 5


# ---------------------------------------------------------------------------- recovery


@pytest.fixture(scope="module")
def student(bunny, tmp_path_factory) -> Path:
    """The tiny Bunny depth-pruned by 30 % (data-free `last`), saved as `compressor prune` saves it."""
    from compressor.models import load_model, load_processor, save_model

    config = _config(bunny)
    spec, backbone = spec_for(config, trust_remote_code=True)
    plan = resolve(config, spec, backbone, Prune(method="depth", ratio=0.3, scorer="last"))
    model = load_model(bunny, spec, "float32", trust_remote_code=True)
    report = pruning.apply(model, spec, backbone, plan, [], progress=lambda it, _d: it)
    out = tmp_path_factory.mktemp("bunny-student") / "pruned"
    save_model(model, load_processor(bunny, trust_remote_code=True), out)
    (out / "prune_report.json").write_text(report.model_dump_json())
    return out


def _parts(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    groups: dict[str, dict[str, torch.Tensor]] = {"vision": {}, "projector": {}, "layers": {}, "rest": {}}
    for name, p in _load(folder).named_parameters():
        part = (
            "vision"
            if name.startswith("model.vision_tower.")
            else "projector"
            if name.startswith("model.mm_projector.")
            else "layers"
            if name.startswith("model.layers.")
            else "rest"
        )
        groups[part][name] = p.detach().clone()
    return groups


@pytest.mark.parametrize("mode", ["projector", "lora", "full"])
def test_recovery_trains_bunny_through_its_remote_code(bunny, student, shapes, tmp_path, mode):
    from compressor.recover import run
    from tests.test_recover import EXPECTED, fast

    out = tmp_path / "recovered"
    report = run(student, bunny, fast(mode=mode), str(shapes), out, trust_remote_code=True)
    before, after = _parts(student), _parts(out)
    changed = {p: any(not torch.equal(before[p][k], after[p][k]) for k in before[p]) for p in before}
    assert changed == EXPECTED[mode]
    assert report.steps == 2 and {"loss_ce", "loss_hidden_mse"} <= set(report.losses[-1])
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in report.losses)
    # the teacher ran through the remote code and reused the student's vision tower output
    assert report.shared_vision["enabled"] and report.shared_vision["hits"] == 2
    assert report.teacher["lm_head_runs"] is True  # Bunny's backbone cannot run on its own inputs
    assert {*CODE_FILES, "preprocessor_config.json", "train_report.json"} <= {p.name for p in out.iterdir()}
    model = _load(out)
    with torch.no_grad():
        assert torch.isfinite(model(**bunny_inputs(model)).loss)


# ---------------------------------------------------------------------------- the whole pipeline, through the Hub


def test_run_prunes_recovers_evaluates_and_pushes_bunny(
    bunny, shapes, hub_server, repo_name, tmp_path, monkeypatch, capsys
):
    import yaml
    from huggingface_hub import HfApi, ModelCard

    from compressor.cli import main
    from compressor.demo import write_eval_sets
    from tests.fixtures_hub import ALICE_READ, ALICE_WRITE

    api = HfApi(token=ALICE_WRITE)
    source = f"alice/{repo_name}-bunny"
    api.create_repo(source)
    api.upload_folder(repo_id=source, folder_path=bunny)
    evals = write_eval_sets(tmp_path, n=8)
    recipe = {
        "model": {"source": source, "trust_remote_code": True},
        "prune": {
            "method": "width",
            "ratio": 0.3,
            "round_to": 8,
            "calibration": {"dataset": str(shapes), "num_samples": 3},
        },
        "recover": {
            "mode": "lora",
            "fraction": 1.0,
            "max_steps": 2,
            "data": {"dataset": str(shapes)},
            "sft": {"per_device_train_batch_size": 2, "logging_steps": 1},
        },
        "evaluate": {
            "tasks": [{"name": "vqa", "dataset": str(evals["vqa"]), "split": "train", "limit": 3}],
            "speed_repeats": 1,
            "speed_new_tokens": 2,
            "speed_memory": False,
        },
        "publish": {"repo_id": f"alice/{repo_name}", "private": True},
    }
    path = tmp_path / "bunny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.setenv("HF_TOKEN", ALICE_WRITE)

    untrusted = yaml.safe_load(path.read_text())
    untrusted["model"]["trust_remote_code"] = False
    (tmp_path / "untrusted.yaml").write_text(yaml.safe_dump(untrusted))
    assert main(["plan", str(tmp_path / "untrusted.yaml")]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err

    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 0
    assert "pushed:" in capsys.readouterr().out
    plan = json.loads((run_dir / "plan.json").read_text())
    commit = json.loads((run_dir / "source.json").read_text())["commit"]
    prune_report = json.loads((run_dir / "reports" / "prune.json").read_text())
    assert (
        prune_report["source"]["commit"] == commit
    )  # the code that ran is the source's, at the planned commit
    assert json.loads((run_dir / "reports" / "eval.json").read_text())["tasks"]

    repo_id = recipe["publish"]["repo_id"]
    files = set(api.list_repo_files(repo_id))
    assert {*CODE_FILES, "config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= files
    card = ModelCard.load(repo_id, token=ALICE_WRITE)
    assert "trust_remote_code=True" in card.text and "AutoModelForCausalLM" in card.text
    assert "AutoModelForImageTextToText" not in card.text
    assert "vision tower: run once per batch and shared" in card.text

    # a fresh cache, through the Hub: the pushed repo's own code runs
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "fresh-cache"))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(repo_id, token=ALICE_READ, trust_remote_code=True).eval()
    spec, _ = spec_for(model.config.to_dict(), trust_remote_code=True)
    assert count_params(model, spec)["backbone"] == plan["params"]["backbone_after"]
    assert model.config.intermediate_size == plan["intermediate_after"]
    local = _load(run_dir / "recovered")
    inputs = bunny_inputs(model, seed=5)
    with torch.no_grad():
        a = local(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        b = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    assert torch.equal(a, b)
    assert torch.equal(_generate(model, inputs, True), _generate(model, inputs, False))
