"""Yes/no accuracy, precision, recall, F1 and yes-ratio, as POPE reports them ("yes" is the positive class).

A generation is read as LLaVA's POPE evaluation reads it: only its first sentence counts, commas are dropped,
and it is "no" when one of its words is "no" or "not"; unlike LLaVA's script, it is "yes" only when one of its
words is "yes", and anything else ("maybe", an empty answer) is neither: wrong, and never a positive
prediction. References are "yes" or "no" (any case).

- accuracy = correct / all
- precision = true yes / predicted yes (0 when nothing was predicted yes)
- recall = true yes / reference yes
- f1 = 2·precision·recall / (precision + recall)
- yes_ratio = predicted yes / all (a model that always says yes scores 1.0; POPE's balanced splits have 0.5)
- parsed = share of generations read as yes or no

Shipped inside the package and loaded by path with ``evaluate.load`` (no Hub access needed).
"""

import re

import datasets
import evaluate

_CITATION = """\
@inproceedings{li2023pope,
  title={Evaluating Object Hallucination in Large Vision-Language Models},
  author={Li, Yifan and Du, Yifan and Zhou, Kun and Wang, Jinpeng and Zhao, Wayne Xin and Wen, Ji-Rong},
  booktitle={EMNLP},
  year={2023}
}
"""

_INPUTS = """
Args:
    predictions (list of str): generated answers.
    references (list of str): "yes" or "no" per question.
Returns:
    accuracy, precision, recall, f1, yes_ratio, parsed (floats in [0, 1]).
Examples:
    >>> metric = evaluate.load("compressor/evaluate/metrics/yes_no")
    >>> metric.compute(predictions=["Yes, there is.", "No."], references=["yes", "yes"])["recall"]
    0.5
"""

_WORD = re.compile(r"[a-z']+")


def parse(generation: str) -> str | None:
    """'yes', 'no', or None for a generation that says neither."""
    first = generation.strip().split(".")[0].replace(",", "").lower()
    words = set(_WORD.findall(first))
    if words & {"no", "not"}:
        return "no"
    if "yes" in words:
        return "yes"
    return None


def reference(value: str) -> str:
    text = str(value).strip().lower()
    if text not in ("yes", "no"):
        raise ValueError(f"yes/no reference {value!r} must be 'yes' or 'no'")
    return text


def scores(predictions: list[str], references: list) -> dict[str, float]:
    preds = [parse(p) for p in predictions]
    refs = [reference(r) for r in references]
    n = len(refs)
    tp = sum(p == "yes" and r == "yes" for p, r in zip(preds, refs))
    predicted_yes = sum(p == "yes" for p in preds)
    actual_yes = sum(r == "yes" for r in refs)
    correct = sum(p == r for p, r in zip(preds, refs))
    precision = tp / predicted_yes if predicted_yes else 0.0
    recall = tp / actual_yes if actual_yes else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": correct / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": predicted_yes / n if n else 0.0,
        "parsed": sum(p is not None for p in preds) / n if n else 0.0,
    }


class YesNo(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/RUCAIBox/POPE"],
        )

    def _compute(self, predictions, references):
        return scores(predictions, references)
