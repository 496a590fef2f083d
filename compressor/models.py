"""Loading and saving models and processors with transformers' Auto classes. No custom modeling code."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from compressor.arch import ArchSpec
from compressor.errors import CompressorError

log = logging.getLogger(__name__)


def resolve_dtype(dtype: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, dtype)


def weights_bytes(path: str | Path, dtype) -> int:
    """Approximate in-memory size of the checkpoint at `dtype`, from its safetensors headers."""
    import json
    import struct

    import torch

    total = 0
    for file in Path(path).glob("*.safetensors"):
        with open(file, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        for name, info in header.items():
            if name != "__metadata__":
                numel = 1
                for d in info["shape"]:
                    numel *= d
                total += numel
    return total * torch.empty((), dtype=dtype).element_size()


def pick_device_map(path: str | Path, dtype, device_map: str | None):
    """The user's device map; else the first GPU when the model fits it, "auto" when it doesn't, CPU without one."""
    import torch

    if device_map is not None or not torch.cuda.is_available():
        return device_map
    free, _ = torch.cuda.mem_get_info(0)
    need = weights_bytes(path, dtype)
    if need * 1.2 < free:  # room for activations and scoring
        return {"": 0}
    log.info(
        "%.1f GB of weights do not fit the %.1f GB free on GPU 0: device_map=auto", need / 1e9, free / 1e9
    )
    return "auto"


def load_model(
    path: str | Path,
    spec: ArchSpec,
    dtype: str = "auto",
    device_map: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
):
    """The model from a local folder (see `hub.pull`), in the requested dtype, eval mode."""
    import transformers

    auto = getattr(transformers, spec.auto_class)
    torch_dtype = resolve_dtype(dtype)
    device_map = pick_device_map(path, torch_dtype, device_map)
    log.info(
        "loading %s with %s (dtype %s%s)",
        path,
        spec.auto_class,
        dtype,
        f", device_map {device_map}" if device_map else "",
    )
    try:
        model = auto.from_pretrained(
            str(path),
            dtype=torch_dtype,
            device_map=device_map,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
        )
    except OSError as err:
        if not allow_pickle and "safetensors" in str(err):
            raise CompressorError(
                f"{path} has no safetensors weights; pass --allow-pickle to load pickle (*.bin) weights, "
                "only if you trust the repo"
            ) from None
        raise
    return model.eval()


def load_processor(path: str | Path, trust_remote_code: bool = False):
    """The processor (or tokenizer alone) saved with the model; None when there is neither."""
    from transformers import AutoProcessor, AutoTokenizer

    for auto in (AutoProcessor, AutoTokenizer):
        try:
            return auto.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        except (OSError, ValueError, TypeError, KeyError, ImportError) as err:
            log.debug("%s failed on %s: %s", auto.__name__, path, err)
    return None


def prepare_output(out: str | Path, overwrite: bool = False) -> Path:
    """Refuse a non-empty output folder unless overwriting; the folder is only written by `commit_output`."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise CompressorError(
            f"output folder {str(out)!r} exists and is not empty; pass --overwrite or another --out"
        )
    return out


def commit_output(out: Path, write: Any) -> Path:
    """Run `write(tmp_dir)` in a sibling temporary folder, then move it into place in one rename.

    A crash or error leaves the previous contents of `out` (if any) untouched and no half-written folder.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{tmp.name[-8:]}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_model(model, processor, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    if processor is not None:
        processor.save_pretrained(folder)
