"""The lmms-eval bridge against the real, pinned lmms-eval (installed by `make lmms`, the cached set-up step of
`make test`; the fixture installs it the same way when it is missing).

A tiny LLaVA is wired to always answer one word: its decoder layers write nothing (o_proj and down_proj zero), so
the last hidden state is the current token's embedding, and the embeddings and lm_head map "any token → w[0]",
"w[0] → w[1]" … "w[-1] → end of turn". On POPE's balanced rows "yes" scores accuracy 0.5, precision 0.5,
recall 1, F1 2/3 and "no" accuracy 0.5 and F1 0 (lmms-eval's own pope metrics; checked by hand).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from compressor.errors import CompressorError
from compressor.evaluate import Evaluate, LmmsEval, lmms, lmms_install, run

ROWS = 8  # balanced: even rows "yes", odd rows "no"


@pytest.fixture(scope="module")
def harness() -> Path:
    return lmms_install.install()  # nothing to do when `make lmms` ran


def _answering(folder: Path, word: str) -> Path:
    """The tiny LLaVA saved in `folder`, set to answer `word` (then end its turn) to any prompt."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from compressor.tiny import save_family

    save_family("llava", folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    chain = [tok.convert_tokens_to_ids(c) for c in word] + [tok.eos_token_id]
    assert len(set(chain)) == len(chain) and chain[-1] == 2
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        emb.zero_()
        emb[:, 0] = 1.0  # every token points at direction 0, which predicts the word's first letter
        head.zero_()
        head[chain[0], 0] = 10.0
        for k, token in enumerate(chain[:-1], start=1):  # the k-th letter points at direction k: the next one
            emb[token].zero_()
            emb[token, k] = 1.0
            head[chain[k], k] = 10.0
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def yes_no(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("answering")
    return _answering(root / "yes", "yes"), _answering(root / "no", "no")


@pytest.fixture(scope="module")
def pope_parquet(tmp_path_factory) -> Path:
    """POPE's columns (question_id, question, answer, category, image), balanced yes/no."""
    from compressor.tiny import tiny_images

    rows = [
        {
            "question_id": str(i),
            "question": f"Is there a {'cat' if i % 4 < 2 else 'dog'} in the image?",
            "answer": "yes" if i % 2 == 0 else "no",
            "category": "random",
            "image": image,
        }
        for i, image in enumerate(tiny_images(ROWS, 16))
    ]
    return lmms.write_pope(rows, tmp_path_factory.mktemp("pope") / "pope.parquet")


@pytest.fixture(scope="module")
def compared(harness, yes_no, pope_parquet, tmp_path_factory):
    """`compressor.evaluate.run` with lmms-eval's pope on both models: original says yes, compressed says no."""
    out = tmp_path_factory.mktemp("lmms-out")
    cfg = LmmsEval(
        tasks=["pope"], max_new_tokens=4, datasets={"pope": str(pope_parquet)}, output_dir=str(out)
    )
    start = time.perf_counter()
    report = run(yes_no[0], yes_no[1], Evaluate(speed=False, lmms_eval=cfg))
    return report, out, time.perf_counter() - start


def test_real_lmms_eval_scores_both_models_with_known_numbers(compared):
    report, out, seconds = compared
    (pope,) = report.tasks
    m = pope.metrics
    assert (m["pope_accuracy"].original, m["pope_accuracy"].compressed) == (0.5, 0.5)
    assert m["pope_f1_score"].original == pytest.approx(2 / 3) and m["pope_f1_score"].compressed == 0.0
    assert (m["pope_precision"].original, m["pope_recall"].original) == (0.5, 1.0)
    assert m["pope_recall"].compressed == 0.0 and m["pope_yes_ratio"].retained is None
    # retained % on the primary metric (F1), the accuracy kept but not counted
    assert m["pope_f1_score"].primary and not m["pope_accuracy"].primary
    assert pope.retained == 0.0 and m["pope_accuracy"].retained == 100.0
    assert pope.name == "pope" and pope.task == "lmms_eval" and pope.samples == ROWS
    assert report.versions["lmms_eval"] == lmms_install.LMMS_EVAL
    assert "pope" in report.table()
    # each model in a fresh folder of its own, with its log
    sides = sorted(p.name.split("-")[0] for p in out.iterdir() if not p.name.startswith("tasks-"))
    assert sides == ["compressed", "original"]
    print(f"lmms-eval on both models: {seconds:.1f} s")


def test_the_comparison_is_pinned(compared, harness, yes_no, pope_parquet):
    report, _, _ = compared
    pinned = report.tasks[0].pinned
    yaml = harness / "lmms_eval" / "tasks" / "pope" / "pope.yaml"
    import hashlib

    assert pinned["lmms_eval"] == lmms_install.LMMS_EVAL == "0.7.3"
    assert (pinned["task"], pinned["run_as"], pinned["task_version"]) == ("pope", "compressor_pope", 0.0)
    assert pinned["task_yaml"] == "tasks/pope/pope.yaml"
    assert pinned["task_yaml_sha256"] == hashlib.sha256(yaml.read_bytes()).hexdigest()
    assert len(pinned["task_hash"]) == 64
    assert pinned["dataset"] == "parquet" and pinned["dataset_override"] == str(pope_parquet)
    assert pinned["dataset_kwargs"] == {"data_files": {"test": [str(pope_parquet)]}}
    assert (pinned["split"], pinned["limit"], pinned["samples"]) == ("test", None, ROWS)
    assert pinned["generation"]["max_new_tokens"] == 4 and pinned["gen_kwargs"] == {"max_new_tokens": 4}
    assert pinned["model_args"] == {
        side: f"pretrained={folder},device=cpu,device_map=cpu,dtype=auto"
        for side, folder in zip(("original", "compressed"), yes_no)
    }
    assert report.tasks[0].dataset == str(pope_parquet) and report.tasks[0].split == "test"


def _broken(folder: Path, good: Path) -> Path:
    shutil.copytree(good, folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    return folder


def test_a_failing_run_is_a_failure_with_lmms_eval_message_despite_older_results(
    harness, yes_no, pope_parquet, compared, tmp_path
):
    """lmms-eval exits 0 here; the output folder already holds the earlier run's results."""
    _, earlier, _ = compared
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    assert list(out.rglob("*_results.json"))
    broken = _broken(tmp_path / "broken", yes_no[0])
    cfg = LmmsEval(
        tasks=["pope"], max_new_tokens=4, datasets={"pope": str(pope_parquet)}, output_dir=str(out)
    )
    with pytest.raises(
        CompressorError, match=r"lmms-eval failed on the original model: .*(safetensors|header)"
    ):
        lmms.run(broken, yes_no[1], "llava", cfg)


def test_results_older_than_the_run_are_not_results(tmp_path):
    """A command that exits 0, logs nothing wrong and writes nothing, in a folder holding an old results file."""
    old = tmp_path / "model" / "20250101_000000_results.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"results": {"pope": {"pope_f1_score,none": 0.9}}}))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    env = lmms.Environment(sys.executable, None, "0", tmp_path)
    with pytest.raises(CompressorError, match="no \\*_results.json written during this run.*only older ones"):
        lmms.run_one(env, [sys.executable, "-c", "print('done')"], tmp_path, "original", ["pope"])
    # the same file written during the run is read
    write = f"import pathlib; pathlib.Path({str(old)!r}).write_text(pathlib.Path({str(old)!r}).read_text())"
    assert lmms.run_one(env, [sys.executable, "-c", write], tmp_path, "original", ["pope"]) == old


def test_errors_in_the_log_are_failures():
    log = [
        "\x1b[32m2026-12-07 07:56:24\x1b[0m | \x1b[1mINFO    \x1b[0m | lmms_eval.__main__:cli:516 - fine\n",
        "Traceback (most recent call last):\n",
        '  File "x.py", line 1, in <module>\n',
        "ValueError: When passing device_map as a string, the value needs to be a device name\n",
        "\x1b[31mERROR   \x1b[0m | lmms_eval.models.simple.llava_hf:generate_until:372 - Error boom in generating\n",
    ]
    log[-1] = log[-1].replace("\x1b[31mERROR", "t | \x1b[31mERROR")
    assert lmms.failures(log) == [
        "ValueError: When passing device_map as a string, the value needs to be a device name",
        "Error boom in generating",
    ]
    assert lmms.failures(log[:1]) == []


def test_missing_lmms_eval_gives_the_install_command(monkeypatch, tmp_path, yes_no):
    monkeypatch.setenv("COMPRESSOR_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CompressorError, match="lmms-eval is not installed.*`make lmms`"):
        lmms.check_installed(LmmsEval())
    # run() checks before loading any weights
    with pytest.raises(CompressorError, match="`make lmms`"):
        run(yes_no[0], yes_no[1], Evaluate(speed=False, lmms_eval=LmmsEval()))
    with pytest.raises(CompressorError, match="cannot be run"):
        lmms.check_installed(LmmsEval(python=str(tmp_path / "no-python")))


def test_the_install_keeps_the_project_torch(harness):
    """No torch or torchvision in the cached install; lmms-eval's process sees the venv's torch and filelock<4."""
    import subprocess

    assert not [p for p in harness.iterdir() if p.name.startswith(("torch", "torchvision"))]
    env = lmms.check_installed(LmmsEval())
    assert env.version == "0.7.3" and env.pythonpath == str(harness)
    probe = (
        "import filelock, lmms_eval, torch, transformers; print(torch.__version__, transformers.__version__, "
    )
    probe += "filelock.__version__)"
    out = subprocess.run([env.python, "-c", probe], env=env.env(), capture_output=True, text=True, check=True)
    torch_version, transformers_version, filelock_version = out.stdout.split()
    import torch
    import transformers

    assert (torch_version, transformers_version) == (torch.__version__, transformers.__version__)
    assert int(filelock_version.split(".")[0]) < 4


def test_the_card_repeats_the_pins_without_local_paths(compared, pope_parquet):
    from compressor import card

    report, _, _ = compared
    pinned = report.tasks[0].pinned
    section = card._scores_section(report.model_dump(mode="json"))
    line = next(x for x in section.splitlines() if x.startswith("- pope: "))
    assert (
        f"lmms-eval 0.7.3, task version 0.0, tasks/pope/pope.yaml sha256 {pinned['task_yaml_sha256'][:12]}"
        in line
    )
    assert f"task hash {pinned['task_hash'][:12]}" in line and '"max_new_tokens": 4' in line
    assert "dataset pope.parquet (default revision), split test, limit none" in line
    assert "model llava_hf with device=cpu,device_map=cpu,dtype=auto" in line
    assert str(pope_parquet.parent) not in section and "pretrained=" not in section


def test_a_task_dataset_from_the_hub(
    harness, yes_no, pope_parquet, compared, hub_server, repo_name, tmp_path
):
    """`lmms_eval.datasets: {pope: owner/name@revision}`: lmms-eval reads POPE's rows from a dataset repo on the
    (embedded) Hub instead of lmms-lab's, at the revision given, and scores them as from the local copy."""
    from huggingface_hub import HfApi

    from tests.fixtures_hub import ALICE_WRITE

    api = HfApi(endpoint=hub_server.url, token=ALICE_WRITE)
    repo = f"alice/{repo_name}"
    api.create_repo(repo, repo_type="dataset")
    commit = api.upload_file(
        path_or_fileobj=str(pope_parquet),
        path_in_repo="data/test-00000-of-00001.parquet",
        repo_id=repo,
        repo_type="dataset",
    )
    cfg = LmmsEval(
        tasks=["pope"],
        max_new_tokens=4,
        datasets={"pope": f"{repo}@{commit.oid}"},
        output_dir=str(tmp_path / "out"),
    )
    report = run(yes_no[0], yes_no[1], Evaluate(speed=False, lmms_eval=cfg))
    (pope,) = report.tasks
    local = compared[0].tasks[0].metrics
    for metric in ("pope_accuracy", "pope_f1_score", "pope_recall"):
        got = (pope.metrics[metric].original, pope.metrics[metric].compressed)
        assert got == (local[metric].original, local[metric].compressed)
    assert pope.samples == ROWS
    assert pope.pinned["dataset"] == repo and pope.pinned["dataset_kwargs"] == {"revision": commit.oid}
    # read from the Hub indeed: a revision the repo does not have fails, with lmms-eval's (datasets') message
    missing = cfg.model_copy(
        update={"datasets": {"pope": f"{repo}@{'0' * 40}"}, "output_dir": str(tmp_path / "o2")}
    )
    with pytest.raises(CompressorError, match="lmms-eval failed on the original model"):
        run(yes_no[0], yes_no[1], Evaluate(speed=False, lmms_eval=missing))


def test_the_cli_runs_lmms_eval_with_a_local_dataset(harness, yes_no, pope_parquet, tmp_path, capsys):
    """`compressor eval ORIG COMP --lmms-eval pope --lmms-dataset pope=FILE --lmms-max-new-tokens 4`, and its bad
    input: one line, exit 2."""
    from compressor import cli

    out = tmp_path / "eval.json"
    flags = ["--no-speed", "--lmms-eval", "pope", "--lmms-max-new-tokens", "4", "--out", str(out)]
    argv = ["eval", str(yes_no[0]), str(yes_no[1]), *flags, "--lmms-dataset", f"pope={pope_parquet}"]
    assert cli.main(argv) == 0
    (pope,) = json.loads(out.read_text())["tasks"]
    assert pope["name"] == "pope" and pope["metrics"]["pope_f1_score"]["original"] == pytest.approx(2 / 3)
    assert pope["pinned"]["gen_kwargs"] == {"max_new_tokens": 4}
    assert pope["pinned"]["dataset_override"] == str(pope_parquet)
    capsys.readouterr()
    assert cli.main([*argv[:-1], "pope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--lmms-dataset 'pope' must be TASK=SOURCE" in err and len(err.splitlines()) == 1
