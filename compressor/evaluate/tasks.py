"""Eval tasks, one registry entry each. Every task runs the original and the compressed model on the same
samples, one sample at a time, and returns both scores of each metric.

Row formats (keys of one dataset row; images are paths relative to the dataset folder, PIL images, or
`datasets` Image values):

- ``vqa`` — ``image`` or ``images``, ``question``, ``answers`` (the human answers: a list of strings, or VQA v2's
  list of ``{"answer": …}``) or a single ``answer`` (GQA). Scored with VQA accuracy (metrics/vqa_accuracy).
  TextVQA and VQA v2 rows from the Hub work as they are.
- ``yes_no`` — ``image`` or ``images``, ``question``, ``answer`` ("yes"/"no"). POPE rows from the Hub work as they
  are. Scored with accuracy, precision, recall, F1 and yes-ratio (metrics/yes_no).
- ``multiple_choice`` — optional ``image``/``images``, ``question``, ``choices`` (a list) or MMBench's ``A``, ``B``,
  ``C``, ``D`` columns, ``answer`` (a letter, an index into the choices as in ScienceQA, or the choice's text),
  optional ``hint``/``context``. The prompt lists the options as "A. …" lines; the generated letter is scored
  (metrics/multiple_choice).
- ``perplexity`` — plain ``text`` rows (the language model's own perplexity over every token, no chat template,
  no image: held-out text), or conversations: ``images`` + ``messages`` (TRL's format), LLaVA's
  ``conversations``, or a question-answer row of the formats above (one user turn, one assistant turn). Perplexity over the assistant
  tokens (each assistant turn and its end-of-turn token), found by rendering the conversation up to each turn
  with the chat template; where the template does not render the conversation as prefix + turn, over all text
  tokens (noted in the report).
- ``teacher_agreement`` — the same conversations: the share of text positions where the compressed model's top-1
  next token equals the original's (the original scores 1 by definition).

Generation is greedy, from the model's own chat template with the user turn: the images, then the question and
the task's instruction (LLaVA-1.5's evaluation prompts by default).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from compressor.registry import Registry

if TYPE_CHECKING:
    from compressor.evaluate.config import EvalTask
    from compressor.evaluate.pair import ModelPair

Progress = Callable[[Iterable[Any], str], Iterable[Any]]

SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."


@dataclass
class Outcome:
    scores: dict[str, tuple[float, float]]  # metric → (original, compressed)
    samples: int
    notes: list[str] = field(default_factory=list)


class Task:
    metrics: ClassVar[dict[str, bool | None]]  # metric → higher is better (None: no direction, no retained %)
    primary: ClassVar[tuple[str, ...]]  # metrics averaged into the task's retained %

    def run(
        self,
        pair: ModelPair,
        rows: Sequence[dict[str, Any]],
        root: Path | None,
        indices: list[int],
        cfg: EvalTask,
        progress: Progress,
    ) -> Outcome:
        raise NotImplementedError


TASKS: Registry[type[Task]] = Registry("eval task")


def _with_instruction(text: str, cfg: EvalTask, default: str) -> str:
    instruction = default if cfg.prompt is None else cfg.prompt
    return f"{text}\n{instruction}" if instruction else text


class _Generation(Task):
    metric: ClassVar[str]  # our evaluate module
    instruction: ClassVar[str]

    def prompt(self, row: dict[str, Any]) -> tuple[str, Any]:
        """(question text without the instruction, reference)."""
        raise NotImplementedError

    def run(self, pair, rows, root, indices, cfg, progress) -> Outcome:
        from compressor.evaluate import metrics
        from compressor.evaluate.rows import images

        predictions: dict[str, list[str]] = {"original": [], "compressed": []}
        references = []
        for i in progress(indices, f"{cfg.name} on {cfg.dataset}"):
            row = dict(rows[i])
            question, ref = self.prompt(row)
            answers = pair.answer(
                _with_instruction(question, cfg, self.instruction), images(row, root), cfg.max_new_tokens
            )
            for side, text in answers.items():
                predictions[side].append(text)
            references.append(ref)
        module = metrics.load(self.metric)
        result = {
            side: module.compute(predictions=p, references=references) for side, p in predictions.items()
        }
        scores = {m: (float(result["original"][m]), float(result["compressed"][m])) for m in self.metrics}
        return Outcome(scores, len(references))


@TASKS.register("vqa")
class Vqa(_Generation):
    metric = "vqa_accuracy"
    instruction = SHORT_ANSWER
    metrics = {"accuracy": True}
    primary = ("accuracy",)

    def prompt(self, row):
        from compressor.evaluate.rows import vqa

        return vqa(row)


@TASKS.register("yes_no")
class YesNo(_Generation):
    metric = "yes_no"
    instruction = SHORT_ANSWER
    metrics = {
        "accuracy": True,
        "precision": True,
        "recall": True,
        "f1": True,
        "yes_ratio": None,
        "parsed": None,
    }
    primary = ("accuracy", "f1")

    def prompt(self, row):
        from compressor.evaluate.rows import yes_no

        return yes_no(row)


@TASKS.register("multiple_choice")
class MultipleChoice(_Generation):
    metric = "multiple_choice"
    instruction = LETTER_ANSWER
    metrics = {"accuracy": True, "parsed": None}
    primary = ("accuracy",)

    def prompt(self, row):
        from compressor.evaluate.rows import LETTERS, multiple_choice

        question, choices, letter, context = multiple_choice(row)
        lines = ([f"Context: {context}"] if context else []) + [question]
        lines += [f"{LETTERS[k]}. {choice}" for k, choice in enumerate(choices)]
        return "\n".join(lines), letter


def _image_ids(pair: ModelPair) -> list[int]:
    from compressor.prune.calibration import image_token_id

    image_id = image_token_id(pair.original.config)
    return [] if image_id is None else [image_id]


def _text_positions(pair: ModelPair, enc: dict[str, Any]):
    """Positions holding text tokens (not image placeholders, not padding)."""
    import torch

    ids = enc["input_ids"][0]
    keep = ~torch.isin(ids, torch.tensor(_image_ids(pair), dtype=ids.dtype, device=ids.device))
    if "attention_mask" in enc:
        keep &= enc["attention_mask"][0].bool()
    return keep


def _count_images(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages for part in m["content"] if part.get("type") == "image")


def assistant_positions(pair: ModelPair, conv: dict[str, Any], ids):
    """Positions of the assistant turns' tokens in `ids`, or None when the chat template does not render the
    conversation as (conversation so far + generation prompt) followed by the turn."""
    import torch

    messages, imgs = conv["messages"], conv["images"]
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i == 0:
            continue
        n = _count_images(messages[: i + 1])
        before = pair.encode(messages[:i], imgs[:n], add_generation_prompt=True)["input_ids"][0]
        upto = pair.encode(messages[: i + 1], imgs[:n])["input_ids"][0]
        a, b = len(before), len(upto)
        if b > len(ids) or not torch.equal(ids[:b], upto) or not torch.equal(upto[:a], before):
            return None
        mask[a:b] = True
    return mask if bool(mask.any()) else None


@TASKS.register("perplexity")
class Perplexity(Task):
    metrics = {"perplexity": False}
    primary = ("perplexity",)

    def run(self, pair, rows, root, indices, cfg, progress) -> Outcome:
        import torch
        import torch.nn.functional as F

        from compressor.evaluate.rows import conversation

        nll = {"original": 0.0, "compressed": 0.0}
        tokens = fallback = plain = 0
        with torch.inference_mode():
            for i in progress(indices, f"perplexity on {cfg.dataset}"):
                row = dict(rows[i])
                if isinstance(row.get("text"), str) and "messages" not in row and "question" not in row:
                    enc = pair.encode_text(row["text"])  # held-out text: every token counts
                    ids = enc["input_ids"][0]
                    mask = torch.ones_like(ids, dtype=torch.bool)
                    plain += 1
                else:
                    conv = conversation(row, root)
                    enc = pair.encode(conv["messages"], conv["images"])
                    ids = enc["input_ids"][0]
                    mask = assistant_positions(pair, conv, ids)
                    if mask is None:
                        mask, fallback = _text_positions(pair, enc), fallback + 1
                targets, scored = ids[1:], mask[1:]
                tokens += int(scored.sum())
                for side, model in pair.sides():
                    logits = model(**enc).logits[0, :-1].float()
                    nll[side] += float(F.cross_entropy(logits[scored], targets[scored], reduction="sum"))
        if tokens == 0:
            from compressor.errors import CompressorError

            raise CompressorError(
                f"perplexity: no tokens to score in {cfg.dataset!r}; the rows need assistant turns"
            )
        ppl = {side: math.exp(v / tokens) for side, v in nll.items()}
        notes = [f"{tokens} tokens scored" + (f" ({plain} plain-text rows, all tokens)" if plain else "")]
        if fallback:
            notes.append(
                f"{fallback} of {len(indices)} samples scored on all text tokens (chat template not prefix-stable)"
            )
        return Outcome({"perplexity": (ppl["original"], ppl["compressed"])}, len(indices), notes)


@TASKS.register("teacher_agreement")
class TeacherAgreement(Task):
    metrics = {"agreement": True}
    primary = ("agreement",)

    def run(self, pair, rows, root, indices, cfg, progress) -> Outcome:
        import torch

        from compressor.evaluate.rows import conversation

        agree = total = 0
        with torch.inference_mode():
            for i in progress(indices, f"teacher agreement on {cfg.dataset}"):
                conv = conversation(dict(rows[i]), root)
                enc = pair.encode(conv["messages"], conv["images"])
                scored = _text_positions(pair, enc)[1:]  # the next token is text
                top = [model(**enc).logits[0, :-1].argmax(-1)[scored] for _, model in pair.sides()]
                agree += int((top[0] == top[1].to(top[0].device)).sum())
                total += int(scored.sum())
        notes = [f"{total} next-token positions compared"]
        return Outcome({"agreement": (1.0, agree / total if total else 0.0)}, len(indices), notes)
