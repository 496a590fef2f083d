"""`compressor eval ORIGINAL COMPRESSED`: evaluate a compressed model against its original, print the before/after
table, write the JSON report. Imported by the CLI at start-up: heavy imports stay inside `cmd_eval`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compressor.errors import CompressorError, add_field_option, field_help, invalid
from compressor.evaluate.config import LLAVA_SUITE, EvalTask, Evaluate


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a compressed model against its original (scores, retained %%, speed, memory)",
        description="Run eval tasks on both models with the same samples, time both in the same run, print the "
        "before/after table and write the JSON report.",
    )
    p.add_argument("original", help="the original model: local folder or Hub repo id")
    p.add_argument("compressed", help="the compressed model: local folder or Hub repo id")
    p.add_argument(
        "--task",
        action="append",
        metavar="NAME=DATASET",
        help="a task on a dataset, repeatable, e.g. vqa=lmms-lab/textvqa or perplexity=./held-out; replaces the "
        "recipe's tasks. " + field_help(EvalTask, "name"),
    )
    add_field_option(p, EvalTask, "split", help_suffix=" Here: every --task dataset's (default test).")
    add_field_option(p, EvalTask, "limit", type=int, help_prefix="samples per task (overrides the recipe). ")
    add_field_option(
        p,
        EvalTask,
        "sample",
        choices=["random", "first"],
        help_prefix="rows per task (overrides the recipe). ",
    )
    add_field_option(p, EvalTask, "seed", type=int, help_suffix=" Default 0.")
    add_field_option(p, EvalTask, "max_new_tokens", type=int)
    p.add_argument("--no-speed", action="store_true", help="skip the speed and memory measurements")
    p.add_argument(
        "--lmms-eval",
        nargs="?",
        const=",".join(LLAVA_SUITE),
        metavar="TASKS",
        help="also run lmms-eval tasks (comma-separated; default the LLaVA-1.5 suite; give it after the two "
        "models); needs `make lmms` once",
    )
    p.add_argument(
        "--lmms-dataset",
        action="append",
        metavar="TASK=SOURCE",
        help="an lmms-eval task's dataset from elsewhere, repeatable: a local parquet file or folder, or a Hub "
        "dataset owner/name[@revision] (recipe evaluate.lmms_eval.datasets)",
    )
    p.add_argument(
        "--lmms-max-new-tokens",
        type=int,
        metavar="N",
        help="longest lmms-eval answer (recipe evaluate.lmms_eval.max_new_tokens; default each task's own)",
    )
    p.add_argument("--recipe", help="take the evaluate: section of this recipe YAML (flags override it)")
    p.add_argument("--device", help="device for both models, e.g. cuda:0 or cpu (default: a GPU if they fit)")
    p.add_argument(
        "--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto", help="load dtype"
    )
    p.add_argument("--trust-remote-code", action="store_true", help="run the models' own code (Bunny)")
    from compressor.tokens import add_token_options

    add_token_options(p)
    p.add_argument("--out", default="eval.json", help="where to write the JSON report (default eval.json)")
    p.set_defaults(func=cmd_eval)
    return p


def _from_recipe(path: str) -> dict[str, Any]:
    from compressor.recipe import read_recipe_file

    data = read_recipe_file(path)
    if not isinstance(data.get("evaluate"), dict):
        raise CompressorError(
            f"recipe {path!r} has no evaluate: section; add one or pass --task NAME=DATASET"
        )
    return data["evaluate"]


def _task(spec: str) -> dict[str, Any]:
    name, sep, dataset = spec.partition("=")
    if not sep or not name or not dataset:
        raise CompressorError(f"--task {spec!r} must be NAME=DATASET, e.g. vqa=lmms-lab/textvqa")
    return {"name": name.strip(), "dataset": dataset.strip()}


def config_from_args(args: argparse.Namespace) -> Evaluate:
    """The recipe's evaluate: section (if --recipe), with the flags applied on top, validated."""
    data: dict[str, Any] = dict(_from_recipe(args.recipe)) if args.recipe else {}
    if args.task:
        data["tasks"] = [_task(t) for t in args.task]
    overrides = {
        k: v
        for k, v in (
            ("split", args.split),
            ("limit", args.limit),
            ("sample", args.sample),
            ("seed", args.seed),
            ("max_new_tokens", args.max_new_tokens),
        )
        if v is not None
    }
    data["tasks"] = [{**t, **overrides} for t in data.get("tasks") or []]
    if args.no_speed:
        data["speed"] = False
    if args.lmms_eval is not None:
        tasks = [t.strip() for t in args.lmms_eval.split(",") if t.strip()]
        data["lmms_eval"] = {**(data.get("lmms_eval") or {}), "tasks": tasks}
    lmms_flags = {}
    for spec in getattr(args, "lmms_dataset", None) or []:
        task, sep, source = spec.partition("=")
        if not sep or not task.strip() or not source.strip():
            raise CompressorError(
                f"--lmms-dataset {spec!r} must be TASK=SOURCE, e.g. pope=data/pope.parquet or pope=me/pope@main"
            )
        lmms_flags.setdefault("datasets", {})[task.strip()] = source.strip()
    if getattr(args, "lmms_max_new_tokens", None) is not None:
        lmms_flags["max_new_tokens"] = args.lmms_max_new_tokens
    if lmms_flags:
        if data.get("lmms_eval") is None:
            raise CompressorError(
                "--lmms-dataset and --lmms-max-new-tokens set lmms-eval's run: add --lmms-eval TASKS (or a recipe "
                "with evaluate.lmms_eval)"
            )
        data["lmms_eval"] = {**data["lmms_eval"], **lmms_flags}
    if not data["tasks"] and not data.get("speed", True) and data.get("lmms_eval") is None:
        raise CompressorError("nothing to evaluate: give --task NAME=DATASET, --lmms-eval, or leave speed on")
    try:
        return Evaluate.model_validate(data)
    except ValidationError as err:
        where = f"in {args.recipe!r}" if args.recipe else "from the command line"
        raise invalid(err, f"invalid eval settings {where}", Evaluate) from None


def cmd_eval(args: argparse.Namespace) -> int:
    from compressor import evaluate

    cfg = config_from_args(args)
    from compressor.tokens import token_from

    token = token_from(args)
    report = evaluate.run(
        args.original,
        args.compressed,
        cfg,
        token=token,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )
    print(report.table())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.model_dump(mode="json"), indent=1))
    print(f"\nreport written to {out}")
    return 0
