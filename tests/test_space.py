"""The Space (spaces/): its front matter validates with the Hub and its pins agree with pyproject.toml."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
SPACE = REPO / "spaces"


def _pins(lines: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


@pytest.fixture(scope="module")
def project_pins() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return _pins(project["dependencies"] + project["optional-dependencies"]["app"])


@pytest.fixture(scope="module")
def space_card():
    from huggingface_hub import SpaceCard

    return SpaceCard.load(SPACE / "README.md")


def test_front_matter_validates_with_the_hub(hub_server, space_card):
    space_card.validate(repo_type="space")  # POST /api/validate-yaml; a bad card raises ValueError


def test_front_matter_runs_the_app_with_oauth(space_card, project_pins):
    data = space_card.data
    assert data.sdk == "gradio" and data.app_file == "app.py"
    assert (REPO / data.app_file).is_file(), "the Space runs the project's app.py, copied beside the package"
    assert project_pins["gradio"].specifier.contains(data.sdk_version), (
        "sdk_version must be the pinned gradio"
    )
    assert "oauth" in project_pins["gradio"].extras
    assert data.hf_oauth is True
    assert {"read-repos", "write-repos", "manage-repos"} <= set(data.hf_oauth_scopes)
    assert len(data.short_description) <= 60


def test_requirements_agree_with_pyproject(project_pins):
    lines = [
        line.strip()
        for line in (SPACE / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    space = _pins(lines)
    assert sorted(space) == sorted(project_pins), "the Space installs exactly the package's dependencies"
    for name, req in space.items():
        want = project_pins[name]
        assert (req.specifier, req.extras) == (want.specifier, want.extras), f"{name}: {req} != {want}"
    assert str(space["torch"].specifier) == "==2.13.0", "torch is pinned exactly"


@pytest.fixture(scope="module")
def docker_card():
    """The second front matter in spaces/README.md: the Docker Space's."""
    import re

    from huggingface_hub import SpaceCard

    text = (SPACE / "README.md").read_text()
    block = re.search(r"<!-- docker-front-matter -->\n```yaml\n(.*?)```", text, re.S)
    assert block, "spaces/README.md holds the Docker Space's front matter after <!-- docker-front-matter -->"
    return SpaceCard(f"---\n{block.group(1)}---\n# compressor\n")


def test_docker_front_matter_validates_with_the_hub(hub_server, docker_card):
    docker_card.validate(repo_type="space")


def test_docker_front_matter_runs_the_dockerfile(docker_card, space_card):
    data = docker_card.data
    assert data.sdk == "docker" and data.app_port == 7860
    expose = [
        line.split()[1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("EXPOSE")
    ]
    assert expose == [str(data.app_port)], "the Space's app_port is the port the image exposes"
    assert "sdk_version" not in data.to_dict() and "app_file" not in data.to_dict()
    same = ("title", "license", "short_description", "hf_oauth", "hf_oauth_scopes")
    assert {k: data.to_dict().get(k) for k in same} == {k: space_card.data.to_dict().get(k) for k in same}
