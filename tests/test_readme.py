"""Every `python -m compressor …` command the README gives is run here.

Each one is parsed by the CLI's real parser (an unknown flag, like the `serve-hub --port` the README once gave,
fails here). Those that can run on this machine run for real: `plan` on LLaVA-1.5-7B's config (the Hub id mapped
to a folder holding only that config.json, as the README's plan table says), `validate`, `schema`, `serve-hub`,
`study --dry-run`. The commands that need 7B weights (`prune`, `recover`, `eval`, `run`, `card`, `push` on
llava-hf/llava-1.5-7b-hf) are parsed only; the same commands run end to end on tiny models in test_cli.py,
test_recover.py, test_evaluate.py and test_run.py.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from compressor import tiny
from compressor.cli import build_parser, main
from tests import real_shapes

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[list[str]]:
    """The argv (after `python -m compressor`) of every such command in the README's bash blocks."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("python -m compressor "):
                line = re.sub(r"\[[^\]]*\]", "", line)  # optional parts: [--private] [--overwrite]
                commands.append(shlex.split(line)[3:])
    return commands


COMMANDS = readme_commands()


def test_the_readme_gives_commands():
    names = {argv[0] for argv in COMMANDS}
    assert {
        "plan",
        "prune",
        "recover",
        "eval",
        "run",
        "card",
        "push",
        "validate",
        "schema",
        "serve-hub",
    } <= names
    assert {"reference", "study"} <= names
    with pytest.raises(SystemExit):  # the check below can fail: a misspelt flag does not parse
        build_parser().parse_args(["serve-hub", "--prot", "8080", "--data", "hub"])


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_every_readme_command_parses(argv, capsys):
    try:
        build_parser().parse_args(argv)  # serve-hub's own options included
    except SystemExit as exit:
        pytest.fail(
            f"the README's `python -m compressor {' '.join(argv)}` does not parse ({exit.code}): "
            f"{capsys.readouterr().err}"
        )


def _mapped(argv: list[str], folder: Path) -> list[str]:
    return [str(folder) if a == "llava-hf/llava-1.5-7b-hf" else a for a in argv]


def test_readme_plan_validate_schema_and_study_commands_run(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "llava-1.5-7b-hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(real_shapes.llava_1_5_7b()))
    # `plan --speed` builds and times the language model: a tiny model of the same family (SmolVLM) stands in
    small = tmp_path / "SmolVLM-256M-Instruct"
    small.mkdir()
    (small / "config.json").write_text(json.dumps(tiny.tiny_config("smolvlm").to_dict()))
    ran = 0
    for argv in COMMANDS:
        if argv[0] == "plan" and "--speed" in argv:
            assert "HuggingFaceTB/SmolVLM-256M-Instruct" in argv
            assert main([str(small) if a == "HuggingFaceTB/SmolVLM-256M-Instruct" else a for a in argv]) == 0
            out = capsys.readouterr().out
            assert "speed here" in out and "planned: width" in out and "alternative: depth" in out
        elif argv[0] == "plan":
            assert main(_mapped(argv, folder)) == 0
            out = capsys.readouterr().out
            if "--json" in argv:
                assert json.loads(out)["achieved_ratio"] == pytest.approx(0.45, abs=0.01)
            else:
                assert "6.739 B -> 4.715 B" in out
        elif argv[0] == "validate":
            assert main(["validate", str(ROOT / "recipes" / "llava-1.5-7b-depth30-kd.yaml")]) == 0
            capsys.readouterr()
        elif argv[0] == "schema":
            assert main(argv) == 0 and "properties" in json.loads(capsys.readouterr().out)
        elif argv[0] == "study" and "--dry-run" in argv:
            monkeypatch.chdir(ROOT)  # the README's path is relative to the checkout
            assert main([*argv, "--reference", str(tmp_path / "ref")]) == 0
            assert "22. depth 30% lora ce+hidden_mse data 100%" in capsys.readouterr().out
        else:
            continue
        ran += 1
    assert ran == 6


def test_readme_serve_hub_command_serves(tmp_path):
    argv = next(a for a in COMMANDS if a[0] == "serve-hub")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [
        str(port) if prev == "--port" else str(tmp_path / "hub") if prev == "--data" else a
        for prev, a in zip(["", *argv], argv)
    ]
    proc = subprocess.Popen([sys.executable, "-m", "compressor", *argv], stdout=subprocess.PIPE, text=True)
    try:
        assert "Hub on http://127.0.0.1:" in proc.stdout.readline()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/whoami-v2", timeout=5)
            except urllib.error.HTTPError as err:
                assert err.code == 401  # up, and it wants a token
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert (tmp_path / "hub").is_dir()


def test_make_test_runs_two_workers_and_test_workers_0_one_process():
    """The README's Tests section: `make test` runs two xdist workers, `TEST_WORKERS=0 make test` one process."""

    def pytest_line(*args: str) -> str:
        out = subprocess.run(
            ["make", "-n", "test", *args], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return next(line for line in out.stdout.splitlines() if " -m pytest" in line)

    assert (
        "make test" in (ROOT / "README.md").read_text()
        and "TEST_WORKERS=0 make test" in (ROOT / "README.md").read_text()
    )
    assert pytest_line().split(" -m pytest")[1].split() == ["-q", "-n", "2", "--dist", "loadfile"]
    assert pytest_line("TEST_WORKERS=0").split(" -m pytest")[1].split() == ["-q"]


def test_the_readmes_recipe_is_valid():
    """The recipe under "A recipe" is validated as it is written there, gate and mixed sources included."""
    import yaml

    from compressor.recipe import parse_recipe

    section = (ROOT / "README.md").read_text().split("## A recipe", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    recipe = parse_recipe(yaml.safe_load(block), "README")
    assert recipe.recover.mode == "auto" and [s.weight for s in recipe.recover.sources] == [3, 1]
    assert recipe.publish.require == {"average_retained": 0.95}
    assert recipe.prune.calibration.modality == "image"
