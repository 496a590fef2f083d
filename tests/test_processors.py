"""Calibration, recovery and eval through each family's real processor (the families whose AutoProcessor needs
torchvision load theirs with a PIL image processor and no video processor)."""

from __future__ import annotations

import json

import pytest
import torch

from compressor.tiny import NO_VIDEO_PROCESSOR


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from compressor.demo import write_dataset

    return write_dataset(tmp_path_factory.mktemp("proc-data") / "shapes", n=8)


@pytest.mark.parametrize("family", sorted(NO_VIDEO_PROCESSOR))
def test_calibration_batches_from_the_real_processor_feed_the_model(family, tiny_saved, shapes):
    from compressor.arch import spec_for
    from compressor.data import load_rows
    from compressor.models import load_model, load_processor
    from compressor.prune.calibration import build_batches

    path = tiny_saved(family)
    processor = load_processor(path)
    spec, _ = spec_for(json.loads((path / "config.json").read_text()))
    model = load_model(path, spec, "float32")
    batches = build_batches(
        load_rows(str(shapes)), processor, model.config, 2, 4096, 0, spec.needs_mm_token_type_ids
    )
    for batch in batches:
        assert "pixel_values" in batch  # images went through the image processor, not a tokenizer
        with torch.no_grad():
            assert torch.isfinite(model(**batch).loss)


@pytest.mark.parametrize("family", sorted(NO_VIDEO_PROCESSOR))
def test_recovery_through_the_real_processor(family, tiny_saved, shapes, tmp_path):
    from compressor.recover import run
    from tests.test_recover import fast, make_student

    teacher = tiny_saved(family)
    student = make_student(teacher, family, tmp_path / "student")
    report = run(student, teacher, fast(mode="projector", max_steps=1), str(shapes), tmp_path / "out")
    assert report.steps == 1 and report.losses and (tmp_path / "out" / "processor_config.json").is_file()


@pytest.mark.parametrize("family", sorted(NO_VIDEO_PROCESSOR))
def test_eval_through_the_real_processor(family, tiny_saved, tmp_path):
    from compressor import evaluate
    from compressor.demo import write_eval_sets
    from compressor.evaluate.config import Evaluate

    evals = write_eval_sets(tmp_path, n=8)
    cfg = Evaluate(
        tasks=[
            {"name": "vqa", "dataset": str(evals["vqa"]), "split": "train", "limit": 2, "max_new_tokens": 2},
            {"name": "perplexity", "dataset": str(evals["vqa"]), "split": "train", "limit": 2},
        ],
        speed=False,
    )
    report = evaluate.run(tiny_saved(family), tiny_saved(family, seed=1), cfg)
    assert [t.samples for t in report.tasks] == [2, 2]
    ppl = report.tasks[1].metrics["perplexity"]
    assert ppl.original > 1 and ppl.compressed > 1 and ppl.original != ppl.compressed  # two models, images in
