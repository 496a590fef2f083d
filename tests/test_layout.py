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
