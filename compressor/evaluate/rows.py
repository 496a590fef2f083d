"""Evaluation rows: open a task's dataset (local or Hub, at a recorded commit) and read one row of each format.

Sources and Hub snapshots are those of `compressor.data.load_rows`; the commit is recorded in the report.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError

if TYPE_CHECKING:
    from compressor.data import Rows
    from compressor.evaluate.config import EvalTask

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def open_rows(task: EvalTask, token: str | None = None) -> Rows:
    """A task's dataset as `compressor.data.Rows` (`raw` rows, the `root` image paths are relative to, the Hub
    `commit` or None). From the Hub only the files of the task's split are fetched; images the rows reference
    beside them are fetched by `Rows.prefetch` for the rows picked."""
    from compressor.data import load_rows

    return load_rows(task.dataset, task.split, task.image_folder, task.revision, token, subset=task.subset)


def pick(n_rows: int, limit: int, sample: str = "random", seed: int = 0) -> list[int]:
    """The row indices evaluated, in the order scored: with sample="random" a uniform draw of `limit` rows (a
    shuffle of all indices with `seed`, cut to `limit`), with sample="first" the first `limit` rows."""
    idx = list(range(n_rows))
    if sample == "random":
        random.Random(seed).shuffle(idx)
    elif sample != "first":
        raise CompressorError(f"eval sample {sample!r} must be random or first")
    return idx[: min(limit, n_rows)]


def _need(row: dict[str, Any], key: str, fmt: str) -> Any:
    if row.get(key) is None:
        raise CompressorError(f"{fmt} row has keys {sorted(row)}; it needs {key!r}. {FORMATS[fmt]}")
    return row[key]


def images(row: dict[str, Any], root: Path | None) -> list:
    """The row's images as RGB PIL images: `images` (a list) or `image` (one), as paths, PIL images or bytes."""
    from compressor.data import _open_image

    value = row.get("images")
    if value is None:
        value = [row["image"]] if row.get("image") is not None else []
    elif not isinstance(value, list):
        value = [value]
    return [_open_image(v, root) for v in value if v is not None]


def vqa(row: dict[str, Any]) -> tuple[str, list[str]]:
    """(question, human answers); answers as a list of strings, VQA v2's list of {'answer': …}, or one string."""
    question = _need(row, "question", "vqa")
    answers = row.get("answers")
    if answers is None:
        answers = [_need(row, "answer", "vqa")]
    elif isinstance(answers, str):
        answers = [answers]
    answers = [a["answer"] if isinstance(a, dict) else a for a in answers]
    if not answers:
        raise CompressorError(f"vqa row with question {question!r} has no answers. {FORMATS['vqa']}")
    return question, [str(a) for a in answers]


def yes_no(row: dict[str, Any]) -> tuple[str, str]:
    """(question, 'yes' or 'no')."""
    question = _need(row, "question", "yes_no")
    answer = _need(row, "answer", "yes_no")
    if isinstance(answer, bool):
        return question, "yes" if answer else "no"
    text = str(answer).strip().lower().rstrip(".")
    if text not in ("yes", "no"):
        raise CompressorError(f"yes_no answer {answer!r} must be yes or no. {FORMATS['yes_no']}")
    return question, text


def multiple_choice(row: dict[str, Any]) -> tuple[str, list[str], str, str | None]:
    """(question, choices, correct letter, context or None)."""
    question = _need(row, "question", "multiple_choice")
    choices = row.get("choices") or row.get("options")
    if choices is None:  # MMBench: one column per option letter
        choices = [row[k] for k in LETTERS if isinstance(row.get(k), str) and row[k].strip()]
    if not choices or len(choices) > len(LETTERS):
        raise CompressorError(f"multiple_choice row has no usable choices. {FORMATS['multiple_choice']}")
    answer = _need(row, "answer", "multiple_choice")
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        letter = LETTERS[answer]
    elif isinstance(answer, str) and answer.strip().upper() in LETTERS[: len(choices)]:
        letter = answer.strip().upper()
    elif isinstance(answer, str) and answer in choices:
        letter = LETTERS[choices.index(answer)]
    else:
        raise CompressorError(
            f"multiple_choice answer {answer!r} is neither an option letter, an index nor one of the "
            f"{len(choices)} choices. {FORMATS['multiple_choice']}"
        )
    context = row.get("hint") or row.get("context") or None
    return question, [str(c) for c in choices], letter, context


FORMATS = {
    "vqa": "vqa rows: 'image' or 'images', 'question', and 'answers' (a list of the human answers) or 'answer'.",
    "yes_no": "yes_no rows: 'image' or 'images', 'question', and 'answer' (yes or no), as in POPE.",
    "multiple_choice": "multiple_choice rows: optional 'image' or 'images', 'question', 'choices' (a list; or "
    "MMBench's A/B/C/D columns), 'answer' (a letter, an index into choices, or the choice itself), optional "
    "'hint' or 'context'.",
}


def conversation(row: dict[str, Any], root: Path | None) -> dict[str, Any]:
    """A conversational row (`images` + `messages`, or LLaVA's `conversations`) normalised by
    `compressor.data.normalise`; a question-answer row (vqa / yes_no format) becomes a one-turn conversation."""
    from compressor.data import normalise

    if "messages" not in row and "conversations" not in row and row.get("question") is not None:
        answers = row.get("answers")
        answer = (
            row.get("answer") if answers is None else (answers[0] if isinstance(answers, list) else answers)
        )
        if isinstance(answer, dict):
            answer = answer.get("answer")
        if answer is not None:
            imgs = images(row, root)
            user = [{"type": "image"} for _ in imgs] + [{"type": "text", "text": str(row["question"])}]
            messages = [
                {"role": "user", "content": user},
                {"role": "assistant", "content": [{"type": "text", "text": str(answer)}]},
            ]
            return {"images": imgs, "messages": messages}
    return normalise(dict(row), root)
