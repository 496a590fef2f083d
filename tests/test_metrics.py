"""Our evaluate.Metric modules, loaded by path with the genuine `evaluate`, against hand-computed values."""

from __future__ import annotations

import pytest

from compressor.evaluate import metrics


@pytest.fixture(scope="module")
def vqa():
    return metrics.load("vqa_accuracy")


@pytest.fixture(scope="module")
def yes_no():
    return metrics.load("yes_no")


@pytest.fixture(scope="module")
def multiple_choice():
    return metrics.load("multiple_choice")


def test_every_metric_ships_as_a_script_in_its_own_folder():
    for name in metrics.NAMES:
        assert (metrics.path(name) / f"{name}.py").is_file()


@pytest.mark.parametrize(
    ("prediction", "reference", "same"),
    [
        ("Two", "2", True),  # number words
        ("none", "0", True),
        ("the cat", "cat", True),  # articles
        ("A cat.", "cat", True),  # article and final period
        ("dont", "don't", True),  # contractions
        ("1,000", "1000", True),  # comma between digits
        ("red-white", "red white", True),  # punctuation joining words becomes a space
        ("hot dog!", "hot dog", True),
        ("Yes\n", "yes", True),  # case and whitespace
        ("3.5", "35", False),  # a period inside a number stays
        ("dog", "cat", False),
    ],
)
def test_vqa_answer_normalisation(vqa, prediction, reference, same):
    result = vqa.compute(predictions=[prediction], references=[[reference]])
    assert result["accuracy"] == (1.0 if same else 0.0)


def test_vqa_accuracy_is_min_humans_over_3_averaged_over_leave_one_out():
    refs = ["two", "2", "2", "3", "3", "3", "3", "3", "3", "4"]  # "2": 3 humans, "3": 6, "4": 1
    preds = ["2", "3", "4", "5"]
    # "2": 3 subsets without one of its humans give 2/3, the 7 others 3/3 → (3·2/3 + 7) / 10 = 0.9
    # "3": 6 subsets give min(5/3, 1) = 1, the 4 others min(6/3, 1) = 1 → 1.0
    # "4": 1 subset gives 0, the 9 others 1/3 → 9/30 = 0.3
    expected = (0.9 + 1.0 + 0.3 + 0.0) / 4
    result = metrics.load("vqa_accuracy").compute(predictions=preds, references=[refs] * 4)
    assert result["accuracy"] == pytest.approx(expected)


def test_vqa_accuracy_with_few_answers_caps_the_threshold(vqa):
    # one reference: exact match; two: each leave-one-out set has one human, who must agree
    assert vqa.compute(predictions=["cat"], references=[["cat"]])["accuracy"] == 1.0
    assert vqa.compute(predictions=["cat"], references=[["cat", "dog"]])["accuracy"] == 0.5
    assert vqa.compute(predictions=["cat"], references=[["cat", "cat"]])["accuracy"] == 1.0


def test_yes_no_reads_answers_like_pope(yes_no):
    preds = ["Yes", "no.", "Not at all", "yes, it is", "maybe"]
    refs = ["yes", "yes", "no", "no", "no"]
    # read as yes, no, no, yes, neither → TP 1, FP 1, TN 1, FN 1, one unreadable (wrong)
    result = yes_no.compute(predictions=preds, references=refs)
    assert result == pytest.approx(
        {"accuracy": 0.4, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.4, "parsed": 0.8}
    )


def test_yes_no_precision_recall_f1(yes_no):
    refs = ["yes"] * 4 + ["no"] * 4
    preds = ["yes", "Yes, there is a dog.", "No", "There is no dog."] + ["yes", "no", "No.", "no"]
    # TP 2, FN 2, FP 1, TN 3
    result = yes_no.compute(predictions=preds, references=refs)
    precision, recall = 2 / 3, 2 / 4
    assert result == pytest.approx(
        {
            "accuracy": 5 / 8,
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall),
            "yes_ratio": 3 / 8,
            "parsed": 1.0,
        }
    )


def test_yes_no_rejects_a_reference_that_is_not_yes_or_no(yes_no):
    with pytest.raises(ValueError, match="'maybe' must be 'yes' or 'no'"):
        yes_no.compute(predictions=["yes"], references=["maybe"])


@pytest.mark.parametrize(
    ("generation", "letter"),
    [
        ("A", "A"),
        ("b", "B"),
        ("(C)", "C"),
        ("D.", "D"),
        ("B. a dog", "B"),
        ("(B) a dog", "B"),
        ("C: blue", "C"),
        ("The answer is D.", "D"),
        ("Answer: (A)", "A"),
        ("A red square.", None),  # "A" is an article here
        ("the answer is a dog", None),
        ("", None),
    ],
)
def test_multiple_choice_reads_the_letter(multiple_choice, generation, letter):
    result = multiple_choice.compute(predictions=[generation], references=[letter or "A"])
    assert result["parsed"] == (1.0 if letter else 0.0)
    assert result["accuracy"] == (1.0 if letter else 0.0)


def test_multiple_choice_accuracy(multiple_choice):
    result = multiple_choice.compute(
        predictions=["(B)", "A. a cat", "C", "no idea"], references=["B", "C", "c", "D"]
    )
    assert result == pytest.approx({"accuracy": 0.5, "parsed": 0.75})
