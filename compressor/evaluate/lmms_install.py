"""The pinned lmms-eval, installed without torchvision and without a second torch build.

A plain ``pip install lmms-eval`` resolves 50+ requirements, torchvision among them, and through it another torch
build, which breaks transformers' processors here. What the ``llava_hf`` model and the POPE-style tasks import is
much less: lmms-eval itself (``--no-deps``) and the small packages in ``PACKAGES`` (loguru, sacrebleu, tenacity,
decord, pytablewriter … and ``filelock<4``, which lmms-eval's evaluator needs: 4.x removed ``filelock._api``). They
go into one folder of the cache, ``~/.cache/compressor/lmms-eval-<version>`` ($COMPRESSOR_CACHE), with
``pip install --target``; the bridge runs lmms-eval with this Python and that folder first on PYTHONPATH, so the
project's own torch, transformers, datasets and accelerate are the ones it uses (and the folder's filelock 3.x
only in lmms-eval's process).

    make lmms                                   # or:
    python -m compressor.evaluate.lmms_install  # once; a rerun does nothing

Models other than ``llava_hf`` (qwen2_vl …) may import more; give such an environment with ``lmms_eval.python``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from compressor.errors import CompressorError

LMMS_EVAL = "0.7.3"
# Exactly what lmms-eval 0.7.3's llava_hf + generate_until tasks need beside the project's own packages (checked by
# running it: decord and pytz are imported but undeclared), at the versions the tests ran.
PACKAGES = (
    f"lmms-eval=={LMMS_EVAL}",
    "loguru==0.7.3",
    "sacrebleu==2.6.0",
    "tenacity==9.2.1",
    "decord==0.6.0",
    "pytablewriter==1.2.1",
    "filelock==3.32.7",
    "portalocker==4.4.2",
    "tabulate==0.10.0",
    "colorama==0.4.6",
    "lxml==6.2.1",
    "DataProperty==1.1.1",
    "mbstrdecoder==1.1.5",
    "pathvalidate==3.3.1",
    "tabledata==1.3.5",
    "tcolorpy==0.1.7",
    "typepy==2.0.0",
    "chardet==7.7.0",
)
INSTALL_COMMAND = "make lmms"
_STAMP = "compressor-installed.json"


def cache_dir() -> Path:
    return Path(os.environ.get("COMPRESSOR_CACHE") or Path.home() / ".cache" / "compressor")


def home() -> Path:
    """The folder the pinned lmms-eval and its packages are installed into (put first on PYTHONPATH)."""
    return cache_dir() / f"lmms-eval-{LMMS_EVAL}"


def installed() -> Path | None:
    """The install folder when a complete install is there (its stamp names exactly `PACKAGES`), else None."""
    stamp = home() / _STAMP
    try:
        if json.loads(stamp.read_text()).get("packages") == list(PACKAGES):
            return home()
    except (OSError, ValueError):
        pass
    return None


def missing_message(python: str) -> str:
    return (
        f"lmms-eval is not installed for {python} (neither in its environment nor in {home()}). Install the pinned "
        f"lmms-eval=={LMMS_EVAL} without torchvision or a second torch, once: `{INSTALL_COMMAND}` (or "
        f"`{sys.executable} -m compressor.evaluate.lmms_install`); or set lmms_eval.python to an environment "
        "that has it"
    )


def install() -> Path:
    """Install `PACKAGES` (no dependencies resolved) into `home()`, atomically; does nothing when already there."""
    done = installed()
    if done is not None:
        return done
    target = home()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp), *PACKAGES]
        # The project's constraints pin torch only, but a constraint file would also apply to filelock<4 here.
        env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompressorError(f"installing lmms-eval failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
        bad = [p.name for p in tmp.iterdir() if p.name.split("-")[0] in ("torch", "torchvision")]
        if bad:  # --no-deps makes this impossible; checked all the same, it is the point of this module
            raise CompressorError(f"the lmms-eval install brought in {bad}; refusing it")
        (tmp / _STAMP).write_text(json.dumps({"packages": list(PACKAGES)}, indent=1))
        if installed() is not None:  # another process finished first: that install is the one
            return target
        if target.exists():  # an incomplete or older install
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def main() -> int:
    try:
        print(install())
    except CompressorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
