"""The house's rooms stay livable: no file of the app's package or of the embedded Hub's is over 600 lines, and
the root app.py (what the Space, the Docker image and `make app` run) stays a few lines that import the app."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 600


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


@pytest.mark.parametrize("package", ["compressor/app", "compressor/hubserver"])
def test_no_file_of_the_package_is_over_600_lines(package):
    files = sorted((REPO / package).glob("**/*.py"))
    assert len(files) > 1, f"{package} is a package of several files"
    too_long = {str(p.relative_to(REPO)): _lines(p) for p in files if _lines(p) > MAX_LINES}
    assert not too_long, f"over {MAX_LINES} lines: {too_long}"
    for path in files:
        assert path.read_text().lstrip().startswith('"""'), f"{path.relative_to(REPO)} has a module docstring"


def test_the_root_app_is_a_few_lines():
    assert not (REPO / "compressor" / "hubserver.py").exists(), "the embedded Hub is the package only"
    assert _lines(REPO / "app.py") < 40, "app.py only imports the app from compressor/app and serves it"


def test_the_readme_layout_names_every_module():
    """README's Layout section names each module and package of compressor/ (the tree and the text agree)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())
    names = [p.stem for p in (REPO / "compressor").glob("*.py") if p.stem not in ("__init__", "__main__")]
    names += [p.name for p in (REPO / "compressor").iterdir() if (p / "__init__.py").is_file()]
    missing = [n for n in sorted(names) if f"compressor/{n}" not in section and f"`{n}.py`" not in section]
    assert not missing, f"README's Layout section does not name: {missing}"
    for path in {w.strip("`(),;.") for w in section.split() if w.strip("`(),;").startswith("compressor/")}:
        assert (REPO / path).exists() or (REPO / f"{path}.py").exists(), (
            f"README names {path}, not in the tree"
        )


# Files of compressor/ allowed over 600 lines, and why (issue 21: "except where you say why").
LONG = {
    "compressor/api.py": "the one orchestrator: every stage of `run` and the Python API in one place; splitting it "
    "by stage is the next cut",
    "compressor/reference.py": "the real-weights reference MLLM build: its data, model, training stages, versions "
    "and card, read top to bottom",
    "compressor/card.py": "the model card: mostly the card's own prose and tables, read top to bottom",
    "compressor/plan.py": "the planner: depth and width shapes, parameter counts and the plan table",
    "compressor/study.py": "a study's file, runner, tables and plots: issue 20's seed averaging took it past 600; "
    "its plots and the seed's published numbers are the next cut",
}


def test_no_file_of_compressor_is_over_600_lines_but_those_said_why():
    too_long = {
        str(p.relative_to(REPO)): _lines(p)
        for p in (REPO / "compressor").glob("**/*.py")
        if _lines(p) > MAX_LINES
    }
    unexplained = {k: v for k, v in too_long.items() if k not in LONG}
    assert not unexplained, f"over {MAX_LINES} lines with no reason in LONG: {unexplained}"
    stale = sorted(set(LONG) - set(too_long))
    assert not stale, f"no longer over {MAX_LINES} lines (remove them from LONG): {stale}"
