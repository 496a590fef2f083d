"""Multiple-choice letter accuracy (ScienceQA, MMBench, SEED style): the option letter read from a generation.

A generation is read as an option letter when it is

- the letter alone, in any case, in parentheses or followed by a period: "B", "b", "(B)", "B.";
- or starts with the letter followed by ".", ")" or ":" and more text: "B. a dog", "(B) a dog", "B: dog";
- or says "answer is B" / "Answer: (B)" / "option B" anywhere, the letter upper case (first match).

Anything else (e.g. "A red square.", where "A" is an article) reads as no letter and is wrong. References are
option letters ("A".."Z"); the task turns an answer index into its letter before scoring.

- accuracy = correct letters / all
- parsed = share of generations read as a letter

Shipped inside the package and loaded by path with ``evaluate.load`` (no Hub access needed).
"""

import re

import datasets
import evaluate

_CITATION = """\
@inproceedings{lu2022scienceqa,
  title={Learn to Explain: Multimodal Reasoning via Thought Chains for Science Question Answering},
  author={Lu, Pan and Mishra, Swaroop and Xia, Tony and Qiu, Liang and Chang, Kai-Wei and Zhu, Song-Chun
          and Tafjord, Oyvind and Clark, Peter and Kalyan, Ashwin},
  booktitle={NeurIPS},
  year={2022}
}
"""

_INPUTS = """
Args:
    predictions (list of str): generated answers.
    references (list of str): the correct option letter per question.
Returns:
    accuracy, parsed (floats in [0, 1]).
Examples:
    >>> metric = evaluate.load("compressor/evaluate/metrics/multiple_choice")
    >>> metric.compute(predictions=["(B)", "A. a cat"], references=["B", "C"])["accuracy"]
    0.5
"""

_ALONE = re.compile(r"^\(?([A-Za-z])\)?\.?$")
_LEADING = re.compile(r"^\(?([A-Z])(?:\)|\.|:)\s*\S")
_STATED = re.compile(r"(?i:answer is|answer:|option)\s*\(?([A-Z])\b")  # the letter itself upper case


def parse(generation: str) -> str | None:
    """The option letter a generation gives, upper case, or None."""
    text = generation.strip()
    for pattern in (_ALONE, _LEADING, _STATED):
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    return None


def scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    letters = [parse(p) for p in predictions]
    refs = [r.strip().upper() for r in references]
    n = len(refs)
    return {
        "accuracy": sum(p == r for p, r in zip(letters, refs)) / n if n else 0.0,
        "parsed": sum(p is not None for p in letters) / n if n else 0.0,
    }


class MultipleChoice(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://scienceqa.github.io/"],
        )

    def _compute(self, predictions, references):
        return scores(predictions, references)
