"""Clean artefacts: one allow-list at push time, and a recovery recipe that cannot make the trainer push."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi

from compressor import hub
from compressor.errors import CompressorError
from tests.fixtures_hub import ALICE_WRITE

ALLOWED = {
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "README.md",
    "recipe.yaml",
    "train_report.json",
    "prune_report.json",
    "eval_report.json",
}
# what FSDP / ZeRO-3 saving, TensorBoard and checkpoints leave in a model folder
LEFT_OUT = {
    "training_args.bin",
    "runs/Dec01_12-00-00_host/events.out.tfevents.1.host",
    "checkpoint-2/model.safetensors",
    "checkpoint-2/optimizer.pt",
    "optimizer.pt",
    "rng_state.pth",
    "extra_trainable.safetensors.tmp",
    "notes.txt",
    "sub/config.json",
}


def _folder(root: Path) -> Path:
    for name in ALLOWED | LEFT_OUT:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}" if name.endswith(".json") else name.encode())
    return root


def test_the_allow_list_keeps_only_model_files(tmp_path: Path) -> None:
    upload, left_out = hub.push_plan(_folder(tmp_path / "model"))
    assert set(upload) == ALLOWED
    assert set(left_out) == LEFT_OUT


def test_push_uploads_only_allowed_files(hub_server, tmp_path: Path, repo_name: str, caplog) -> None:
    folder = _folder(tmp_path / "model")
    repo_id = f"alice/{repo_name}"
    with caplog.at_level("WARNING", logger="compressor.hub"):
        hub.push(folder, repo_id, token=ALICE_WRITE)
    assert set(HfApi(token=ALICE_WRITE).list_repo_files(repo_id)) == ALLOWED | {".gitattributes"}
    assert "training_args.bin" in caplog.text and "runs/" in caplog.text


def test_push_refuses_a_folder_without_top_level_weights(hub_server, tmp_path: Path, repo_name: str) -> None:
    folder = tmp_path / "model"
    (folder / "checkpoint-2").mkdir(parents=True)
    (folder / "checkpoint-2" / "model.safetensors").write_bytes(b"x")
    (folder / "config.json").write_text("{}")
    with pytest.raises(CompressorError, match="no safetensors weights"):
        hub.push(folder, f"alice/{repo_name}", token=ALICE_WRITE)
    assert not HfApi(token=ALICE_WRITE).repo_exists(f"alice/{repo_name}")


@pytest.mark.parametrize(
    "field,value",
    [
        ("hub_token", "hf_secret_never_saved"),
        ("push_to_hub", True),
        ("hub_model_id", "alice/x"),
        ("hub_strategy", "end"),
    ],
)
def test_recover_sft_refuses_hub_fields(field: str, value) -> None:
    from compressor.recover.config import parse_recover

    with pytest.raises(CompressorError, match=rf"sft\.{field} is set by publish:") as err:
        parse_recover({"sft": {field: value}})
    assert "one commit" in str(err.value)
    assert "hf_secret_never_saved" not in str(err.value)
