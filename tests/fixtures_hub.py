"""The embedded Hub for the tests: one server per session on COMPRESSOR_TEST_HUB_PORT (set by conftest.py).

Users and tokens: alice (a write and a read token) and bob (a write token). Tests use the genuine
huggingface_hub client and transformers against it; nothing is mocked.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

ALICE_WRITE = "hf_test_alice_write_Zq81vNf3"
ALICE_READ = "hf_test_alice_read_Lm42pKx9"
BOB_WRITE = "hf_test_bob_write_Tr07wYc5"
TOKENS = {
    ALICE_WRITE: {"user": "alice", "role": "write"},
    ALICE_READ: {"user": "alice", "role": "read"},
    BOB_WRITE: {"user": "bob", "role": "write"},
}


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """The running server (`.url`, `.store`, `.page_size`, `.max_file_size`), shut down after the session."""
    from compressor import hubserver

    port = int(os.environ["COMPRESSOR_TEST_HUB_PORT"])
    server = hubserver.serve(port, tmp_path_factory.mktemp("hub-data"), TOKENS)
    yield server
    server.shutdown()


@pytest.fixture
def repo_name() -> str:
    """A fresh repo name, so that tests sharing the session's server never collide."""
    return f"t-{uuid.uuid4().hex[:10]}"


DEMO_TOKEN = "hf_test_demo_write_Kp55sQe2"


@pytest.fixture(scope="session")
def embedded_default(hub_server, tmp_path_factory):
    """The embedded default as `make demo` serves it (demo/tiny-llava and its datasets), on the test Hub:
    an untrained tiny LLaVA of the same shape, so nothing is trained to build it. Published once per session and
    shared by the app's tests (test_app, test_app_api): they never change these repos."""
    from huggingface_hub import HfApi

    from compressor.demo import write_dataset, write_eval_sets
    from compressor.tiny import save_family

    hub_server.tokens[DEMO_TOKEN] = {"user": "demo", "role": "write"}
    root = tmp_path_factory.mktemp("embedded-default")
    hub = HfApi(token=DEMO_TOKEN)
    hub.create_repo("demo/tiny-llava", exist_ok=True)
    hub.upload_folder(repo_id="demo/tiny-llava", folder_path=save_family("llava", root / "tiny-llava"))
    sets = {"shapes": write_dataset(root / "shapes", n=24), **write_eval_sets(root, n=16)}
    for name, folder in sets.items():
        repo = f"demo/{name}" if name == "shapes" else f"demo/shapes-{name}"
        hub.create_repo(repo, repo_type="dataset", exist_ok=True)
        hub.upload_folder(repo_id=repo, repo_type="dataset", folder_path=folder)
    return hub_server


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A saved, randomly initialised LlamaForCausalLM: 2 layers, hidden 32, vocab 100 (safetensors)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder
