"""One fact, one place: the run-folder policy (compressor.runs) and the recipe-text parser (recipe_from_text)
that the CLI, the app and Jobs share."""

from __future__ import annotations

from pathlib import Path

import pytest

from compressor.errors import CompressorError
from compressor.recipe import recipe_from_text
from compressor.runs import run_folder, runs_root

TEXT = "model: {source: org/My Model}\nprune: {method: depth, ratio: 0.25, scorer: last}\n"


def test_a_named_recipe_runs_in_its_name_and_an_unnamed_one_in_its_content(monkeypatch):
    recipe = recipe_from_text(TEXT, "(test)")
    assert run_folder(Path("r"), recipe, "depth30") == Path("r/depth30")
    folder = run_folder(Path("r"), recipe)
    assert folder.parent == Path("r") and folder.name.startswith("My-Model-depth25-")
    assert run_folder(Path("r"), recipe_from_text(TEXT, "(again)")) == folder  # the same recipe resumes
    other = recipe_from_text(TEXT.replace("0.25", "0.3"), "(test)")
    assert run_folder(Path("r"), other).name.startswith("My-Model-depth30-")
    monkeypatch.setenv("COMPRESSOR_RUNS", "/srv/runs")
    assert runs_root() == Path("/srv/runs")
    monkeypatch.delenv("COMPRESSOR_RUNS")
    assert runs_root() == Path("runs")


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("model:\n  source: x\n prune: {}\n", ["recipe (t) is not valid YAML at line 3", "fix that line"]),
        ("", ["recipe (t) is empty", "model: and prune:"]),
        ("- a\n- b\n", ["holds a list, not a mapping"]),
        (
            "model: {source: x}\nprune: {method: depth, ratio: 2}\n",
            ["invalid recipe (t)", "prune.ratio (--ratio)"],
        ),
    ],
)
def test_recipe_text_is_parsed_in_one_place(text, needles):
    with pytest.raises(CompressorError) as bad:
        recipe_from_text(text, "(t)")
    for needle in needles:
        assert needle in str(bad.value)
