"""lmms-eval on real weights, beside our own task on the same rows: the reference MLLM and its 30 % students.

Issue 19's check that the bridge measures what our own tasks measure: easy-VQA's yes/no questions (the study's
150 rows: the `yes_no` task's random draw with seed 0 from the reference's easyvqa-test-yes_no) written as a
POPE-format parquet (question_id, question, answer, category, image) in the order our task scores them, then one
`compressor.evaluate.run` per student with both our `yes_no` task and lmms-eval's `pope` task on that parquet
(`lmms_eval.datasets`, max_new_tokens 4 as the study's task). POPE's prompt is the question + "\\nAnswer the
question using a single word or phrase.", our task's instruction too; POPE scores the lower-cased, stripped answer
against "yes"/"no" exactly, ours parses a leading yes/no. The two accuracies must agree within 1 point; the table
shows both for each model, and the share of rows answered alike is in the JSON.

The students are the ones benchmarks/export_gguf.py made (RUN/recovered under --runs, default runs/export-gguf);
run that first, and `make lmms`. Writes OUT.md / OUT.json (default runs/lmms-reference) and prints the table.

    .venv/bin/python benchmarks/lmms_reference.py [--runs runs/export-gguf] [--out runs/lmms-reference]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def yes_no_task():
    from export_gguf import eval_tasks

    return next(t for t in eval_tasks(150) if t.name == "yes_no")


def write_pope(task, path: Path) -> int:
    """The task's rows, in the order it scores them, as a POPE-format parquet; returns the row count."""
    from compressor.evaluate import rows as evrows
    from compressor.evaluate.lmms import write_pope

    data = evrows.open_rows(task)
    indices = evrows.pick(len(data), task.limit, task.sample, task.seed)
    data.prefetch(indices)
    out = []
    for i in indices:
        row = dict(data.raw[i])
        question, answer = evrows.yes_no(row)
        (image,) = evrows.images(row, data.root)
        out.append(
            {
                "question_id": str(i),
                "question": question,
                "answer": answer,
                "category": "easy-vqa",
                "image": image,
            }
        )
    write_pope(out, path)
    return len(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/export-gguf"))
    ap.add_argument("--out", type=Path, default=Path("runs/lmms-reference"))
    args = ap.parse_args(argv)

    from compressor import api
    from compressor.evaluate import Evaluate, LmmsEval, run
    from compressor.reference import find_reference

    t0 = time.perf_counter()
    task = yes_no_task()
    parquet = args.out / "easyvqa-yes_no-pope.parquet"
    n = write_pope(task, parquet)
    rows, dump = [], {}
    for name in ("width-30", "depth-30"):
        student = api.RunFolder(args.runs / name).final_model()
        cfg = Evaluate(
            tasks=[task],
            speed=False,
            lmms_eval=LmmsEval(
                tasks=["pope"],
                max_new_tokens=task.max_new_tokens,
                datasets={"pope": str(parquet)},
                output_dir=str(args.out / name),
            ),
        )
        t = time.perf_counter()
        report = run(find_reference().model, student, cfg, device="cpu", dtype="float32")
        ours = next(r for r in report.tasks if r.name == "yes_no").metrics
        pope = next(r for r in report.tasks if r.name == "pope").metrics
        dump[name] = report.model_dump(mode="json")
        for side in ("original", "compressed"):
            a, b = getattr(ours["accuracy"], side), getattr(pope["pope_accuracy"], side)
            f1a, f1b = getattr(ours["f1"], side), getattr(pope["pope_f1_score"], side)
            label = "reference" if side == "original" else f"{name} student"
            rows.append(
                f"| {label} | {a:.1%} | {b:.1%} | {100 * abs(a - b):.1f} | {f1a:.3f} | {f1b:.3f} | "
                f"{'yes' if abs(a - b) <= 0.01 else 'NO'} |"
            )
        print(f"{name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    table = "\n".join(
        [
            f"easy-VQA yes/no, {n} rows (the study's), our `yes_no` task and lmms-eval {dump['width-30']['versions'].get('lmms_eval')}'s `pope` on the same rows:",
            "",
            "| model | our yes_no accuracy | lmms-eval pope_accuracy | difference (points) | our F1 | lmms-eval F1 | within 1 point |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"(the reference is evaluated with each student; total {time.perf_counter() - t0:.0f} s on the CPU)",
        ]
    )
    print(table)
    (args.out.parent / f"{args.out.name}.md").write_text(table + "\n")
    (args.out.parent / f"{args.out.name}.json").write_text(json.dumps(dump, indent=1, default=str))


if __name__ == "__main__":
    main()
