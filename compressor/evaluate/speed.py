"""Speed and memory of the original and the compressed model, measured in the same run.

- Parameters: `compressor.plan.count_params` (whole model and language backbone).
- Disk: the size of the folder's safetensors files.
- Prompt: `speed_prompt_tokens` tokens of fixed English text, batch 1, text only. Pruning changes only the
  language backbone; the vision tower and projector are untouched, so an image would add the same time to both.
- Prefill latency: wall time of `generate` producing 1 token (the prompt's forward pass plus one step).
- Decode tokens/s: (N − 1) / (t_N − t_1), where t_N is the wall time of `generate` producing exactly N =
  `speed_new_tokens` tokens (greedy, KV cache on, `min_new_tokens = max_new_tokens`, so end-of-sequence never
  stops it early) and t_1 the prefill time of the same round. The prefill is thus taken out of the rate.
- Repeats: one warm-up per model, then `speed_repeats` rounds; each round times both models, alternating which
  goes first. Reported: min and median latency, best and median tokens/s. On a GPU each timing ends with
  `torch.cuda.synchronize()`.
- Peak memory, measured for each model in a process of its own (`python -m compressor.evaluate.speed`, forked by
  compressor.warm from a server that has torch and transformers imported: no 9 s import per model; the server
  never loads a model or touches the device), run before the evaluation loads the two models so that each
  process has the device to itself; the process loads the model and runs one N-token generate. On a GPU: `torch.cuda.max_memory_allocated()` over the generate, reset after loading (weights,
  activations and KV cache; nothing else is allocated in that process). On the CPU (Linux): the peak resident
  set size over loading and the generate minus the resident size just before loading, the kernel's peak mark
  (VmHWM) being reset at that point; so loading spikes count, and both models are measured the same way.
  Where /proc is missing, the rise of the lifetime peak `ru_maxrss` (which under-reports when imports peaked
  higher). The method used is recorded in each row.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError
from compressor.evaluate.report import SpeedRow

if TYPE_CHECKING:
    from compressor.evaluate.config import Evaluate
    from compressor.evaluate.pair import ModelPair

FILLER = (
    "The quick brown fox jumps over the lazy dog while the small cat sleeps in the warm afternoon sun, "
    "and a gentle wind moves the leaves of the old oak tree beside the quiet river. "
)
METHOD = (
    "batch 1, text-only prompt of {p} tokens, greedy; prefill = generate 1 token; decode tokens/s = "
    "(N-1)/(t_N - t_1) with N = {n} forced new tokens; {r} interleaved rounds after 1 warm-up each; "
    "memory: {mem}"
)
MEMORY_GPU = "torch.cuda.max_memory_allocated in a fresh process during one generate (weights included)"
MEMORY_CPU = "peak RSS of a process of its own over load + one generate, minus its RSS before loading"
MEMORY_CPU_FALLBACK = (
    "rise of the lifetime peak RSS (ru_maxrss) of the measuring process over load + one generate"
)


def prompt_ids(tokenizer, n: int):
    """`n` token ids of fixed English text, shape (1, n)."""
    import torch

    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer(FILLER, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids[:n]])


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def timed_generate(model, ids, n: int, pad_token_id) -> float:
    """Wall seconds of a greedy generate of exactly `n` new tokens."""
    import torch

    ids = ids.to(model.device)
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            use_cache=True,
            pad_token_id=pad_token_id,
        )
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if out.shape[1] - ids.shape[1] != n:
        raise RuntimeError(f"generate made {out.shape[1] - ids.shape[1]} tokens instead of {n}")
    return seconds


def timings(pair: ModelPair, cfg: Evaluate) -> dict[str, dict[str, list[float]]]:
    """Per model: prefill seconds and decode tokens/s of every round."""
    ids = prompt_ids(pair.tokenizer, cfg.speed_prompt_tokens)
    n, pad = cfg.speed_new_tokens, pair.tokenizer.pad_token_id
    sides = dict(pair.sides())
    for model in sides.values():
        timed_generate(model, ids, n, pad)  # warm-up
    out: dict[str, dict[str, list[float]]] = {s: {"prefill": [], "tok_s": []} for s in sides}
    for r in range(cfg.speed_repeats):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for side in order:
            t1 = timed_generate(sides[side], ids, 1, pad)
            tn = timed_generate(sides[side], ids, n, pad)
            out[side]["prefill"].append(t1)
            out[side]["tok_s"].append((n - 1) / max(tn - t1, 1e-9))
    return out


def peak_memory(
    folder: Path, cfg: Evaluate, device: str | None, dtype: str, trust_remote_code: bool
) -> tuple[int, str]:
    """(peak bytes, method) of loading `folder` and one generate, in a fresh process (see the module doc)."""
    cmd = [
        sys.executable,
        "-m",
        "compressor.evaluate.speed",
        str(folder),
        "--prompt-tokens",
        str(cfg.speed_prompt_tokens),
        "--new-tokens",
        str(cfg.speed_new_tokens),
        "--dtype",
        dtype,
    ]
    if device:
        cmd += ["--device", device]
    if trust_remote_code:
        cmd.append("--trust-remote-code")
    from compressor import warm

    proc = warm.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompressorError(f"measuring the peak memory of {folder} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(result["peak_bytes"]), result["method"]


def peak_memories(
    folders: dict[str, Path], cfg: Evaluate, device: str | None, dtype: str, trust_remote_code: bool = False
) -> dict[str, tuple[int, str]]:
    """(peak bytes, method) per model, one fresh process each; run before the pair is loaded, so that each
    process has the device to itself."""
    return {
        side: peak_memory(folder, cfg, device, dtype, trust_remote_code) for side, folder in folders.items()
    }


def measure(
    pair: ModelPair, cfg: Evaluate, peaks: dict[str, tuple[int, str]] | None = None
) -> tuple[list[SpeedRow], str]:
    """Both models' speed rows (with their `peak_memories`, if measured), and the method in words."""
    from compressor.plan import count_params

    times = timings(pair, cfg)
    rows = []
    for side, model in pair.sides():
        folder = pair.original_dir if side == "original" else pair.compressed_dir
        counts = count_params(model, pair.spec)
        prefill_ms = [1000 * t for t in times[side]["prefill"]]
        peak, memory = (peaks or {}).get(side, (None, None))
        rows.append(
            SpeedRow(
                model=side,
                params_total=counts["total"],
                params_backbone=counts["backbone"],
                disk_bytes=disk_bytes(folder),
                prompt_tokens=cfg.speed_prompt_tokens,
                new_tokens=cfg.speed_new_tokens,
                repeats=cfg.speed_repeats,
                prefill_ms_min=min(prefill_ms),
                prefill_ms_median=statistics.median(prefill_ms),
                decode_tokens_per_s_best=max(times[side]["tok_s"]),
                decode_tokens_per_s_median=statistics.median(times[side]["tok_s"]),
                peak_memory_bytes=peak,
                memory_method=memory,
            )
        )
    memory = rows[0].memory_method or "not measured"
    method = METHOD.format(p=cfg.speed_prompt_tokens, n=cfg.speed_new_tokens, r=cfg.speed_repeats, mem=memory)
    shapes = "; ".join(f"{side}: {widths(model)}" for side, model in pair.sides())
    return rows, f"{method}; widths: {shapes}"


def widths(model) -> str:
    """The language model's layers, query / KV heads and MLP width, as the speed depends on them."""
    config = model.config
    text = getattr(config, "text_config", None) or config
    get = text.get if isinstance(text, dict) else lambda k, d=None: getattr(text, k, d)
    mlp = get("intermediate_size")
    return (
        f"{get('num_hidden_layers')} layers, {get('num_attention_heads')} query / "
        f"{get('num_key_value_heads') or get('num_attention_heads')} KV heads, MLP {mlp}"
    )


# ---------------------------------------------------------------------------- the fresh process


def _status_bytes(field: str) -> int:
    """A memory line of /proc/self/status (Linux), in bytes."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field} in /proc/self/status")
    return int(match.group(1)) * 1024


def _rss_probe() -> tuple[int, Callable[[], int], str]:
    """(RSS now, a function giving the peak RSS since now, the method in words).

    On Linux the kernel's peak-RSS mark (VmHWM) is reset here (`echo 5 > /proc/self/clear_refs`), so the peak is
    that of what follows only. Elsewhere the process's lifetime peak (`ru_maxrss`) is all there is: the rise of
    that peak can under-report when importing torch peaked higher than the model ever takes.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmRSS"), lambda: _status_bytes("VmHWM"), MEMORY_CPU
    except OSError:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux

        def peak() -> int:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

        return peak(), peak, MEMORY_CPU_FALLBACK


def _child(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="peak memory of one model: load + one generate")
    parser.add_argument("folder")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--device")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from compressor.arch import spec_for
    from compressor.models import load_model, load_processor

    folder = Path(args.folder)
    config = json.loads((folder / "config.json").read_text())
    spec, _ = spec_for(config, args.trust_remote_code)
    for name in [spec.auto_class, *(config.get("architectures") or [])]:
        getattr(transformers, name, None)  # import the modeling code before the baseline: it is not the model
    processor = load_processor(folder, args.trust_remote_code)
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = prompt_ids(tokenizer, args.prompt_tokens)
    before, peak, method = _rss_probe()
    device_map = {"": args.device} if args.device else None
    model = load_model(folder, spec, args.dtype, device_map, args.trust_remote_code)
    if model.device.type == "cuda":
        # a fresh process: everything allocated is this model's, and the peak after the reset starts at the
        # weights already in memory
        torch.cuda.reset_peak_memory_stats(model.device)
        timed_generate(model, ids, args.new_tokens, tokenizer.pad_token_id)
        return {"peak_bytes": torch.cuda.max_memory_allocated(model.device), "method": MEMORY_GPU}
    timed_generate(model, ids, args.new_tokens, tokenizer.pad_token_id)
    return {"peak_bytes": max(0, peak() - before), "method": method}


if __name__ == "__main__":
    print(json.dumps(_child()))
