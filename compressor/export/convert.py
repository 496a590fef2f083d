"""llama.cpp's converter and quantizer, each in a subprocess, and what the written file holds."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from compressor.errors import CompressorError
from compressor.export.report import Fallback, GGUFFile

# converter errors that have a known cause -> what to do
_KNOWN = (
    (
        "BPE pre-tokenizer was not recognized",
        "the tokenizer is not one llama.cpp knows (a known BPE pre-tokenizer or sentencepiece); export a model "
        "whose tokenizer comes from its base model",
    ),
    ("is not supported", "llama.cpp's converter does not know this architecture"),
)


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run a converter or quantizer command. The converter (this Python running converter_main.py) is forked by
    compressor.warm from a server started with the converter's own PYTHONPATH (so its imports resolve as in a
    fresh process, the vendored gguf-py first) that has torch imported: no import time per conversion."""
    from compressor import warm

    done = warm.run(cmd, capture_output=True, text=True, env=env)
    text = done.stdout + done.stderr
    if done.returncode != 0:
        tail = [line for line in text.splitlines() if line.strip()][-8:]
        hint = next((fix for needle, fix in _KNOWN if needle in text), None)
        raise CompressorError(
            f"{what} failed (exit {done.returncode}){': ' + hint if hint else ''}; nothing was written. "
            "Its last lines:\n" + "\n".join(tail)
        )
    return text


def convert(
    folder: Path,
    out: Path,
    outtype: str,
    mmproj: bool = False,
    extra_kv: dict | None = None,
    renames: tuple[tuple[str, str], ...] = (),
    byte_bpe: bool = False,
) -> float:
    """convert_hf_to_gguf.py FOLDER --outtype T --outfile OUT [--mmproj], through converter_main.py, which adds
    `extra_kv` (keys relative to the architecture) to the text file and reads tensors under `renames`; returns the
    seconds it took."""
    import json

    from compressor.export.toolchain import converter_env, converter_script

    t = time.perf_counter()
    main = Path(__file__).with_name("converter_main.py")
    cmd = [sys.executable, str(main), str(converter_script()), str(folder), "--outtype", outtype]
    env = {
        **converter_env(),
        "COMPRESSOR_GGUF_EXTRA_KV": json.dumps(extra_kv or {}),
        "COMPRESSOR_GGUF_RENAME": json.dumps([list(r) for r in renames]),
        "COMPRESSOR_GGUF_BYTE_BPE": "1" if byte_bpe else "",
    }
    _run(
        [*cmd, "--outfile", str(out), *(["--mmproj"] if mmproj else [])],
        f"llama.cpp's converter ({outtype})",
        env,
    )
    if not out.is_file():
        raise CompressorError(f"llama.cpp's converter wrote no {out.name}; nothing was written")
    return time.perf_counter() - t


def write_own_mmproj(writer: str, folder: Path, out: Path) -> float:
    """A projector file the converter does not write (`GGUFFacts.mmproj_writer`); returns the seconds it took."""
    from compressor.export import llava_mmproj

    writers = {"llava": llava_mmproj.write}
    t = time.perf_counter()
    writers[writer](folder, out)
    return time.perf_counter() - t


def quantize(f16: Path, out: Path, quant: str) -> float:
    """llama-quantize F16 OUT QUANT; returns the seconds it took."""
    from compressor.export.toolchain import quantizer

    t = time.perf_counter()
    tool = quantizer()
    if tool is None:  # checked before any work; here only if it vanished meanwhile
        from compressor.export.toolchain import QUANTIZER_HINT

        raise CompressorError(f"quant {quant} needs {QUANTIZER_HINT}")
    _run(
        [str(tool), str(f16), str(out), quant.upper(), str(os.cpu_count() or 1)], f"llama-quantize ({quant})"
    )
    return time.perf_counter() - t


# the types a quant may store a weight matrix in without it being a fallback
_WANTED = {
    "f32": {"F32"},
    "f16": {"F16"},
    "bf16": {"BF16"},
    "q8_0": {"Q8_0"},
    "q4_k_m": {"Q4_K", "Q6_K"},
    "q5_k_m": {"Q5_K", "Q6_K"},
    "q6_k": {"Q6_K"},
}


def inspect(path: Path, quant: str, kind: str, seconds: float) -> GGUFFile:
    """Sizes, bits per weight, tensor types and fallbacks of a written GGUF (read with gguf-py)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

    reader = GGUFReader(path)
    types: dict[str, int] = {}
    fallbacks: list[Fallback] = []
    n_bytes = n_params = 0
    wanted = _WANTED[quant] if kind == "text" else {"F16", "F32"}
    for t in reader.tensors:
        name = t.tensor_type.name
        types[name] = types.get(name, 0) + 1
        n_bytes += int(t.n_bytes)
        n_params += int(t.n_elements)
        if len(t.shape) < 2 or name in wanted or kind != "text":
            continue
        ncols = int(t.shape[0])
        first = sorted(wanted)[0]
        block = GGML_QUANT_SIZES[GGMLQuantizationType[first]][0]
        why = (
            f"row length {ncols} is not a multiple of {block} ({first} blocks)"
            if ncols % block
            else "llama.cpp keeps this tensor in a wider type"
        )
        fallbacks.append(Fallback(tensor=t.name, wanted=first, got=name, why=why))
    return GGUFFile(
        file=path.name,
        kind=kind,
        quant=quant,
        bytes=path.stat().st_size,
        bits_per_weight=round(8 * n_bytes / max(n_params, 1), 3),
        tensor_types=dict(sorted(types.items())),
        fallbacks=fallbacks,
        seconds=round(seconds, 2),
    )


def safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip("-.") or "model"
