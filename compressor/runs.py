"""Where a run's folder is: one naming policy for the CLI (`compressor run`) and the app; where a stage's report
is in it (`report_path`, which also reads old run folders).

Runs go under `runs_root()` ($COMPRESSOR_RUNS, else `runs/`). A recipe with a name (a recipe file: its stem)
runs in ROOT/NAME; one without (the app's form and API, a `base64:` recipe) in a folder named by its content:
the model's name, the method and ratio, and a hash of the recipe. Running the same recipe again resumes its
folder; an edited unnamed recipe gets a folder of its own (an edited named one is refused by the run folder,
which says how to start over).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from compressor.recipe import Recipe, dump_recipe

RUNS_ENV = "COMPRESSOR_RUNS"


# The recovery stage's report was reports/train.json before it took the stage's name: old run folders are read
# as they are.
OLD_REPORT_NAMES = {"recover": "train"}


def report_path(run_dir: str | Path, stage: str) -> Path:
    """RUN/reports/STAGE.json (`train`, the recovery's old name, is `recover`); in an old run folder that has
    only reports/train.json, that file."""
    old_names = {old: new for new, old in OLD_REPORT_NAMES.items()}
    stage = old_names.get(stage, stage)
    reports = Path(run_dir) / "reports"
    path = reports / f"{stage}.json"
    old = reports / f"{OLD_REPORT_NAMES.get(stage, stage)}.json"
    return old if not path.is_file() and old.is_file() else path


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV) or "runs")


def safe_name(text: str) -> str:
    """A folder name from any text: runs of other characters than letters, digits, '.', '_' and '-' become '-'."""
    return re.sub(r"[^\w.-]+", "-", text)


def run_folder(root: Path, recipe: Recipe, name: str | None = None) -> Path:
    """The run folder of `recipe` under `root`: ROOT/NAME for a named recipe, else named by its content."""
    if name:
        return root / name
    digest = hashlib.sha256(dump_recipe(recipe).encode()).hexdigest()[:10]
    model = safe_name(Path(recipe.model.source.rstrip("/")).name).strip("-") or "model"
    return root / f"{model}-{recipe.prune.method}{round(recipe.prune.ratio * 100)}-{digest}"
