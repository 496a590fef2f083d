"""Evaluation end to end on tiny LLaVAs: an original against a depth-pruned copy, every task, speed and memory, a
dataset from the embedded Hub, the command line, and the lmms-eval bridge's command line and results parsing (the
real harness: tests/test_lmms.py)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from compressor.errors import CompressorError
from compressor.evaluate import EvalReport, Evaluate, LmmsEval, Score, TaskResult, lmms, retained, rows, run
from compressor.evaluate.command import add_parser
from tests.fixtures_hub import ALICE_WRITE


def _quiet(it, _desc):
    return it


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models(tiny_saved, tmp_path_factory) -> tuple[Path, Path]:
    """(original, compressed): a tiny LLaVA and a copy with 30 % of its backbone removed by depth (data-free)."""
    from compressor import prune
    from compressor.arch import spec_for
    from compressor.models import load_model, load_processor
    from compressor.plan import resolve
    from compressor.recipe import Prune

    original = tiny_saved("llava")
    config = json.loads((original / "config.json").read_text())
    spec, backbone = spec_for(config)
    model = load_model(original, spec, "float32")
    plan = resolve(config, spec, backbone, Prune(method="depth", ratio=0.3, scorer="last"))
    prune.apply(model, spec, backbone, plan, batches=None, progress=_quiet)
    compressed = tmp_path_factory.mktemp("pruned")
    model.save_pretrained(compressed)
    load_processor(original).save_pretrained(compressed)
    return original, compressed


def _write_rows(folder: Path, rows_: list[dict], n_images: int) -> Path:
    from compressor.tiny import tiny_images

    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(tiny_images(n_images, seed=7)):
        image.save(folder / "images" / f"{i}.png")
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_))
    return folder


def yes_no_rows(n: int) -> list[dict]:
    return [
        {
            "image": f"images/{i}.png",
            "question": "Is there a red square in the image?",
            "answer": "yes" if i % 2 else "no",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory, models) -> dict[str, Path]:
    """One small dataset folder per format. VQA's answers are the original's own greedy answers, so the original
    scores 1.0 and the compressed model's retained % is its accuracy × 100."""
    from compressor.demo import write_dataset
    from compressor.evaluate.pair import ModelPair
    from compressor.tiny import tiny_images

    root = tmp_path_factory.mktemp("eval-data")
    images = tiny_images(3, seed=7)
    pair = ModelPair.load(*models)
    own = [pair.answer(f"What is shown?\n{rows_prompt()}", [img], 4)["original"] for img in images]
    vqa = [
        {"image": f"images/{i}.png", "question": "What is shown?", "answers": [own[i]] * 10} for i in range(3)
    ]
    choice = [
        {
            "image": f"images/{i}.png",
            "question": "Which shape?",
            "choices": ["square", "circle", "star"],
            "answer": i,
        }
        for i in range(3)
    ]
    return {
        "vqa": _write_rows(root / "vqa", vqa, 3),
        "yes_no": _write_rows(root / "yes_no", yes_no_rows(3), 3),
        "multiple_choice": _write_rows(root / "mc", choice, 3),
        "conversations": write_dataset(root / "conversations", n=4),
    }


def rows_prompt() -> str:
    from compressor.evaluate.tasks import SHORT_ANSWER

    return SHORT_ANSWER


@pytest.fixture(scope="module")
def report(models, datasets_dir) -> EvalReport:
    d = datasets_dir
    cfg = Evaluate(
        tasks=[
            {"name": "vqa", "dataset": str(d["vqa"]), "limit": 3, "max_new_tokens": 4},
            {"name": "yes_no", "dataset": str(d["yes_no"]), "limit": 3, "max_new_tokens": 4},
            {
                "name": "multiple_choice",
                "dataset": str(d["multiple_choice"]),
                "limit": 2,
                "max_new_tokens": 4,
            },
            {"name": "perplexity", "dataset": str(d["conversations"]), "limit": 3},
            {"name": "teacher_agreement", "dataset": str(d["conversations"]), "limit": 3, "seed": 1},
        ],
        speed_prompt_tokens=8,
        speed_new_tokens=6,
        speed_repeats=2,
    )
    return run(models[0], models[1], cfg, progress=_quiet)


# ---------------------------------------------------------------------------- every task, end to end


def test_every_task_reports_both_models_on_the_same_samples(report):
    assert [t.name for t in report.tasks] == [
        "vqa",
        "yes_no",
        "multiple_choice",
        "perplexity",
        "teacher_agreement",
    ]
    assert [t.samples for t in report.tasks] == [3, 3, 2, 3, 3]
    expected = {
        "vqa": {"accuracy"},
        "yes_no": {"accuracy", "precision", "recall", "f1", "yes_ratio", "parsed"},
        "multiple_choice": {"accuracy", "parsed"},
        "perplexity": {"perplexity"},
        "teacher_agreement": {"agreement"},
    }
    for task in report.tasks:
        assert set(task.metrics) == expected[task.name]
        assert task.split == "test" and task.commit is None and task.seconds > 0
        assert task.sample == "random" and task.seed == (1 if task.name == "teacher_agreement" else 0)
        assert len(task.sample_ids) == len(set(task.sample_ids)) == task.samples
        assert set(task.sample_ids) <= set(range(task.rows))
    mc = next(t for t in report.tasks if t.name == "multiple_choice")
    assert (mc.rows, mc.sample_ids) == (3, rows.pick(3, 2, "random", 0))
    assert report.device == "cpu" and report.dtype == "float32"


# Which way each metric is better (the module doc's definitions, written out): retained % is compressed /
# original where higher is better, original / compressed where lower is, and undefined where neither.
DIRECTION = {
    ("vqa", "accuracy"): True,
    ("yes_no", "accuracy"): True,
    ("yes_no", "precision"): True,
    ("yes_no", "recall"): True,
    ("yes_no", "f1"): True,
    ("yes_no", "yes_ratio"): None,
    ("yes_no", "parsed"): None,
    ("multiple_choice", "accuracy"): True,
    ("multiple_choice", "parsed"): None,
    ("perplexity", "perplexity"): False,
    ("teacher_agreement", "agreement"): True,
}
PRIMARY = {("yes_no", "accuracy"), ("yes_no", "f1"), ("multiple_choice", "accuracy"), ("vqa", "accuracy")}
PRIMARY |= {("perplexity", "perplexity"), ("teacher_agreement", "agreement")}


def test_scores_are_in_range_and_retained_follows_the_direction(report):
    by_name = {t.name: t for t in report.tasks}
    vqa = by_name["vqa"].metrics["accuracy"]
    assert vqa.original == 1.0  # the references are the original's own answers
    assert vqa.compressed in (0.0, 1 / 3, 2 / 3, 1.0)  # 3 questions
    agreement = by_name["teacher_agreement"].metrics["agreement"]
    assert agreement.original == 1.0 and 0.0 <= agreement.compressed < 1.0
    ppl = by_name["perplexity"].metrics["perplexity"]
    assert ppl.original > 1 and ppl.compressed > 1
    assert any("tokens scored" in n for n in by_name["perplexity"].notes)
    task_retained = {}
    for task in report.tasks:
        primary = []
        for name, score in task.metrics.items():
            o, c, higher = score.original, score.compressed, DIRECTION[task.name, name]
            assert (score.higher_is_better, score.primary) == (higher, (task.name, name) in PRIMARY), name
            if task.name != "perplexity":
                assert 0.0 <= o <= 1.0 and 0.0 <= c <= 1.0
            num, den = (c, o) if higher else (o, c)
            want = None if higher is None or den == 0 else 100 * num / den
            assert score.retained == (None if want is None else pytest.approx(want)), (task.name, name)
            if score.primary and want is not None:
                primary.append(want)
        want_task = sum(primary) / len(primary) if primary else None
        assert task.retained == (None if want_task is None else pytest.approx(want_task)), task.name
        task_retained[task.name] = want_task
    counted = [r for r in task_retained.values() if r is not None]
    assert report.average_retained == pytest.approx(sum(counted) / len(counted))
    assert task_retained["vqa"] == pytest.approx(100 * vqa.compressed)


def test_speed_rows_are_present_and_positive(report):
    original, compressed = report.speed_of("original"), report.speed_of("compressed")
    for row in (original, compressed):
        assert row.prefill_ms_min > 0 and row.prefill_ms_median >= row.prefill_ms_min
        assert row.decode_tokens_per_s_best >= row.decode_tokens_per_s_median > 0
        assert row.disk_bytes > 0 and row.peak_memory_bytes > 0 and row.memory_method
        assert (row.prompt_tokens, row.new_tokens, row.repeats) == (8, 6, 2)
    assert compressed.params_backbone < original.params_backbone
    assert compressed.params_total < original.params_total
    assert compressed.disk_bytes < original.disk_bytes
    assert "interleaved" in report.speed_method and report.timings["speed"] > 0
    assert "batch 1" in report.speed_method  # the table says which batch and widths its numbers are for
    widths = re.search(r"widths: original: (.*); compressed: (.*)$", report.speed_method)
    assert widths and widths[1] != widths[2] and "MLP" in widths[2], report.speed_method


def test_report_is_json_and_renders_a_table(report):
    data = json.loads(json.dumps(report.model_dump(mode="json")))
    assert EvalReport.model_validate(data) == report
    table = report.table()
    for text in ("teacher_agreement", "perplexity *", "average retained", "decode tokens/s, median"):
        assert text in table


# ---------------------------------------------------------------------------- arithmetic and row formats


def test_retained_arithmetic():
    assert retained(0.5, 0.4, True) == pytest.approx(80.0)
    assert retained(10.0, 12.5, False) == pytest.approx(80.0)  # perplexity: original / compressed
    assert retained(0.0, 0.3, True) is None and retained(0.5, 0.5, None) is None
    task = TaskResult.build(
        {
            "accuracy": Score.of(0.5, 0.45, True, True),  # 90 %
            "f1": Score.of(0.8, 0.88, True, True),  # 110 %
            "yes_ratio": Score.of(0.5, 0.7, None, False),
        },
        name="yes_no",
        task="yes_no",
        samples=10,
    )
    assert task.retained == pytest.approx(100.0)


def test_row_formats_accept_common_hub_layouts():
    assert rows.vqa({"question": "q", "answers": [{"answer": "a"}, {"answer": "b"}]}) == ("q", ["a", "b"])
    assert rows.vqa({"question": "q", "answer": "cat"}) == ("q", ["cat"])  # GQA
    assert rows.yes_no({"question": "q", "answer": "Yes"}) == ("q", "yes")  # POPE
    sqa = {"question": "q", "choices": ["x", "y", "z"], "answer": 2, "hint": "ctx"}  # ScienceQA
    assert rows.multiple_choice(sqa) == ("q", ["x", "y", "z"], "C", "ctx")
    mmb = {"question": "q", "A": "x", "B": "y", "C": "z", "D": None, "answer": "B", "hint": None}  # MMBench
    assert rows.multiple_choice(mmb) == ("q", ["x", "y", "z"], "B", None)
    assert rows.multiple_choice({"question": "q", "choices": ["x", "y"], "answer": "y"})[2] == "B"
    with pytest.raises(CompressorError, match="yes_no answer 'maybe' must be yes or no"):
        rows.yes_no({"question": "q", "answer": "maybe"})
    with pytest.raises(CompressorError, match="needs 'question'"):
        rows.vqa({"prompt": "q", "answers": ["a"]})
    assert rows.pick(10, 3, "first") == [0, 1, 2] and sorted(rows.pick(10, 3, "random", 5)) == sorted(
        set(rows.pick(10, 3, "random", 5))
    )


def test_a_limit_draws_a_seeded_random_sample_by_default_and_first_takes_rows_in_order():
    from compressor.evaluate.config import EvalTask

    task = EvalTask(name="yes_no", dataset="d", limit=90)
    assert (task.sample, task.seed) == ("random", 0)
    grouped = ["adversarial"] * 300 + ["popular"] * 300 + ["random"] * 300  # POPE's stored order
    drawn = rows.pick(len(grouped), task.limit, task.sample, task.seed)
    counts = {c: sum(grouped[i] == c for i in drawn) for c in ("adversarial", "popular", "random")}
    assert len(set(drawn)) == 90 and all(15 <= n <= 45 for n in counts.values()), counts
    assert rows.pick(900, 90, "random", 0) == drawn and rows.pick(900, 90, "random", 1) != drawn
    first = rows.pick(900, 90, "first", 123)
    assert first == list(range(90)) and {grouped[i] for i in first} == {"adversarial"}
    assert rows.pick(4, 90, "random", 0) != [0, 1, 2, 3] and sorted(rows.pick(4, 90, "random", 0)) == [
        0,
        1,
        2,
        3,
    ]
    with pytest.raises(ValidationError, match="write sample: first"):
        EvalTask(name="yes_no", dataset="d", seed=None)
    with pytest.raises(ValidationError, match="'random' or 'first'"):
        EvalTask(name="yes_no", dataset="d", sample="head")


def test_unknown_task_name_suggests_the_closest():
    with pytest.raises(ValidationError, match=r"unknown eval task 'vqq' \(did you mean 'vqa'\?\)"):
        Evaluate.model_validate({"tasks": [{"name": "vqq", "dataset": "x"}]})
    with pytest.raises(ValidationError, match="extra"):
        Evaluate.model_validate({"speed": True, "sped_repeats": 3})


# ---------------------------------------------------------------------------- Hub data and the command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compressor")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_eval_command_on_a_hub_dataset(hub_server, models, repo_name, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    api = HfApi(token=ALICE_WRITE)
    data_id = f"alice/{repo_name}-pope"
    api.create_repo(data_id, repo_type="dataset", private=True)
    commit = api.upload_folder(
        repo_id=data_id, repo_type="dataset", folder_path=_write_rows(tmp_path / "pope", yes_no_rows(4), 4)
    ).oid
    monkeypatch.setenv("HF_TOKEN", ALICE_WRITE)
    hub_server.transcript = []
    out = tmp_path / "reports" / "eval.json"
    args = _parser().parse_args(
        ["eval", str(models[0]), str(models[1]), "--task", f"yes_no={data_id}", "--limit", "2"]
        + ["--max-new-tokens", "3", "--no-speed", "--out", str(out)]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "yes_no (2)" in printed and str(out) in printed
    saved = json.loads(out.read_text())
    task = saved["tasks"][0]
    assert (task["dataset"], task["commit"], task["samples"], task["limit"]) == (data_id, commit, 2, 2)
    assert saved["speed"] == [] and ALICE_WRITE not in out.read_text() + printed
    assert (task["rows"], task["sample"], task["seed"]) == (4, "random", 0)
    assert task["sample_ids"] == rows.pick(4, 2, "random", 0)
    # only the rows file and the images of the two rows scored were fetched
    fetched = _fetched(hub_server.transcript)
    hub_server.transcript = None
    assert fetched == {"rows.jsonl"} | {f"images/{i}.png" for i in task["sample_ids"]}


def _fetched(transcript) -> set[str]:
    """The repo paths whose contents the Hub sent (GET …/resolve/REV/PATH with a 2xx answer)."""
    return {
        path.split("/resolve/", 1)[1].split("/", 1)[1]
        for method, path, status, _ in transcript
        if method == "GET" and "/resolve/" in path and 200 <= status < 300
    }


def test_eval_on_a_hub_dataset_fetches_only_the_split_scored(hub_server, models, repo_name, tmp_path):
    import datasets
    from huggingface_hub import HfApi

    from compressor.tiny import tiny_images

    folder = tmp_path / "pope"
    (folder / "data").mkdir(parents=True)
    images = tiny_images(6, seed=7)
    features = datasets.Features(
        {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
    )
    for split, n in (("test", 6), ("train", 40)):
        datasets.Dataset.from_list(
            [
                {"image": images[i % 6], "question": f"Is there a red square? ({split} {i})", "answer": "yes"}
                for i in range(n)
            ],
            features=features,
        ).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    api = HfApi(token=ALICE_WRITE)
    data_id = f"alice/{repo_name}-parquet"
    api.create_repo(data_id, repo_type="dataset", private=True)
    commit = api.upload_folder(repo_id=data_id, repo_type="dataset", folder_path=folder).oid
    hub_server.transcript = []
    task = {"name": "yes_no", "dataset": data_id, "limit": 3, "max_new_tokens": 3}
    report = run(*models, Evaluate(tasks=[task], speed=False), token=ALICE_WRITE, progress=_quiet)
    fetched = _fetched(hub_server.transcript)
    hub_server.transcript = None
    assert fetched == {"data/test-00000-of-00001.parquet"}
    result = report.tasks[0]
    assert (result.commit, result.rows, result.samples) == (commit, 6, 3)
    assert result.sample_ids == rows.pick(6, 3, "random", 0)
    with pytest.raises(CompressorError, match=r"has no split 'validation'; it has 'train', 'test'"):
        run(*models, Evaluate(tasks=[{**task, "split": "validation"}], speed=False), token=ALICE_WRITE)


def test_eval_command_errors(models, tmp_path):
    def config(*argv):
        from compressor.evaluate.command import config_from_args

        return config_from_args(_parser().parse_args(["eval", "a", "b", *argv]))

    with pytest.raises(CompressorError, match=r"unknown eval task 'vqq' \(did you mean 'vqa'\?\)"):
        config("--task", "vqq=some/data")
    with pytest.raises(CompressorError, match="must be NAME=DATASET"):
        config("--task", "vqa")
    with pytest.raises(CompressorError, match="nothing to evaluate"):
        config("--no-speed")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {source: x}\nevaluate:\n  speed: false\n  tasks:\n    - {name: vqa, dataset: d, limit: 5}\n"
    )
    cfg = config("--recipe", str(recipe), "--limit", "2")
    assert not cfg.speed and [(t.name, t.dataset, t.limit) for t in cfg.tasks] == [("vqa", "d", 2)]


# ---------------------------------------------------------------------------- the lmms-eval bridge


def test_lmms_eval_command_line():
    cfg = LmmsEval(limit=8, model_args="attn_implementation=sdpa", max_new_tokens=16)
    assert lmms.command(cfg, "llava", "/models/a", "/out/original", "cuda:0", "bfloat16") == [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "llava_hf",
        "--model_args",
        # the run's device and dtype as llava_hf's own arguments (its default device_map="" fails), never --device
        "pretrained=/models/a,device=cuda:0,device_map=cuda:0,dtype=bfloat16,attn_implementation=sdpa",
        "--tasks",
        "gqa,scienceqa_img,textvqa_val,pope,mme,mmbench_en",
        "--batch_size",
        "1",
        "--output_path",
        "/out/original",
        "--log_samples",
        "--limit",
        "8",
        "--gen_kwargs",
        "max_new_tokens=16",
    ]
    # the recipe's own model_args win; an adapter without known placement arguments gets --device
    user = LmmsEval(model_args="dtype=float16,device_map=auto")
    assert (
        lmms.command(user, "llava", "m", "o", "cpu")[6]
        == "pretrained=m,device=cpu,dtype=float16,device_map=auto"
    )
    assert lmms.command(LmmsEval(), "gemma3", "m", "o", "cpu")[4:7] == [
        "huggingface",
        "--model_args",
        "pretrained=m",
    ]
    assert lmms.command(LmmsEval(), "gemma3", "m", "o", "cpu")[-2:] == ["--device", "cpu"]
    assert lmms.command(
        LmmsEval(model="qwen2_vl", tasks=["pope"], python="/env/bin/python"), "qwen2_vl", "m", "o", None
    )[:8] == [
        "/env/bin/python",
        "-m",
        "lmms_eval",
        "--model",
        "qwen2_vl",
        "--model_args",
        "pretrained=m,device=cpu,device_map=cpu",
        "--tasks",
    ]


def _results(folder: Path, scale: float) -> Path:
    """A results file in lmms-eval's layout: OUTPUT/<sanitised model name>/<date>_results.json."""
    data = {
        "results": {
            "pope": {
                "alias": "pope",
                "pope_accuracy,none": 0.86 * scale,
                "pope_accuracy_stderr,none": "N/A",
                "pope_f1_score,none": 0.85 * scale,
                "pope_yes_ratio,none": 0.5,
            },
            "mme": {
                "alias": "mme",
                "mme_percetion_score,none": 1500.0 * scale,
                "mme_cognition_score,none": 300.0,
            },
            "mmbench_en_dev": {"alias": "mmbench_en_dev", "submission,none": "/tmp/submission.xlsx"},
        },
        "higher_is_better": {
            "pope": {"pope_accuracy": True, "pope_f1_score": True, "pope_yes_ratio": True},
            "mme": {"mme_percetion_score": True, "mme_cognition_score": True},
            "mmbench_en_dev": {"submission": True},
        },
        "n-samples": {
            "pope": {"original": 9000, "effective": 100},
            "mme": {"original": 2374, "effective": 100},
        },
        "config": {"model": "llava_hf", "model_args": "pretrained=x", "limit": 100.0},
    }
    path = folder / "models__x" / "20250101_120000_results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    return path


def test_lmms_eval_results_become_task_results(tmp_path):
    _results(tmp_path / "original", 1.0)
    _results(tmp_path / "compressed", 0.9)
    parsed = {s: lmms.parse_results(lmms.find_results(tmp_path / s)) for s in ("original", "compressed")}
    assert parsed["original"]["pope"]["metrics"] == {
        "pope_accuracy": 0.86,
        "pope_f1_score": 0.85,
        "pope_yes_ratio": 0.5,
    }
    results = {r.name: r for r in lmms.compare(parsed["original"], parsed["compressed"], LmmsEval(limit=100))}
    pope, mme = results["pope"], results["mme"]
    assert pope.metrics["pope_f1_score"].primary and not pope.metrics["pope_accuracy"].primary
    assert pope.metrics["pope_yes_ratio"].retained is None
    assert pope.retained == pytest.approx(90.0) and pope.samples == 100 and pope.task == "lmms_eval"
    assert mme.metrics["mme_percetion_score"].primary and not mme.metrics["mme_cognition_score"].primary
    assert mme.retained == pytest.approx(90.0)
    assert results["mmbench_en_dev"].metrics == {} and results["mmbench_en_dev"].notes
