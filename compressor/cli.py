"""`python -m compressor …`: thin subcommands over compressor.api. Heavy imports stay inside commands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError, add_field_option, field_help, flag_of
from compressor.recipe import (
    Calibration,
    GGUFExport,
    ModelSource,
    Prune,
    Recipe,
    load_recipe,
    parse_recipe,
)
from compressor.tokens import add_token_options, token_from

if TYPE_CHECKING:
    from pydantic import BaseModel


def _add_prune_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="Hub repo id, local model folder, or a recipe .yaml (then no other option)")
    g = p.add_argument_group("pruning")
    add_field_option(g, Prune, "method", choices=["depth", "width"])
    add_field_option(g, Prune, "ratio", type=float)
    add_field_option(g, Prune, "scorer")
    add_field_option(g, Prune, "targets", help_prefix="width only: comma-separated heads,mlp. ")
    add_field_option(g, Prune, "round_to", type=int)
    add_field_option(g, Prune, "target", choices=["default", "gpu", "gguf", "vllm", "vllm-tp2", "vllm-tp4"])
    add_field_option(g, Prune, "contiguous", action="store_true", default=None)
    c = p.add_argument_group("calibration")
    add_field_option(c, Calibration, "dataset", metavar="DATA")
    add_field_option(c, Calibration, "image_folder")
    add_field_option(c, Calibration, "split")
    add_field_option(c, Calibration, "num_samples", type=int)
    add_field_option(c, Calibration, "max_length", type=int)
    add_field_option(c, Calibration, "seed", type=int)
    add_field_option(c, Calibration, "modality", choices=["image", "text", "mixed"])
    m = p.add_argument_group("model")
    add_field_option(m, ModelSource, "revision")
    add_field_option(m, ModelSource, "trust_remote_code", action="store_true", default=None)
    add_field_option(m, ModelSource, "allow_pickle", action="store_true", default=None)
    add_field_option(m, ModelSource, "dtype", choices=["auto", "float32", "bfloat16", "float16"])
    add_field_option(m, ModelSource, "device_map")
    add_token_options(m)


def _dests(model: type[BaseModel]) -> dict[str, str]:
    """argparse dest → field name, for the fields a plain `--flag` of prune/plan sets (from the fields' flags)."""
    flags = {name: flag_of(model, name) or "" for name in model.model_fields}
    return {f[2:].replace("-", "_"): n for n, f in flags.items() if f.startswith("--") and " " not in f}


_PRUNE_FLAGS = {dest: name for dest, name in _dests(Prune).items() if name != "targets"}  # targets: a list
_CAL_FLAGS = _dests(Calibration)
_MODEL_FLAGS = _dests(ModelSource)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """A recipe file as SRC, or a recipe built from SRC and the flags (validated by the same model)."""
    flags = {**_PRUNE_FLAGS, **_CAL_FLAGS, **_MODEL_FLAGS, "targets": ""}
    given = [f for f in flags if getattr(args, f, None) is not None]
    if args.src.endswith((".yaml", ".yml")):
        if given:
            raise CompressorError(
                f"options {', '.join('--' + f.replace('_', '-') for f in given)} cannot be combined "
                "with a recipe file; edit the recipe instead"
            )
        return load_recipe(args.src)
    prune: dict[str, Any] = {
        v: getattr(args, k) for k, v in _PRUNE_FLAGS.items() if getattr(args, k) is not None
    }
    if args.targets is not None:
        prune["targets"] = [t.strip() for t in args.targets.split(",") if t.strip()]
    cal = {v: getattr(args, k) for k, v in _CAL_FLAGS.items() if getattr(args, k) is not None}
    if cal:
        prune["calibration"] = cal
    for flag in ("method", "ratio"):
        if flag not in prune:
            raise CompressorError(f"--{flag} is required (or give a recipe .yaml as SRC)")
    model = {
        "source": args.src,
        **{v: getattr(args, k) for k, v in _MODEL_FLAGS.items() if getattr(args, k) is not None},
    }
    return parse_recipe({"model": model, "prune": prune}, "from the command line")


_token = token_from


# ---------------------------------------------------------------------------- commands


def cmd_validate(args) -> int:
    recipe = load_recipe(args.recipe)
    print(f"{args.recipe}: valid ({recipe.prune.method} {recipe.prune.ratio:.0%} of {recipe.model.source})")
    return 0


def cmd_schema(args) -> int:
    from compressor.recipe import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_plan(args) -> int:
    from compressor import api

    plan = api.plan(recipe_from_args(args), token=_token(args), speed=args.speed)
    print(plan.model_dump_json(indent=2) if args.json else plan.table())
    return 0


def cmd_prune(args) -> int:
    from compressor import api
    from compressor.plan import render_table

    recipe = recipe_from_args(args)
    report = api.prune(recipe, args.out, token=_token(args), overwrite=args.overwrite)
    print(render_table(report.plan))
    if report.dropped_layers is not None:
        print(f"dropped layers: {report.dropped_layers}")
    print(f"saved to {args.out} ({report.seconds:.1f} s scoring and pruning)")
    return 0


def _run_recipe(arg: str) -> Recipe:
    """RECIPE of `run`: a recipe .yaml, or `base64:` + the recipe itself (how a Job gets it, see jobs.py)."""
    from compressor import jobs

    return jobs.decode_recipe(arg) if arg.startswith(jobs.RECIPE_PREFIX) else load_recipe(arg)


def cmd_run(args) -> int:
    from compressor import api, jobs

    if args.on_jobs is not None:
        return _run_on_jobs(args)
    from compressor.runs import run_folder, runs_root

    recipe = _run_recipe(args.recipe)
    name = None if args.recipe.startswith(jobs.RECIPE_PREFIX) else Path(args.recipe).stem
    run_dir = args.run_dir or str(run_folder(runs_root(), recipe, name))
    summary = api.run(recipe, run_dir, token=_token(args))
    eval_report = api.RunFolder(run_dir).report("eval")
    if eval_report.is_file():
        from compressor.evaluate.report import EvalReport

        print(EvalReport.model_validate_json(eval_report.read_text()).table())
    print(f"model: {summary['model']}")
    if summary["url"]:
        print(f"pushed: {summary['url']}")
    if summary.get("gguf_url"):
        print(f"pushed GGUF: {summary['gguf_url']}")
    return 0


def _run_on_jobs(args) -> int:
    """`run RECIPE --on-jobs FLAVOR`: submit the run as a Hugging Face Job; with --follow, stream its logs."""
    from compressor import jobs

    if args.run_dir:
        raise CompressorError(
            f"--run-dir {args.run_dir!r} names a folder on this machine, but --on-jobs runs the recipe in a Job "
            "with a run folder of its own: drop --run-dir (the Job pushes its result to the recipe's publish.repo_id)"
        )
    recipe, token = _run_recipe(args.recipe), _token(args)
    job = jobs.submit(
        recipe,
        args.on_jobs,
        token,
        namespace=args.namespace,
        image=args.jobs_image,
        package=args.jobs_package,
        timeout=args.jobs_timeout,
    )
    print(f"job {job.id} on {job.flavor}: {job.url}", flush=True)
    if not args.follow:
        print(f"follow it with: python -m compressor jobs logs {job.id} --follow")
        return 0
    return _follow(job, token, None)


def _follow(job, token: str | None, namespace: str | None) -> int:
    """Print the Job's log lines until it ends, then its final stage and the pushed model's URL; 1 unless it
    COMPLETED. Ctrl-C stops following, not the Job."""
    from compressor import jobs

    job_id = getattr(job, "id", job)
    try:
        for seen in jobs.follow(job, token, namespace=namespace):
            for line in seen.lines:
                print(line, flush=True)
        state, pushed = seen.state, seen.pushed
    except KeyboardInterrupt:
        print(
            f"\nstopped following; job {job_id} goes on: `python -m compressor jobs logs {job_id} --follow` "
            f"follows it again, `python -m compressor jobs cancel {job_id}` stops it",
            file=sys.stderr,
        )
        return 130
    print(f"job {state.id}: {state.stage}" + (f" ({state.message})" if state.message else ""))
    if state.stage != "COMPLETED":
        print(
            f"error: job {state.id} ended {state.stage}{f' ({state.message})' if state.message else ''}: its logs "
            f"are above and at {state.url}",
            file=sys.stderr,
        )
        return 1
    if pushed:
        print(f"pushed: {pushed}")
    return 0


def cmd_jobs(args) -> int:
    """`jobs status|logs|cancel JOB_ID`: a Job submitted with `run --on-jobs`."""
    from compressor import jobs

    token = _token(args)
    if args.action == "logs":
        if args.follow:
            return _follow(args.job_id, token, args.namespace)
        for line in jobs.logs(args.job_id, token, follow=False, namespace=args.namespace):
            print(line)
        return 0
    if args.action == "cancel":
        state = jobs.cancel(args.job_id, token, namespace=args.namespace)
    else:
        state = jobs.status(args.job_id, token, namespace=args.namespace)
    print(f"job {state.id}: {state.stage}" + (f" ({state.message})" if state.message else ""))
    print(f"url: {state.url}")
    if state.done and (pushed := jobs.pushed_url(args.job_id, token, namespace=args.namespace)):
        print(f"pushed: {pushed}")
    return 0


def _add_jobs_options(p) -> None:
    p.add_argument(
        "--namespace", help="the user or organisation the Job belongs to (default: the token's user)"
    )


def cmd_card(args) -> int:
    from compressor import api

    print(api.card(args.run_dir, args.repo_id))
    return 0


def cmd_push(args) -> int:
    from compressor import api

    url = api.push(
        args.run_dir, args.repo_id, token=_token(args), private=args.private, overwrite=args.overwrite
    )
    print(f"pushed: {url}")
    gguf = json.loads(api.RunFolder(args.run_dir).report("push").read_text()).get("gguf")
    if gguf:
        print(f"pushed GGUF: {gguf['url']}")
    return 0


def cmd_export(args) -> int:
    from compressor import api

    if args.build_quantizer:
        from compressor.export import toolchain

        print(f"llama-quantize: {toolchain.quantizer() or toolchain.build_quantizer()}")
        if args.src is None:
            return 0
    if args.src is None or args.out is None:
        raise CompressorError(
            "give SRC (a model or run folder) and --out DIR, e.g. `python -m compressor export RUN --gguf "
            "--out DIR` (or only --build-quantizer)"
        )
    if not args.gguf:
        raise CompressorError("give the format: --gguf (llama.cpp files; the only export so far)")
    quants = [q for q in args.quant.split(",") if q.strip()] if args.quant else list(GGUFExport().quants)
    report = api.export(args.src, args.out, quants, name=args.name, overwrite=args.overwrite)
    print(report.table())
    print(f"written to {args.out} ({report.seconds:.1f} s)")
    return 0


def cmd_serve_hub(args) -> int:
    from compressor import hubserver

    return hubserver.run(args, args.parser)


def cmd_demo(args) -> int:
    from compressor.demo import run

    return run(Path(args.workdir) if args.workdir else None)


def cmd_reference(args) -> int:
    from compressor import reference

    args.version = args.version or reference.REFERENCE_VERSION
    if args.action == "path":
        print(reference.find_reference(Path(args.root) if args.root else None, args.version).root)
        return 0
    ref = reference.build(Path(args.root) if args.root else None, force=args.force, version=args.version)
    print((ref.model / "README.md").read_text())
    print(f"reference: {ref.root}")
    return 0


def cmd_study(args) -> int:
    from compressor import study

    return study.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compressor", description=__doc__.split("\n")[0] if __doc__ else None
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate a recipe file")
    p.add_argument("recipe")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the recipe JSON schema")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("plan", help="what pruning will do, from config.json only (no weights)")
    _add_prune_options(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument(
        "--speed",
        action="store_true",
        help="also time decoding of the original, the planned shape and the other method's at the same ratio "
        "on this machine (random weights of the language model, batch 1 and 8; needs memory for it)",
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("prune", help="prune and save a standard checkpoint + prune_report.json")
    _add_prune_options(p)
    p.add_argument("--out", help="output folder (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=cmd_prune)

    from compressor.evaluate.command import add_parser as add_eval
    from compressor.recover.command import add_parser as add_recover

    add_recover(sub)
    add_eval(sub)

    p = sub.add_parser("run", help="the whole pipeline: plan, prune, recover, eval, card, push (resumable)")
    p.add_argument("recipe", help="recipe .yaml (or base64: and the recipe's YAML in URL-safe base64)")
    p.add_argument(
        "--run-dir",
        help="run folder (default: runs/RECIPE_NAME, $COMPRESSOR_RUNS in place of runs/; a base64: recipe's "
        "is named by its content, see compressor.runs); a rerun resumes after the last stage",
    )
    add_token_options(p)
    j = p.add_argument_group("Hugging Face Jobs (heavy runs on the Hub's hardware)")
    j.add_argument(
        "--on-jobs",
        metavar="FLAVOR",
        help="run it as a Hugging Face Job on this hardware flavour (cpu-basic, t4-small, a10g-large, "
        "a100-large, h200 …; `hf jobs hardware` lists them), or auto: the smallest that fits the plan's memory "
        "estimate. The token goes to the Job only as its HF_TOKEN secret; the recipe needs a publish: section",
    )
    j.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stream the Job's logs until it ends and print the pushed model's URL (default); --no-follow "
        "prints the Job's id and returns",
    )
    j.add_argument(
        "--jobs-image",
        metavar="IMAGE",
        help="a Docker image (or hf.co/spaces/…) with the package installed, run as `python -m compressor "
        "run …` (default: $COMPRESSOR_JOBS_IMAGE, else huggingface_hub's uv image installing --jobs-package)",
    )
    j.add_argument(
        "--jobs-package",
        metavar="SPEC",
        help="the pip spec the Job installs with uv, e.g. 'mllm-compressor @ git+https://github.com/OWNER/REPO@SHA' "
        "(default: $COMPRESSOR_JOBS_PACKAGE, else this installation's source)",
    )
    j.add_argument("--jobs-timeout", metavar="DURATION", help="the Job's longest run, e.g. 90m or 6h")
    _add_jobs_options(j)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("jobs", help="status, logs or cancel of a run submitted with `run --on-jobs`")
    p.add_argument("action", choices=["status", "logs", "cancel"])
    p.add_argument("job_id", metavar="JOB_ID", help="the id `run --on-jobs` printed")
    p.add_argument(
        "--follow", action="store_true", help="logs: stream them until the Job ends, then its stage and URL"
    )
    _add_jobs_options(p)
    add_token_options(p)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser(
        "export",
        help="GGUF files for llama.cpp (text per quant + mmproj), each checked against transformers",
        description="Write DIR/<name>-<QUANT>.gguf per quant (and DIR/mmproj-<name>-f16.gguf where llama.cpp has "
        "the family's projector) with llama.cpp's own converter, pinned; load each in llama.cpp and compare its "
        "next-token predictions with transformers'. Written atomically: a failure leaves nothing. "
        "Needs `make export-tools` once.",
    )
    p.add_argument(
        "src",
        nargs="?",
        help="a model folder (pruned, recovered or any of a supported family) or a run folder",
    )
    p.add_argument("--gguf", action="store_true", help="write GGUF files (llama.cpp, Ollama, LM Studio)")
    p.add_argument("--quant", metavar="Q,Q", help="comma-separated. " + field_help(GGUFExport, "quants"))
    p.add_argument("--out", help="output folder (written atomically)")
    p.add_argument("--name", help="the files' base name (default: the source folder's name)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument(
        "--build-quantizer",
        action="store_true",
        help="build llama-quantize (k-quants: q4_k_m, q5_k_m, q6_k) once from the pinned llama.cpp sources into "
        "the cache (minutes; needs cmake and a C++ compiler); alone, or before an export",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("card", help="(re-)render the model card of a run folder and print it")
    p.add_argument("run_dir")
    p.add_argument("--repo-id", help="the repo the card will live in (for its title and usage lines)")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("push", help="push a run folder's final model with its card, in one commit")
    p.add_argument("run_dir")
    p.add_argument("--repo-id", required=True, help="owner/name on the Hub")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty repo")
    add_token_options(p)
    p.set_defaults(func=cmd_push)

    from compressor import hubserver

    p = sub.add_parser(
        "serve-hub",
        help="run the embedded Hub-compatible server (tests, demo)",
        description="Serve a local, Hugging Face Hub-compatible endpoint for offline pulls and pushes.",
    )
    hubserver.add_arguments(p)
    p.set_defaults(func=cmd_serve_hub, parser=p)

    p = sub.add_parser(
        "reference",
        help="build (once, cached) the reference MLLM: real SmolLM2-135M-Instruct + a vision tower trained on easy-VQA",
    )
    p.add_argument("action", choices=["build", "path"], help="build it, or print where the built one is")
    p.add_argument("--root", help="folder to build into (default: the user cache, see compressor.reference)")
    p.add_argument("--force", action="store_true", help="rebuild even when a built reference is cached")
    p.add_argument(
        "--version",
        help="which build (default: the current one, reference-smollm2-llava-v3, which continues from a built v2; "
        "reference-smollm2-llava-v1 is the one the first study measured on)",
    )
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser(
        "study", help="a grid of recipes, each an ordinary resumable run; results.csv, a table and plots"
    )
    from compressor.study import add_arguments as add_study

    add_study(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("demo", help="build the embedded default model and run the main job on it")
    p.add_argument("--workdir", help="where to build (default: a temporary folder)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in (
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "urllib3",
        "filelock",
        "huggingface_hub",
        "compressor.hubserver",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except CompressorError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
