"""The GGUF export on real weights: the reference MLLM and its 30 % students, as llama.cpp runs them.

Issue 18's question: *is a pruned + q4_k_m model better than the original at q4_k_m alone, for its size and speed?*
In one run, on the real-weights reference MLLM (a LLaVA around the real SmolLM2-135M-Instruct, `make reference`):

1. **Models.** The reference, and its 30 % width and 30 % depth students made by `compressor run` with the study's
   base recipe (`studies/seed-miniature.yaml`: calibration on easy-VQA, LoRA recovery of 40 steps with
   ce + hidden_mse) plus an `export: {gguf: {quants: [f16, q8_0, q4_k_m]}}` section; the reference itself is
   exported with `compressor export` (the same stage). Every file is checked in llama.cpp by the export itself
   (text probe + image question); the export's numbers are in the table.
2. **Accuracy answered by llama.cpp.** The study's easy-VQA questions (the `vqa` and `yes_no` tasks, 150 each,
   seed 0, the same rows) are asked of every text GGUF with its mmproj through llama-server's `/completion`
   (xllamacpp, the pinned runner), with the prompt the eval tasks give transformers (the chat template, the picture
   where `<image>` is); the same rows are answered by the transformers model of the same folder (fp32) and scored
   with the same metrics. So each row of the table has llama.cpp's accuracy beside transformers'.
3. **Held-out perplexity** of every file with `llama-perplexity -c 256` on the reference's held-out text, beside the
   same chunks scored in torch by the transformers model (`benchmarks/serving.py`'s `torch_perplexity`).
   `--phase tokens` explains the gap between the two: per model, how many tokens llama.cpp's tokenizer (the f16
   GGUF's, llama-server's `/tokenize`) and transformers' make of that text, where they first differ, and torch's
   perplexity on llama.cpp's own token ids beside llama-perplexity's (from OUT.quality.json; 2-5 minutes).
4. **Speed**: `llama-bench -p 512 -n 64 -t THREADS -r 1` on every text file, --rounds interleaved rounds (order
   reversed every other round), medians. llama-bench, llama-perplexity and llama-quantize are built once from the
   pinned llama.cpp sources (`compressor.export.toolchain.build_tools`, minutes).

Run (after `make reference`; the students' runs resume):

    .venv/bin/python benchmarks/export_gguf.py [--rounds 3] [--limit 150] [--threads 2] [--out runs/export-gguf]

Writes OUT.md and OUT.json and prints the tables. A benchmark, not CI.
"""

from __future__ import annotations

import argparse
import base64
import copy
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUANTS = ("f16", "q8_0", "q4_k_m")
PROMPT, GEN, PPL_CTX = 512, 64, 256
STUDY = Path(__file__).resolve().parent.parent / "studies" / "seed-miniature.yaml"


def log(msg: str) -> None:
    print(f"[export_gguf] {msg}", file=sys.stderr, flush=True)


def recipes(ratio: float) -> dict[str, dict]:
    """The study's base recipe (reference substituted) per method, with the export section."""
    from compressor.recipe import read_recipe_file
    from compressor.reference import find_reference
    from compressor.study import _set, _substitute

    base = read_recipe_file(STUDY)["base"]
    out = {}
    for method in ("width", "depth"):
        tree = copy.deepcopy(base)
        _set(tree, "prune.method", method)
        _set(tree, "prune.ratio", ratio)
        tree["export"] = {"gguf": {"quants": list(QUANTS)}}
        out[method] = _substitute(tree, {"reference": str(find_reference().root)})
    return out


def make_models(root: Path, ratio: float) -> list[dict]:
    """[{name, folder (transformers), gguf (folder), report}] for the reference and both students."""
    from compressor import api
    from compressor.recipe import parse_recipe
    from compressor.reference import find_reference

    ref = find_reference()
    models = []
    original = root / "original-gguf"
    if not (original / "export_report.json").is_file():
        log("exporting the reference")
        api.export(ref.model, original, list(QUANTS), name="reference")
    models.append({"name": "original", "folder": ref.model, "gguf": original})
    for method, tree in recipes(ratio).items():
        run = root / f"{method}-{int(ratio * 100)}"
        t = time.perf_counter()
        log(f"compressor run: {method} {ratio:.0%} (prune, recover, eval, export; resumes)")
        api.run(parse_recipe(tree, f"(benchmark {method})"), run)
        log(f"{method}: {time.perf_counter() - t:.0f} s")
        folder = api.RunFolder(run).final_model()
        models.append({"name": f"{method} {ratio:.0%}", "folder": folder, "gguf": run / "gguf"})
    for m in models:
        m["report"] = json.loads((m["gguf"] / "export_report.json").read_text())
    return models


# ---------------------------------------------------------------------------- accuracy, answered by llama.cpp


class LlamaCpp:
    """One text GGUF + mmproj loaded in xllamacpp (llama-server in-process), asked through its /completion route."""

    def __init__(self, gguf: Path, mmproj: Path, threads: int) -> None:
        import os

        os.environ["LLAMA_MEDIA_MARKER"] = "<__media__>"  # else llama-server picks a random marker
        import xllamacpp as xl

        params = xl.CommonParams()
        params.model.path = str(gguf)
        params.mmproj.path = str(mmproj)
        params.n_ctx = 512
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.warmup = False
        self.server = xl.Server(params)
        self.url = self.server.listening_address.rstrip("/") + "/completion"

    def answer(self, prompt: str, image, max_new_tokens: int) -> str:
        import urllib.request

        buf = io.BytesIO()
        image.save(buf, "PNG")
        body = {
            "prompt": {
                "prompt_string": prompt,
                "multimodal_data": [base64.b64encode(buf.getvalue()).decode()],
            },
            "n_predict": max_new_tokens,
            "temperature": 0,
            "cache_prompt": False,
        }
        post = urllib.request.Request(
            self.url, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(post, timeout=600) as answer:
            return json.loads(answer.read())["content"].strip()

    def close(self) -> None:
        del self.server


def eval_tasks(limit: int):
    from compressor.evaluate.config import EvalTask

    tree = recipes(0.3)["width"]["evaluate"]["tasks"]
    return [
        EvalTask(**{**t, "limit": min(limit, t.get("limit", limit))})
        for t in tree
        if t["name"] != "perplexity"
    ]


def questions(limit: int) -> list[tuple[object, list[tuple[str, list, object]]]]:
    """[(task config, [(question with instruction, images, reference)])]: the study's rows, in its order."""
    from compressor.evaluate import rows as evrows
    from compressor.evaluate.tasks import TASKS, _with_instruction

    out = []
    for cfg in eval_tasks(limit):
        task = TASKS.get(cfg.name)()
        data = evrows.open_rows(cfg)
        indices = evrows.pick(len(data), cfg.limit, cfg.sample, cfg.seed)
        data.prefetch(indices)
        items = []
        for i in indices:
            row = dict(data.raw[i])
            question, ref = task.prompt(row)
            items.append(
                (_with_instruction(question, cfg, task.instruction), evrows.images(row, data.root), ref)
            )
        out.append((cfg, items))
    return out


def accuracy(models: list[dict], qs, threads: int, cache: Path) -> dict[tuple[str, str], dict]:
    """{(model, file): {task: {"llama.cpp": metric, "transformers": metric}}}; each file's scores are kept in
    `cache` as they come, and a rerun scores only the files not there yet."""
    from compressor.arch import spec_for
    from compressor.evaluate import metrics
    from compressor.evaluate.pair import ModelPair
    from compressor.models import load_model, load_processor

    done = json.loads(cache.read_text()) if cache.is_file() else {}
    result: dict[tuple[str, str], dict] = {}
    for m in models:
        texts = [f for f in m["report"]["files"] if f["kind"] == "text"]
        if all(f"{m['name']} | {f['file']}" in done for f in texts):
            result.update({(m["name"], f["file"]): done[f"{m['name']} | {f['file']}"] for f in texts})
            continue
        folder = Path(m["folder"])
        spec = spec_for(json.loads((folder / "config.json").read_text()), False)[0]
        model = load_model(folder, spec, "float32", None, False)
        pair = ModelPair(model, model, load_processor(folder, False), spec, folder, folder, "cpu", "float32")
        prompts: dict[str, list[str]] = {}
        hf: dict[str, list[str]] = {}
        for cfg, items in qs:
            prompts[cfg.name], hf[cfg.name] = [], []
            for question, images, _ in items:
                content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
                text = pair.chat_text([{"role": "user", "content": content}], True)
                prompts[cfg.name].append(text.replace("<image>", "<__media__>"))
                hf[cfg.name].append(pair.answer(question, images, cfg.max_new_tokens)["original"])
        del model, pair
        for f in texts:
            t = time.perf_counter()
            llama = LlamaCpp(m["gguf"] / f["file"], m["gguf"] / m["report"]["mmproj"], threads)
            scores = {}
            for cfg, items in qs:
                module = metrics.load(TASK_METRIC[cfg.name])
                refs = [ref for _, _, ref in items]
                ours = [
                    llama.answer(p, images[0], cfg.max_new_tokens)
                    for p, (_, images, _) in zip(prompts[cfg.name], items)
                ]
                same = sum(a == b for a, b in zip(ours, hf[cfg.name])) / max(len(ours), 1)
                scores[cfg.name] = {
                    "llama.cpp": float(module.compute(predictions=ours, references=refs)["accuracy"]),
                    "transformers": float(
                        module.compute(predictions=hf[cfg.name], references=refs)["accuracy"]
                    ),
                    "same_answer": round(same, 4),
                    "n": len(refs),
                }
            llama.close()
            log(f"{m['name']} {f['quant']}: {scores} ({time.perf_counter() - t:.0f} s)")
            result[(m["name"], f["file"])] = scores
            done[f"{m['name']} | {f['file']}"] = scores
            cache.write_text(json.dumps(done, indent=1))
    return result


TASK_METRIC = {"vqa": "vqa_accuracy", "yes_no": "yes_no"}


# ---------------------------------------------------------------------------- perplexity and speed


class TextOnly:
    """The LLaVA's language model and head alone: what llama-perplexity reads from the text GGUF."""

    def __init__(self, model) -> None:
        self.lm, self.head = model.model.language_model, model.lm_head

    def __call__(self, input_ids):
        import types

        return types.SimpleNamespace(logits=self.head(self.lm(input_ids=input_ids).last_hidden_state))


def perplexities(models: list[dict], tools: dict, threads: int, work: Path) -> dict:
    from serving import PPL, heldout_text, torch_perplexity

    from compressor.arch import spec_for
    from compressor.models import load_model, load_processor

    text = heldout_text()
    text_file = work / "heldout.txt"
    text_file.write_text(text)
    out: dict = {}
    for m in models:
        folder = Path(m["folder"])
        spec = spec_for(json.loads((folder / "config.json").read_text()), False)[0]
        model = load_model(folder, spec, "float32", None, False)
        tokenizer = getattr(load_processor(folder, False), "tokenizer", None)
        out[(m["name"], "torch")] = torch_perplexity(TextOnly(model), tokenizer, text, PPL_CTX)
        del model
        for f in (f for f in m["report"]["files"] if f["kind"] == "text"):
            cmd = [str(tools["llama-perplexity"]), "-m", str(m["gguf"] / f["file"]), "-f", str(text_file)]
            cmd += ["-c", str(PPL_CTX), "-b", str(PPL_CTX), "-t", str(threads)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            found = PPL.search(done.stdout + done.stderr)
            if done.returncode != 0 or not found:
                raise SystemExit(
                    f"llama-perplexity failed on {f['file']}:\n{(done.stdout + done.stderr)[-2000:]}"
                )
            out[(m["name"], f["file"])] = float(found["ppl"])
    return out


def llama_tokens(gguf: Path, text: str, threads: int) -> list[int]:
    """How llama.cpp's tokenizer (the GGUF's, llama-server's /tokenize, special tokens as llama-perplexity adds
    them) splits `text`."""
    import xllamacpp as xl

    from compressor.export.probe import tokenize

    params = xl.CommonParams()
    params.model.path = str(gguf)
    params.n_ctx, params.warmup = 512, False
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
    return tokenize(xl.Server(params), text, add_special=True)


def tokens_table(out: Path, threads: int) -> str:
    """Per model: llama.cpp's and transformers' token counts of the held-out text, the first difference, and
    torch's perplexity on each side's ids beside llama-perplexity's (the f16 file's, from OUT.quality.json)."""
    from serving import heldout_text, torch_perplexity

    from compressor.arch import spec_for
    from compressor.models import load_model, load_processor

    data = json.loads((out.parent / f"{out.name}.quality.json").read_text())
    ppl = {tuple(k): v for k, v in data["perplexity"]}
    text = heldout_text()
    rows = [
        "| model | tokens: llama.cpp / transformers | first difference | llama-perplexity (f16) | torch on "
        "transformers' ids | torch on llama.cpp's ids | llama.cpp / torch on its ids |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in data["models"]:
        folder = Path(m["folder"])
        f16 = next(f["file"] for f in m["report"]["files"] if f["kind"] == "text" and f["quant"] == "f16")
        llama = llama_tokens(Path(m["gguf"]) / f16, text, threads)
        tokenizer = getattr(load_processor(folder, False), "tokenizer", None)
        ours = tokenizer(text)["input_ids"]
        at = next((i for i, (a, b) in enumerate(zip(llama, ours)) if a != b), None)
        where = "none" if at is None else f"token {at}: {tokenizer.decode(llama[at : at + 2])!r}"
        spec = spec_for(json.loads((folder / "config.json").read_text()), False)[0]
        model = load_model(folder, spec, "float32", None, False)
        theirs = torch_perplexity(TextOnly(model), lambda _, ids=llama: {"input_ids": ids}, text, PPL_CTX)
        mine = torch_perplexity(TextOnly(model), tokenizer, text, PPL_CTX)
        del model
        cpp = ppl[(m["name"], f16)]
        rows.append(
            f"| {m['name']} | {len(llama):,} / {len(ours):,} | {where} | {cpp:.3f} | {mine:.3f} | {theirs:.3f} | "
            f"{cpp / theirs:.4f} |"
        )
    return "\n".join(rows)


def speeds(models: list[dict], tools: dict, threads: int, rounds: int) -> dict:
    from serving import parse_bench

    files = [
        (m["name"], m["gguf"] / f["file"])
        for m in models
        for f in m["report"]["files"]
        if f["kind"] == "text"
    ]
    runs: dict = {(n, p.name): {"prefill": [], "decode": []} for n, p in files}
    for r in range(rounds):
        for name, path in files if r % 2 == 0 else list(reversed(files)):
            cmd = [str(tools["llama-bench"]), "-m", str(path), "-p", str(PROMPT), "-n", str(GEN)]
            done = subprocess.run(
                [*cmd, "-t", str(threads), "-r", "1", "-o", "json"], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise SystemExit(f"llama-bench failed on {path}:\n{(done.stdout + done.stderr)[-2000:]}")
            got = parse_bench(done.stdout)
            for k in ("prefill", "decode"):
                runs[(name, path.name)][k].append(got[k])
        log(f"speed round {r + 1}/{rounds} done")
    return {
        key: {k: statistics.median(v) for k, v in val.items()} | {"runs": val} for key, val in runs.items()
    }


# ---------------------------------------------------------------------------- the table


def table(models, acc, ppl, speed) -> str:
    rows = [
        "| model | type | MiB | bits/weight | fallbacks | text check (top-1) | image check | prefill tok/s | "
        "decode tok/s | decode vs original | easy-VQA open: llama.cpp (transformers) | yes/no: llama.cpp "
        "(transformers) | same answer | perplexity: llama.cpp (torch) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {
        f["quant"]: speed[("original", f["file"])]["decode"]
        for f in models[0]["report"]["files"]
        if f["kind"] == "text"
    }
    for m in models:
        checks = {(c["file"], c["kind"]): c for c in m["report"]["checks"]}
        for f in (f for f in m["report"]["files"] if f["kind"] == "text"):
            key = (m["name"], f["file"])
            text, image = checks[(f["file"], "text")], checks.get((f["file"], "image"))
            a = acc[key]
            same = statistics.mean(v["same_answer"] for v in a.values())
            rows.append(
                f"| {m['name']} | {f['quant']} | {f['bytes'] / 2**20:.1f} | {f['bits_per_weight']:.2f} | "
                f"{len(f['fallbacks'])} | {text['top1_agreement']:.0%} | "
                + (
                    f"{image['top1_agreement']:.0%} ({image.get('unmodified_agreement') or 0:.0%} unmodified)"
                    if image
                    else "-"
                )
                + f" | {speed[key]['prefill']:.0f} | {speed[key]['decode']:.1f} | "
                f"{speed[key]['decode'] / base[f['quant']]:.2f}× | "
                f"{a['vqa']['llama.cpp']:.1%} ({a['vqa']['transformers']:.1%}) | "
                f"{a['yes_no']['llama.cpp']:.1%} ({a['yes_no']['transformers']:.1%}) | {same:.0%} | "
                f"{ppl[key]:.2f} ({ppl[(m['name'], 'torch')]:.2f}) |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=150, help="questions per task (the study's 150)")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=Path("runs/export-gguf"))
    ap.add_argument(
        "--phase",
        choices=["all", "quality", "speed", "tokens"],
        default="all",
        help="quality: models, accuracy and perplexity (saved in OUT.quality.json); speed: the timing rounds and the "
        "table, from that file (run it on a quiet machine); all: both; tokens: the perplexity gap's cause (llama.cpp's "
        "tokens against transformers', from that file)",
    )
    args = ap.parse_args(argv)

    from compressor.export import toolchain

    t0 = time.perf_counter()
    if args.phase == "tokens":
        print(tokens_table(args.out, args.threads))
        return
    tools = toolchain.build_tools(("llama-quantize", "llama-bench", "llama-perplexity"), log)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out.parent / f"{args.out.name}.quality.json"
    if args.phase in ("all", "quality"):
        models = make_models(args.out, args.ratio)
        t1 = time.perf_counter()
        acc = accuracy(models, questions(args.limit), args.threads, args.out / "accuracy.json")
        t2 = time.perf_counter()
        ppl = perplexities(models, tools, args.threads, args.out)
        keep = [{k: str(v) if isinstance(v, Path) else v for k, v in m.items()} for m in models]
        saved.write_text(
            json.dumps(
                {
                    "models": keep,
                    "accuracy": [[list(k), v] for k, v in acc.items()],
                    "perplexity": [[list(k), v] for k, v in ppl.items()],
                    "seconds": {"models": round(t1 - t0), "accuracy": round(t2 - t1)},
                }
            )
        )
        log(f"quality phase saved in {saved} ({time.perf_counter() - t0:.0f} s)")
        if args.phase == "quality":
            return
    data = json.loads(saved.read_text())
    models = [{**m, "folder": Path(m["folder"]), "gguf": Path(m["gguf"])} for m in data["models"]]
    acc = {tuple(k): v for k, v in data["accuracy"]}
    ppl = {tuple(k): v for k, v in data["perplexity"]}
    t1, t2 = data["seconds"]["models"], data["seconds"]["accuracy"]
    speed = speeds(models, tools, args.threads, args.rounds)
    md = table(models, acc, ppl, speed)
    from serving import machine

    text = (
        f"{md}\n\n{machine()}; llama.cpp from xllamacpp {toolchain.XLLAMACPP}'s sources; {args.threads} threads, "
        f"{args.rounds} rounds; this run: students (prune, recover, eval, export) {t1} s, accuracy {t2} s (work done "
        "by an earlier run is reused: its runs resume, runs/export-gguf/accuracy.json keeps the scores)\n"
    )
    print(text)
    (args.out.parent / f"{args.out.name}.md").write_text(text)
    dump = {
        "models": [{k: str(v) if isinstance(v, Path) else v for k, v in m.items()} for m in models],
        "accuracy": {" | ".join(k): v for k, v in acc.items()},
        "perplexity": {" | ".join(k): v for k, v in ppl.items()},
        "speed": {" | ".join(k): v for k, v in speed.items()},
    }
    (args.out.parent / f"{args.out.name}.json").write_text(json.dumps(dump, indent=1))


if __name__ == "__main__":
    main()
