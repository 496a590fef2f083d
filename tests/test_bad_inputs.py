"""The catalogue of bad inputs: every one fails with a one-line message that names the value given, the flag
or recipe key, and the fix; a non-zero exit (CLI) or a visible message (app); and nothing half-written.

Each case is one row of a table; `CASES` counts them (the README's Errors table is written from it). The CLI
runs in-process (`compressor.cli.main`), the Hub is the session's embedded server, nothing is mocked.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from compressor.cli import main
from compressor.demo import write_dataset
from tests import real_shapes
from tests.fixtures_hub import ALICE_READ, ALICE_WRITE, BOB_WRITE
from tests.leaks import check_found_where_the_cli_writes, holding

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_saved, hub_server):
    """Every file and Hub repo the cases point at, built once."""
    w = tmp_path_factory.mktemp("bad-inputs")
    (w / "llava7b").mkdir()
    (w / "llava7b" / "config.json").write_text(json.dumps(real_shapes.llava_1_5_7b()))
    (w / "qwen2vl").mkdir()
    (w / "qwen2vl" / "config.json").write_text(json.dumps(real_shapes.qwen2_vl_2b()))
    (w / "blip2").mkdir()
    (w / "blip2" / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
    (w / "llm").mkdir()
    text_only = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
    (w / "llm" / "config.json").write_text(
        json.dumps({**text_only, "intermediate_size": 64, "vocab_size": 100})
    )
    (w / "remote").mkdir()
    remote = {**real_shapes.llava_1_5_7b(), "auto_map": {"AutoModel": "modeling_x.X"}}
    (w / "remote" / "config.json").write_text(json.dumps(remote))
    (w / "noconfig").mkdir()
    (w / "nonempty").mkdir()
    (w / "nonempty" / "keep.txt").write_text("mine")
    shutil.copytree(tiny_saved("llava"), w / "tiny")
    data = write_dataset(w / "data", n=6)
    rows = [json.loads(line) for line in (data / "data.jsonl").read_text().splitlines()]
    (w / "noimg").mkdir()
    text_rows = [{"messages": r["messages"][:1] + r["messages"][1:]} for r in rows]
    for r in text_rows:
        r["messages"][0] = {"role": "user", "content": "What is it?"}
    (w / "noimg" / "d.jsonl").write_text("\n".join(json.dumps(r) for r in text_rows))
    (w / "broken").mkdir()
    (w / "broken" / "d.jsonl").write_text((data / "data.jsonl").read_text())  # images/ is not beside it
    (w / "empty-data").mkdir()
    (w / "empty-data" / "d.jsonl").write_text("")
    (w / "token.txt").write_text("  \n")
    (w / "two-tokens.txt").write_text("hf_a\nhf_b\n")
    recipes = {
        "syntax.yaml": "model:\n  source: x/y\nprune:\n  method: depth\n   ratio: 0.3\n",
        "unknown-key.yaml": "model:\n  source: x/y\n  revison: main\nprune:\n  method: depth\n  ratio: 0.3\n",
        "types.yaml": "model:\n  source: x/y\nprune:\n  method: depth\n  ratio: high\n",
        "empty.yaml": "",
        "list.yaml": "- model\n- prune\n",
        "no-prune.yaml": "model:\n  source: x/y\n",
        "section-type.yaml": "model: x/y\nprune:\n  method: depth\n  ratio: 0.3\n",
        "samples-type.yaml": (
            "model:\n  source: x/y\nprune:\n  method: depth\n  ratio: 0.3\n  calibration:\n    num_samples: ten\n"
        ),
        "bad-recover.yaml": "model:\n  source: x/y\nprune:\n  method: depth\n  ratio: 0.3\nrecover:\n  fraction: 0\n",
        "bad-loss.yaml": (
            "model:\n  source: x/y\nprune:\n  method: depth\n  ratio: 0.3\nrecover:\n  loss: {ce: 0.5, hiden_mse: 1}\n"
        ),
        "bad-repo.yaml": (
            "model:\n  source: x/y\nprune:\n  method: depth\n  ratio: 0.3\npublish:\n  repo_id: just-a-name\n"
        ),
        "bad-task.yaml": (
            "model:\n  source: x/y\nprune:\n  method: depth\n  ratio: 0.3\nevaluate:\n  tasks:\n"
            "    - {name: vqa, dataset: d, limit: 0}\n"
        ),
    }
    for name, text in recipes.items():
        (w / name).write_text(text)

    api = HfApi(token=ALICE_WRITE)
    tag = uuid.uuid4().hex[:8]
    repos = {k: f"alice/bad-{k}-{tag}" for k in ("public", "private", "gated", "data")}
    for key in ("public", "private", "gated"):
        api.create_repo(repos[key], private=key == "private")
        api.upload_file(
            path_or_fileobj=(w / "tiny" / "config.json").read_bytes(),
            path_in_repo="config.json",
            repo_id=repos[key],
        )
    api.update_repo_settings(repos["gated"], gated="auto")
    api.create_repo(repos["data"], repo_type="dataset")
    api.upload_file(
        path_or_fileobj=b"{}\n", path_in_repo="d.jsonl", repo_id=repos["data"], repo_type="dataset"
    )
    return w, repos


# (id, argv with {w} for the world folder and {public}/{private}/{gated}/{data} for repo ids, HF_TOKEN or None,
#  the pieces the one-line message must hold: the value, the flag or key, the fix)
CASES = [
    # --- command-line values
    ("ratio above 1", "plan {w}/llava7b --method depth --ratio 1.5", None, ["1.5", "--ratio", "> 0 and < 1"]),
    ("ratio 1", "plan {w}/llava7b --method width --ratio 1", None, ["is 1.0", "--ratio", "< 1"]),
    ("ratio 0", "plan {w}/llava7b --method depth --ratio 0", None, ["is 0.0", "--ratio", "> 0"]),
    ("ratio negative", "plan {w}/llava7b --method depth --ratio -0.2", None, ["-0.2", "--ratio", "> 0"]),
    (
        "ratio not a number",
        "plan {w}/llava7b --method depth --ratio abc",
        None,
        ["'abc'", "--ratio", "float"],
    ),
    (
        "num-samples 0",
        "plan {w}/llava7b --method depth --ratio 0.3 --num-samples 0",
        None,
        ["is 0", "--num-samples", ">= 1"],
    ),
    (
        "max-length too small",
        "plan {w}/llava7b --method depth --ratio 0.3 --max-length 4",
        None,
        ["is 4", "--max-length", ">= 8"],
    ),
    (
        "round-to 0",
        "plan {w}/llava7b --method width --ratio 0.3 --round-to 0",
        None,
        ["is 0", "--round-to", ">= 1"],
    ),
    ("unknown method", "plan {w}/llava7b --method dept --ratio 0.3", None, ["'dept'", "--method", "depth"]),
    (
        "ratio legal widths cannot reach",
        "plan {w}/llava7b --method width --ratio 0.0001",
        None,
        [
            "ratio 0.0001",
            "cannot be reached",
            "smallest cut is 0.37%",
            "0.37% (KV groups 32 -> 32, MLP 11008 -> 10944)",
        ]
        + ["--ratio", "--round-to"],
    ),
    (
        "ratio whole layers cannot reach",
        "plan {w}/llava7b --method depth --ratio 0.001",
        None,
        [
            "ratio 0.001",
            "cannot be reached with whole layers",
            "3.00% (1 layer)",
            "6.01% (2 layers)",
            "--ratio",
        ],
    ),
    (
        "unknown scorer",
        "plan {w}/llava7b --method width --ratio 0.3 --scorer taylr",
        None,
        ["'taylr'", "did you mean 'taylor'", "known:"],
    ),
    (
        "scorer of the other method",
        "plan {w}/llava7b --method depth --ratio 0.3 --scorer taylor",
        None,
        ["'taylor'", "depth scorer", "block_influence"],
    ),
    ("method missing", "plan {w}/llava7b --ratio 0.3", None, ["--method is required", "recipe"]),
    (
        "targets with depth",
        "plan {w}/llava7b --method depth --ratio 0.3 --targets heads",
        None,
        ["targets", "method: width only", "remove"],
    ),
    (
        "unknown target",
        "plan {w}/llava7b --method width --ratio 0.3 --targets heads,mpl",
        None,
        ["'mpl'", "--targets", "heads, mlp"],
    ),
    (
        "contiguous without angular",
        "plan {w}/llava7b --method depth --ratio 0.3 --contiguous",
        None,
        ["contiguous", "scorer: angular"],
    ),
    (
        "round-to above the MLP width",
        "plan {w}/llava7b --method width --ratio 0.3 --round-to 99999",
        None,
        ["99999", "--round-to"],
    ),
    (
        "head pruning the family cannot reload",
        "plan {w}/qwen2vl --method width --ratio 0.3 --targets heads",
        None,
        ["head_dim", "heads"],
    ),
    (
        "flags with a recipe file",
        "plan {w}/types.yaml --ratio 0.2",
        None,
        ["--ratio", "cannot be combined", "edit the recipe"],
    ),
    (
        "dtype not a choice",
        "plan {w}/llava7b --method depth --ratio 0.3 --dtype fp8",
        None,
        ["'fp8'", "--dtype", "bfloat16"],
    ),
    # --- models
    (
        "unsupported family",
        "plan {w}/blip2 --method depth --ratio 0.3",
        None,
        ["'blip-2'", "supported families", "llava"],
    ),
    (
        "text-only LLM",
        "plan {w}/llm --method depth --ratio 0.3",
        None,
        ["text-only LLM", "'llama'", "MLLM built on it"],
    ),
    (
        "remote code without the flag",
        "plan {w}/remote --method depth --ratio 0.3",
        None,
        ["auto_map", "--trust-remote-code"],
    ),
    (
        "folder without config.json",
        "plan {w}/noconfig --method depth --ratio 0.3",
        None,
        ["noconfig", "config.json", "save_pretrained"],
    ),
    (
        "path that does not exist",
        "plan ./no/such/model --method depth --ratio 0.3",
        None,
        ["./no/such/model", "not a folder", "Hub repo id"],
    ),
    # --- recipe files
    (
        "recipe YAML syntax error",
        "validate {w}/syntax.yaml",
        None,
        ["syntax.yaml", "line 5", "fix that line"],
    ),
    (
        "recipe unknown key",
        "validate {w}/unknown-key.yaml",
        None,
        ["model.revison", "did you mean 'revision'", "remove it"],
    ),
    ("recipe wrong type", "validate {w}/types.yaml", None, ["prune.ratio", "'high'", "a number"]),
    (
        "recipe wrong type, nested",
        "validate {w}/samples-type.yaml",
        None,
        ["num_samples", "'ten'", "an integer"],
    ),
    ("recipe section not a mapping", "validate {w}/section-type.yaml", None, ["model", "'x/y'", "mapping"]),
    ("recipe empty file", "validate {w}/empty.yaml", None, ["empty.yaml", "is empty", "model: and prune:"]),
    ("recipe not a mapping", "validate {w}/list.yaml", None, ["list.yaml", "list", "model: and prune:"]),
    ("recipe missing section", "validate {w}/no-prune.yaml", None, ["prune is missing", "method, ratio"]),
    ("recipe file missing", "validate {w}/nope.yaml", None, ["nope.yaml", "does not exist", "path"]),
    (
        "recipe fraction 0",
        "validate {w}/bad-recover.yaml",
        None,
        ["recover.fraction", "is 0", "> 0 and <= 1"],
    ),
    (
        "recipe unknown loss term",
        "validate {w}/bad-loss.yaml",
        None,
        ["'hiden_mse'", "did you mean 'hidden_mse'"],
    ),
    ("recipe bad repo id", "validate {w}/bad-repo.yaml", None, ["'just-a-name'", "owner/name"]),
    ("recipe eval limit 0", "validate {w}/bad-task.yaml", None, ["limit", "is 0", ">= 1"]),
    # --- data
    (
        "calibration without images",
        "prune {w}/tiny --method width --ratio 0.3 --scorer activation --calibration {w}/noimg --num-samples 2 --out {w}/out",
        None,
        ["noimg", "no images", "add 'images'"],
    ),
    (
        "calibration image paths broken",
        "prune {w}/tiny --method width --ratio 0.3 --scorer activation --calibration {w}/broken --num-samples 2 --out {w}/out",
        None,
        ["broken/images/", "not found", "--image-folder"],
    ),
    (
        "more calibration samples than rows",
        "prune {w}/tiny --method width --ratio 0.3 --scorer activation --calibration {w}/data --num-samples 50 --out {w}/out",
        None,
        ["6 rows", "--num-samples", "at most 6"],
    ),
    (
        "rows longer than max-length everywhere",
        "prune {w}/tiny --method width --ratio 0.3 --scorer activation --calibration {w}/data --num-samples 2 --max-length 8 --out {w}/out",
        None,
        ["at most 8 tokens", "--max-length"],
    ),
    (
        "scorer needs data, none given",
        "prune {w}/tiny --method width --ratio 0.3 --out {w}/out",
        None,
        ["'taylor'", "--calibration", "magnitude"],
    ),
    (
        "calibration dataset missing",
        "prune {w}/tiny --method width --ratio 0.3 --scorer activation --calibration ./nope.json --out {w}/out",
        None,
        ["./nope.json", "not found"],
    ),
    (
        "output folder not empty",
        "prune {w}/tiny --method depth --ratio 0.3 --scorer last --out {w}/nonempty",
        None,
        ["nonempty", "not empty", "--overwrite"],
    ),
    (
        "recover fraction 0",
        "recover {w}/tiny --data {w}/data --fraction 0 --out {w}/out",
        None,
        ["recover.fraction", "is 0", "--fraction"],
    ),
    (
        "recover on an empty dataset",
        "recover {w}/tiny --data {w}/empty-data --loss ce=1 --mode full --out {w}/out",
        None,
        ["empty-data", "no rows"],
    ),
    (
        "recover mode auto on a folder that compressor prune did not write",
        "recover {w}/tiny --data {w}/data --loss ce=1 --out {w}/out",
        None,
        ["recover.mode auto", "no prune_report.json", "--mode", "projector, lora or full"],
    ),
    (
        "recover --data with a weight that is not a number",
        "recover {w}/tiny --data {w}/data:3 --data {w}/data:lots --mode full --out {w}/out",
        None,
        ["--data", ":lots", "must be a number"],
    ),
    (
        "recover bad --loss",
        "recover {w}/tiny --data {w}/data --loss ce:1 --out {w}/out",
        None,
        ["'ce:1'", "did you mean 'ce'", "known:"],
    ),
    (
        "eval task unknown",
        "eval {w}/tiny {w}/tiny --task vqq={w}/data --out {w}/out.json",
        None,
        ["'vqq'", "did you mean 'vqa'"],
    ),
    (
        "eval limit 0",
        "eval {w}/tiny {w}/tiny --task vqa={w}/data --limit 0 --out {w}/out.json",
        None,
        ["is 0", "--limit", ">= 1"],
    ),
    # --- tokens
    (
        "token file missing",
        "plan {w}/llava7b --method depth --ratio 0.3 --token-file {w}/none.txt",
        None,
        ["none.txt", "--token-file", "cannot be read"],
    ),
    (
        "token file empty",
        "plan {w}/llava7b --method depth --ratio 0.3 --token-file {w}/token.txt",
        None,
        ["token.txt", "--token-file", "only the token"],
    ),
    (
        "token file with two lines",
        "plan {w}/llava7b --method depth --ratio 0.3 --token-file {w}/two-tokens.txt",
        None,
        ["two-tokens.txt", "2 non-empty lines"],
    ),
    # --- the Hub
    (
        "unknown repo",
        "plan alice/no-such-model --method depth --ratio 0.3",
        ALICE_WRITE,
        ["alice/no-such-model", "not found", "check the repo id"],
    ),
    (
        "private repo without a token",
        "plan {private} --method depth --ratio 0.3",
        None,
        ["{private}", "not found", "pass a token"],
    ),
    (
        "gated repo without access",
        "plan {gated} --method depth --ratio 0.3",
        BOB_WRITE,
        ["{gated}", "gated", "accept its conditions"],
    ),
    (
        "bad token",
        "plan {public} --method depth --ratio 0.3",
        "hf_not_a_real_token",
        ["rejected the token", "settings/tokens"],
    ),
    (
        "revision not found",
        "plan {public} --method depth --ratio 0.3 --revision v9",
        ALICE_WRITE,
        ["'v9'", "{public}", "branch, tag or commit"],
    ),
    (
        "dataset repo given as a model",
        "plan {data} --method depth --ratio 0.3",
        ALICE_WRITE,
        ["{data}", "is a dataset repo", "--calibration"],
    ),
    (
        "push with a read-only token",
        "push {w}/run --repo-id alice/x-{tag}",
        ALICE_READ,
        ["read-only", "write token"],
    ),
    (
        "push to a namespace the token cannot write",
        "push {w}/run --repo-id bob/x-{tag}",
        ALICE_WRITE,
        ["bob/x-", "403", "your own namespace"],
    ),
    (
        "push over an existing repo",
        "push {w}/run --repo-id {public}",
        ALICE_WRITE,
        ["{public}", "already has files", "--overwrite"],
    ),
    (
        "push a folder that is not a run",
        "push {w}/noconfig --repo-id alice/y-{tag}",
        ALICE_WRITE,
        ["noconfig", "not a finished run folder", "compressor run"],
    ),
    (
        "run folder of a different recipe",
        "run {w}/other-model.yaml --run-dir {w}/run",
        None,
        ["different recipe", "model.source", "another --run-dir"],
    ),
]


def _error_line(err: str) -> str:
    """The one line that says what is wrong (the CLI's `error: …`, or argparse's `compressor X: error: …`)."""
    errors = [line for line in err.splitlines() if line.startswith("error:") or ": error: " in line]
    assert errors, f"no error line in:\n{err}"
    return errors[-1]


def _files(folder: Path) -> dict[str, int]:
    """Every path under `folder` with its mtime (the run folder's .lock is rewritten by each run that takes it)."""
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


# A push re-renders the card for the repo it names before it uploads: these, and only these, may change.
CARD_FILES = {"run/pruned/README.md", "run/pruned/recipe.yaml", "run/reports/card.json"}


@pytest.fixture(scope="module")
def run_folder(world):
    """A finished run folder (depth 'last' on the tiny LLaVA) for the push and run-folder cases."""
    w, _ = world
    recipe = w / "run.yaml"
    recipe.write_text(
        f"model:\n  source: {w / 'tiny'}\nprune:\n  method: depth\n  ratio: 0.3\n  scorer: last\n"
    )
    assert main(["run", str(recipe), "--run-dir", str(w / "run")]) == 0
    other = w / "other-model.yaml"
    other.write_text(
        f"model:\n  source: {w / 'llava7b'}\nprune:\n  method: depth\n  ratio: 0.3\n  scorer: last\n"
    )
    return w / "run"


# Cases whose message is not yet what it must be, with the reason; strict: the day one is fixed, it fails here.
KNOWN_GAPS: dict[str, str] = {}


def _params():
    for case_id, *rest in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[case_id])] if case_id in KNOWN_GAPS else []
        yield pytest.param(*rest, id=case_id, marks=marks)


@pytest.mark.parametrize(("argv", "token", "needles"), list(_params()))
def test_bad_input(world, run_folder, argv, token, needles, capsys, monkeypatch):
    w, repos = world
    fill = {"w": str(w), "tag": uuid.uuid4().hex[:8], **repos}
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    before = _files(w)
    try:
        rc = main([a.format(**fill) for a in argv.split()])
    except SystemExit as exc:  # argparse: usage + one error line, exit 2
        rc = exc.code
    err = capsys.readouterr().err
    assert rc not in (0, None)
    assert "Traceback" not in err
    line = _error_line(err)
    for needle in needles:
        assert needle.format(**fill) in line, f"{needle!r} not in {line!r}"
    after = _files(w)
    changed = {k for k in set(after) | set(before) if after.get(k) != before.get(k)}
    # a push may (re-)render the card first: the card, its recipe and the pictures it links are its output
    card = {f for f in changed if f in CARD_FILES or re.fullmatch(r"run/pruned/plots/\w+\.png", f)}
    assert changed <= (card if argv.startswith("push") else set()), f"files changed: {sorted(changed)}"
    for new_repo in (f"alice/x-{fill['tag']}", f"bob/x-{fill['tag']}", f"alice/y-{fill['tag']}"):
        assert not HfApi(token=BOB_WRITE if new_repo.startswith("bob") else ALICE_WRITE).repo_exists(new_repo)
    if token:
        assert holding(token, {"stderr": err}) == []
        # positive control: planted copies (a log record, a stderr line) are found in the same capture
        check_found_where_the_cli_writes(token, lambda: capsys.readouterr().err)


def test_catalogue_size():
    """The README's Errors section says how many inputs the catalogue runs: exactly these, each checking its
    message for at least one needle (a case with none would pass on any message)."""
    readme = (ROOT / "README.md").read_text()
    said = re.search(r"`tests/test_bad_inputs.py` runs (\d+) such inputs", readme)
    assert said and int(said[1]) == len(CASES) == 67
    assert len({c[0] for c in CASES}) == len(CASES)
    assert all(needles and all(needles) for _, _, _, needles in CASES), [c[0] for c in CASES if not c[3]]


def test_too_little_disk_is_refused_before_anything_is_downloaded_or_written(world, monkeypatch, capsys):
    import compressor.api

    w, _ = world
    real = shutil.disk_usage
    monkeypatch.setattr(compressor.api.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    before = _files(w)
    argv = ["prune", str(w / "tiny"), "--method", "depth", "--ratio", "0.3", "--scorer", "last"]
    assert main([*argv, "--out", str(w / "out")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "not enough disk" in line and "0.00 GB free" in line and "another disk" in line
    assert _files(w) == before


def test_app_shows_bad_recipes_on_the_page():
    import app

    cases = [
        ("model:\n  source: x\n prune: {}\n", ["not valid YAML"]),
        ("", ["model: and prune:"]),
        ("model: {source: x/y}\nprune: {method: depth, ratio: 2}\n", ["prune.ratio", "is 2", "< 1"]),
        (
            "model: {source: x/y, revison: a}\nprune: {method: depth, ratio: 0.3}\n",
            ["did you mean 'revision'"],
        ),
    ]
    for text, needles in cases:
        base, status, *_ = app.load_yaml(text)
        assert status.startswith("**Error:**"), status
        for needle in needles:
            assert needle in status
        assert base == app.gr.update()  # the form is left as it was


def test_serve_hub_help_and_port_work_as_the_readme_says(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "compressor", "serve-hub", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and "--port" in out.stdout and "--data" in out.stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "compressor", "serve-hub", "--port", "0", "--data", str(tmp_path / "hub")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("Hub on http://127.0.0.1:") and "HF_ENDPOINT=" in line
        port = line.split("127.0.0.1:")[1].split(" ")[0]
        busy = subprocess.run(
            [sys.executable, "-m", "compressor", "serve-hub", "--port", port, "--data", str(tmp_path / "h2")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert busy.returncode == 2 and f"127.0.0.1:{port}" in busy.stderr and "another --port" in busy.stderr
        assert "Traceback" not in busy.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
