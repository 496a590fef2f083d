"""Why the reference's yes/no accuracy stays near 81 %: its answers by question kind, and what one more stage buys.

    python benchmarks/reference_yes_no.py                       # the built reference, by kind (about 1 min)
    python benchmarks/reference_yes_no.py --stage3-steps 150    # + a stage 3 on a by-kind stream (about 9 min)
    python benchmarks/reference_yes_no.py --stage3-steps 200 --lr 3e-4 --lr-vision 3e-4   # tower trained too

Each yes/no test question has a kind (`reference.question_kind`): colour or shape, plain or negated, and its right
answer. A model that reads the picture gets every kind right about equally; one that answers from the question's
wording alone gets whole kinds right and whole kinds wrong. The stage-3 option trains an in-memory copy of the
reference on a stream whose yes/no questions are drawn evenly across the kinds (`by_kind`, which takes away the
answer prior of easy-VQA's own mix) and prints it beside the reference. Nothing is written to the cache; the table
also goes to runs/reference-yes-no.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default=None, help="reference build (default: the current one)")
    ap.add_argument("--root", type=Path, default=None, help="a built reference's folder (default: the cache)")
    ap.add_argument("--n", type=int, default=400, help="test questions of each kind of answer (open, yes/no)")
    ap.add_argument("--stage3-steps", type=int, default=0, help="train a copy for this many steps of 16 rows")
    ap.add_argument("--yes-no-share", type=float, default=0.75, help="stage 3: share of yes/no questions")
    ap.add_argument(
        "--lr", type=float, default=1e-4, help="stage 3: projector + language model learning rate"
    )
    ap.add_argument(
        "--lr-vision", type=float, default=0.0, help="stage 3: vision tower learning rate (0: frozen)"
    )
    ap.add_argument(
        "--stream",
        choices=("by-kind", "pairs"),
        default="by-kind",
        help="stage 3's yes/no questions: drawn evenly across the kinds, or as minimal pairs (reference._minimal_pairs)",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/reference-yes-no.md"))
    args = ap.parse_args(argv)

    import logging

    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from compressor import reference as R

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("compressor").setLevel(logging.INFO)
    ref = R.find_reference(args.root, version=args.version or R.REFERENCE_VERSION)
    model = LlavaForConditionalGeneration.from_pretrained(ref.model, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(ref.model)
    texts = [r["text"] for r in R.read_jsonl(ref.heldout_text / "data.jsonl")]

    def measure(label: str) -> dict:
        t = time.perf_counter()
        kinds = R.yes_no_breakdown(model, processor, ref, args.n)
        score = R.answer_accuracy(model, processor, ref, args.n, 0)
        ppl = R.text_perplexity(R._lm_view(model), processor.tokenizer, texts)
        print(f"{label}: measured in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        right, asked = sum(r for r, _ in kinds.values()), sum(n for _, n in kinds.values())
        return {
            "label": label,
            "kinds": kinds,
            "open": score.open_accuracy,
            "yes_no": right / asked,
            "ppl": ppl,
        }

    columns = [measure(ref.root.name)]
    if args.stage3_steps:
        cfg = R.build_config(args.version or R.REFERENCE_VERSION)
        rows = R.read_jsonl(ref.train / "data.jsonl")
        trained = [*model.model.multi_modal_projector.parameters(), *model.model.language_model.parameters()]
        groups = [{"params": trained, "lr": args.lr}]
        if args.lr_vision > 0:
            groups.append({"params": list(model.model.vision_tower.parameters()), "lr": args.lr_vision})
        rng = random.Random(cfg.seed + 3)
        if args.stream == "pairs":
            stream = R._minimal_pairs(rows, rng, args.yes_no_share)
        else:
            stream = R._balanced(rows, rng, args.yes_no_share, by_kind=True)
        stage = R._train_stage(model, processor, stream, ref.train, groups, args.stage3_steps, cfg, "stage 3")
        tower = f", tower at {args.lr_vision:g}" if args.lr_vision > 0 else ", tower frozen"
        columns.append(
            measure(
                f"+ stage 3: {args.stage3_steps} steps ({stage['seconds']:.0f} s), {args.yes_no_share:.0%} yes/no "
                f"{'minimal pairs' if args.stream == 'pairs' else 'by kind'}, lr {args.lr:g}{tower}"
            )
        )

    kinds = sorted({k for c in columns for k in c["kinds"]})

    def cell(column: dict, kind: str) -> str:
        right, asked = column["kinds"].get(kind, (0, 0))
        return f"{right}/{asked} ({right / asked if asked else 0:.0%})"

    lines = [
        f"Yes/no answers by kind, {args.n} seeded easy-VQA test questions (the card's sample):",
        "",
        "| question kind | " + " | ".join(c["label"] for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        *(f"| {k} | " + " | ".join(cell(c, k) for c in columns) + " |" for k in kinds),
        "| **yes/no, all** | " + " | ".join(f"**{c['yes_no']:.1%}**" for c in columns) + " |",
        f"| open ({args.n}) | " + " | ".join(f"{c['open']:.1%}" for c in columns) + " |",
        "| held-out perplexity | " + " | ".join(f"{c['ppl']:.2f}" for c in columns) + " |",
    ]
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
