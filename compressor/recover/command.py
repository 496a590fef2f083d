"""`compressor recover STUDENT_DIR --teacher SRC --data DATA ...`: recovery training from the command line.

Flags override the `recover:` section of `--recipe FILE`; both are validated by the same `Recover` model.
Imported at CLI start-up: nothing heavy at module level.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, get_args

from compressor.errors import CompressorError, add_field_option
from compressor.recover.config import (
    LoraOptions,
    Recover,
    RecoverData,
    parse_loss,
    parse_recover,
    parse_sources,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "recover",
        help="train a pruned model back against the original (SFT + hidden-state distillation)",
        description="Recovery training with TRL: the pruned student in STUDENT_DIR learns from the original "
        "model (--teacher). Writes a plain checkpoint, its processor and train_report.json to --out.",
    )
    p.add_argument("student", metavar="STUDENT_DIR", help="folder written by `compressor prune`")
    p.add_argument("--teacher", metavar="SRC", help="the original model: Hub repo id or local folder")
    p.add_argument("--teacher-revision", help="branch, tag or commit of the teacher's Hub repo")
    add_field_option(
        p,
        RecoverData,
        "dataset",
        metavar="DATA[:WEIGHT]",
        action="append",
        help_prefix="repeatable: several sources are mixed by weight, e.g. --data vqa-rows:3 --data text-rows:1. ",
    )
    add_field_option(p, RecoverData, "image_folder")
    add_field_option(p, RecoverData, "split")
    add_field_option(p, Recover, "mode", choices=list(get_args(Recover.model_fields["mode"].annotation)))
    add_field_option(p, Recover, "fraction", type=float)
    add_field_option(p, Recover, "loss", metavar="TERMS", help_prefix="e.g. ce=0.5,hidden_mse=0.5. ")
    add_field_option(p, Recover, "max_steps", type=int)
    add_field_option(p, Recover, "seed", type=int)
    add_field_option(p, LoraOptions, "r", type=int)
    p.add_argument(
        "--recipe", metavar="FILE", help="a recipe .yaml: its recover: section (and model: as teacher)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in OUT.checkpoints"
    )
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--trust-remote-code", action="store_true", help="run the models' own code (Bunny)")
    p.set_defaults(func=cmd_recover)
    return p


def _read_recipe(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(recover section, model section) of a recipe file."""
    from compressor.recipe import read_recipe_file

    data = read_recipe_file(path)
    return dict(data.get("recover") or {}), dict(data.get("model") or {})


def config_from_args(args: argparse.Namespace) -> tuple[Recover, dict[str, Any]]:
    """The Recover config (recipe section < flags) and the recipe's model section (may be empty)."""
    section, model = _read_recipe(args.recipe) if args.recipe else ({}, {})
    flags = {"mode": args.mode, "fraction": args.fraction, "max_steps": args.max_steps, "seed": args.seed}
    section.update({k: v for k, v in flags.items() if v is not None})
    if args.loss is not None:
        section["loss"] = parse_loss(args.loss)
    if args.lora_r is not None:
        section["lora"] = {**section.get("lora", {}), "r": args.lora_r}
    given = {k: v for k, v in (("image_folder", args.image_folder), ("split", args.split)) if v is not None}
    sources = parse_sources(args.data or [])
    if len(sources) > 1:  # several --data: they replace the recipe's sources; --split etc. apply to each
        section["data"] = [{**src, **given} for src in sources]
    elif sources or given:
        old = section.get("data") or {}
        if isinstance(old, list):
            if not sources:
                raise CompressorError(
                    "--split / --image-folder cannot pick one of the recipe's several recover.data sources; "
                    "give the sources with --data too, or edit the recipe"
                )
            old = {}
        section["data"] = {**old, **(sources[0] if sources else {}), **given}
    where = repr(args.recipe) if args.recipe else "from the command line"
    return parse_recover(section, where), model


def cmd_recover(args: argparse.Namespace) -> int:
    from compressor.recover import run

    cfg, model = config_from_args(args)
    teacher = args.teacher or model.get("source")
    report = run(
        args.student,
        teacher,
        cfg,
        None,
        args.out,
        resume=args.resume,
        token=os.environ.get("HF_TOKEN") or None,
        overwrite=args.overwrite,
        teacher_revision=args.teacher_revision or model.get("revision"),
        trust_remote_code=args.trust_remote_code or bool(model.get("trust_remote_code")),
    )
    last = f", final loss {report.final_loss:.4f}" if report.final_loss is not None else ""
    print(
        f"trained {report.steps} steps ({report.trainable['trainable_params']:,} trainable parameters, "
        f"{report.seconds:.1f} s{last}); saved to {args.out}"
    )
    return 0
