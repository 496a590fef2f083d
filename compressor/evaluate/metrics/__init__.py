"""Our `evaluate.Metric` modules, one folder each (`<name>/<name>.py`), loaded by path.

`evaluate.load("vqa_accuracy")` would look the name up on the Hub, which fails offline; loading the folder's
path never touches the network. The scripts import only `re`, `datasets` and `evaluate`, because `evaluate`
copies each script into its modules cache and imports it from there.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
NAMES = ("vqa_accuracy", "yes_no", "multiple_choice")

_LOADED: dict[str, object] = {}


def path(name: str) -> Path:
    if name not in NAMES:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(NAMES)}")
    return HERE / name


def load(name: str):
    """The `evaluate.EvaluationModule` of one of our metrics (loaded once per process)."""
    if name not in _LOADED:
        import evaluate

        _LOADED[name] = evaluate.load(str(path(name)))
    return _LOADED[name]
