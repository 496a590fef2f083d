"""GGUF export: a model folder → `<name>-<QUANT>.gguf` per quant (+ `mmproj-<name>-f16.gguf`), checked in llama.cpp.

`run(src, out_dir, quants)` refuses bad input and unexportable families before any work, stages a copy of the
folder with only what llama.cpp's converter lacks (`stage`), converts in a subprocess with the pinned converter
(`toolchain`, `convert`), quantises k-quants with llama-quantize, then loads every text file in llama.cpp and
compares it with transformers (`verify`). Everything is written into a temporary folder and moved into place at
the end: a failure, a disagreement included, leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from compressor.errors import CompressorError
from compressor.export.report import ExportReport

log = logging.getLogger("compressor")

REPORT = "export_report.json"
DEFAULT_QUANTS = ("f16", "q8_0")

__all__ = ["DEFAULT_QUANTS", "REPORT", "ExportReport", "check_inputs", "run"]


def check_inputs(src: str | Path, quants) -> tuple[object, list[str]]:
    """(the source, the quants) or a CompressorError, with no work done: bad quants, a missing quantizer, a folder
    that is not a model, a family that cannot be exported, the pinned tools missing."""
    from compressor.export import stage, toolchain

    quants = stage.check_quants(list(quants))
    source = stage.read_source(src)
    toolchain.check_runner()
    toolchain.ensure_converter(download=False)
    return source, quants


def run(
    src: str | Path,
    out_dir: str | Path,
    quants=DEFAULT_QUANTS,
    name: str | None = None,
    overwrite: bool = False,
    check: bool = True,
) -> ExportReport:
    """Export the model folder `src` into `out_dir` (written atomically) and return the report (also saved there
    as export_report.json). `check=False` skips the llama.cpp comparison (files unverified, report incomplete)."""
    from compressor.export import convert, stage, toolchain, verify
    from compressor.models import commit_output, prepare_output

    t0 = time.perf_counter()
    source, quants = check_inputs(src, quants)
    out = prepare_output(out_dir, overwrite)
    name = convert.safe_name(name or Path(src).resolve().name)
    note = stage.mmproj_note(source)
    result: dict[str, ExportReport] = {}

    def write(folder: Path) -> None:
        staged, fixes = stage.stage(source, folder / ".staging")
        kv, kv_fixes = stage.extra_kv(source)
        fixes += kv_fixes
        byte_bpe = stage.byte_level_bpe(source)
        fixes += [byte_bpe] if byte_bpe else []
        if note is None:
            fixes += [f"tensors {old}* read as {new}*" for old, new in source.spec.gguf.tensor_renames]
        files, checks = [], []
        f16 = folder / f"{name}-F16.gguf"
        direct = [q for q in quants if q in stage.CONVERTER_TYPES]
        mmproj = folder / f"mmproj-{name}-f16.gguf" if note is None else None
        log.info(
            "export: converting to %s", ", ".join(direct + (["the projector (mmproj)"] if mmproj else []))
        )
        # one converter process each, the projector's beside the text files'
        jobs = [(folder / f"{name}-{q.upper()}.gguf", q, False) for q in direct]
        own_mmproj = source.spec.gguf.mmproj_writer  # a projector the converter does not write: written here
        jobs += [(mmproj, "f16", True)] if mmproj and not own_mmproj else []
        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
            seconds = list(
                pool.map(
                    lambda job: convert.convert(
                        staged,
                        job[0],
                        job[1],
                        mmproj=job[2],
                        extra_kv=kv,
                        renames=source.spec.gguf.tensor_renames,
                        byte_bpe=bool(byte_bpe),
                    ),
                    jobs,
                )
            )
        files.extend(  # the projector's file is listed after the k-quants
            convert.inspect(p, q, "text", s) for (p, q, is_mmproj), s in zip(jobs, seconds) if not is_mmproj
        )
        if mmproj and own_mmproj:
            seconds.append(convert.write_own_mmproj(own_mmproj, staged, mmproj))
        kquants = [q for q in quants if q in stage.QUANTIZER_TYPES]
        if kquants and not f16.is_file():
            convert.convert(staged, folder / ".f16.gguf", "f16", extra_kv=kv, byte_bpe=bool(byte_bpe))
            f16 = folder / ".f16.gguf"
        for q in kquants:
            path = folder / f"{name}-{q.upper()}.gguf"
            log.info("export: quantising to %s", path.name)
            files.append(convert.inspect(path, q, "text", convert.quantize(f16, path, q)))
        if mmproj:
            files.append(convert.inspect(mmproj, "f16", "mmproj", seconds[-1]))
        if check:
            texts = [f for f in files if f.kind == "text"]
            ref = verify.Reference(staged, source.spec)
            for f in texts:
                c = verify.check(folder / f.file, f.quant, ref)
                log.info(
                    "export: %s agrees with transformers on %.0f%% of %d tokens",
                    f.file,
                    100 * c.top1_agreement,
                    c.positions,
                )
                checks.append(c)
            del ref
            if mmproj is not None and all(c.passed for c in checks):  # a wrong text file fails without it
                image = verify.ImageReference(staged, source.spec)
                for f in texts:
                    c = verify.check_image(folder / f.file, mmproj, f.quant, image)
                    log.info(
                        "export: %s + %s answers the image question as transformers does on %.0f%% of %d tokens",
                        f.file,
                        mmproj.name,
                        100 * c.top1_agreement,
                        c.positions,
                    )
                    checks.append(c)
                del image
        bad = [c for c in checks if not c.passed]
        if bad:
            raise CompressorError(
                "llama.cpp disagrees with transformers on "
                + "; ".join(
                    f"{c.file}{' + ' + c.mmproj + ' (image question)' if c.kind == 'image' else ''}: "
                    + (
                        c.note
                        or f"top-1 agreement {c.top1_agreement:.0%} of {c.positions} tokens (at least "
                        f"{c.min_agreement:.0%} required), largest log-probability gap {c.max_logprob_diff:.3f} nats "
                        f"(at most {c.max_gap} allowed)"
                    )
                    for c in bad
                )
                + "; nothing was written. The converter or this pruned shape needs a fix (research/export-gguf.md)"
            )
        shutil.rmtree(folder / ".staging")
        (folder / ".f16.gguf").unlink(missing_ok=True)
        report = ExportReport(
            source=str(src),
            name=name,
            family=source.spec.family,
            quants=quants,
            files=files,
            mmproj=mmproj.name if mmproj else None,
            mmproj_note=note,
            fixes=fixes,
            checks=checks,
            converter=toolchain.converter_id(),
            seconds=round(time.perf_counter() - t0, 2),
            complete=check,
        )
        (folder / REPORT).write_text(report.model_dump_json(indent=1))
        result["report"] = report

    commit_output(out, write)
    return result["report"]
