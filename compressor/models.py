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


def source_dtype(path: str | Path) -> str | None:
    """The dtype a checkpoint declares in its config.json (`dtype`, or the older `torch_dtype`), else None.

    Read at the top level first, then in `text_config` (some VLM configs carry it only there).
    """
    import json

    file = Path(path) / "config.json"
    if not file.is_file():
        return None
    config = json.loads(file.read_text())
    for where in (config, config.get("text_config") or {}):
        for key in ("dtype", "torch_dtype"):
            value = where.get(key)
            if isinstance(value, str) and value in DTYPES:
                return value
    return None


DTYPES = ("float32", "bfloat16", "float16")


def local_device_index() -> int:
    """This process's GPU: LOCAL_RANK under torchrun / accelerate launch, else the current CUDA device."""
    import os

    import torch

    local = os.environ.get("LOCAL_RANK")
    return int(local) if local is not None else torch.cuda.current_device()


def launched_processes() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def sharded_launch() -> bool:
    """An `accelerate launch` with FSDP or DeepSpeed: the accelerator places (and shards) the weights itself."""
    import os

    return any(
        os.environ.get(k, "").lower() in ("1", "true")
        for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    )


def pick_device_map(path: str | Path, dtype, device_map: str | dict | None):
    """Where `from_pretrained` puts the model: the user's device map, else this process's GPU when the model fits.

    - no GPU: None (the CPU);
    - FSDP / DeepSpeed launch: None (loaded on the CPU; the accelerator shards it onto the GPUs);
    - fits this process's GPU (LOCAL_RANK's under a multi-process launch, never GPU 0 for every rank):
      `{"": that GPU}`;
    - does not fit: "auto" (spread over the GPUs, then CPU/disk offload) in a single process; under a
      multi-process launch an error, since every rank would spread itself over every GPU.
    """
    import torch

    if device_map is not None or not torch.cuda.is_available() or sharded_launch():
        return device_map
    index = local_device_index()
    free, _ = torch.cuda.mem_get_info(index)
    need = weights_bytes(path, dtype)
    if need * 1.2 < free:  # room for activations and scoring
        return {"": index}
    if launched_processes() > 1:
        raise CompressorError(
            f"{path}: {need / 1e9:.1f} GB of weights do not fit the {free / 1e9:.1f} GB free on GPU {index} of this "
            "process, and under a multi-process launch each process holds whole models: use "
            "recipes/accelerate/fsdp.yaml or zero3.yaml, or run one process (device_map auto)"
        )
    log.info(
        "%.1f GB of weights do not fit the %.1f GB free on GPU %d: device_map=auto",
        need / 1e9,
        free / 1e9,
        index,
    )
    return "auto"


def dispatched(model) -> bool:
    """Whether accelerate spread `model` over several devices or offloaded part of it (a `device_map`)."""
    devices = set((getattr(model, "hf_device_map", None) or {}).values())
    return len(devices) > 1 or bool(devices & {"disk", "meta"})


def placement(model) -> dict[str, Any]:
    """Where a model's weights live, for reports: its devices, its dtypes and what is offloaded to cpu/disk."""
    device_map = getattr(model, "hf_device_map", None) or {}
    values = {str(v) for v in device_map.values()}
    gpu = any(v not in ("cpu", "disk", "meta") for v in values)
    offloaded = sorted(k for k, v in device_map.items() if v == "disk" or (gpu and v == "cpu"))
    params = list(model.parameters())
    devices = sorted(
        {str(p.device) for p in params if p.device.type != "meta"} | ({"disk"} if "disk" in values else set())
    )
    return {
        "devices": devices,
        "dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in params}),
        "dispatched": dispatched(model),
        "offloaded": offloaded,
    }


def execution_device(module):
    """Where `module` computes: its first weight's device, or accelerate's execution device for an offloaded one."""
    import torch

    for sub in module.modules():
        for p in sub.parameters(recurse=False):
            if p.device.type != "meta":
                return p.device
            hook = getattr(sub, "_hf_hook", None)
            for h in getattr(hook, "hooks", [hook]):  # a SequentialHook holds several
                device = getattr(h, "execution_device", None)
                if device is not None:
                    return torch.device(device)
    return torch.device("cpu")


def input_device(model):
    """Where a model's inputs go: its embedding's device, or the execution device when accelerate offloads it."""
    return execution_device(model.get_input_embeddings())


def place(model, device) -> str:
    """Move `model` to `device`, unless accelerate dispatched it (then moving would break its hooks): say which."""
    if dispatched(model):
        log.info("the model is dispatched by its device_map %s: left where it is", model.hf_device_map)
        return "kept on its device_map"
    model.to(device)
    return f"moved to {device}"


def load_model(
    path: str | Path,
    spec: ArchSpec,
    dtype: str = "auto",
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    **kwargs: Any,
):
    """The model from a local folder (see `hub.pull`), in the requested dtype, eval mode.

    `model.save_dtype` is what `save_model` writes by default: an explicit `dtype`, or with "auto" the
    checkpoint's own, so a model loaded in float32 on the CPU is not saved twice as big as its source. `kwargs` go to
    `from_pretrained` (e.g. `max_memory`, `offload_folder`).
    """
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
            **kwargs,
        )
    except OSError as err:
        if not allow_pickle and "safetensors" in str(err):
            raise CompressorError(
                f"{path} has no safetensors weights; pass --allow-pickle to load pickle (*.bin) weights, "
                "only if you trust the repo"
            ) from None
        raise
    model.save_dtype = dtype if dtype != "auto" else source_dtype(path)
    return model.eval()


def load_processor(path: str | Path, trust_remote_code: bool = False):
    """The processor saved with the model (see `compressor.arch.processors`); None when there is not even a tokenizer.

    For a multimodal family a folder whose image processor cannot load is an error naming the fix, never a
    silent tokenizer; a folder of another model (no known family) may give its tokenizer alone.
    """
    import json

    from compressor.arch import processors
    from compressor.arch.spec import spec_for

    file = Path(path) / "config.json"
    config = json.loads(file.read_text()) if file.is_file() else {}
    try:
        spec = spec_for(config, trust_remote_code=True)[0]  # only to know the family; loading checks trust
    except CompressorError:
        spec = None
    return processors.load(path, spec, config, trust_remote_code)


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


def save_model(model, processor, folder: Path, dtype: str | None = None) -> None:
    """Save safetensors (+ the processor) in `dtype`; default: `model.save_dtype` (see `load_model`).

    The model's parameters are cast in place, so call it last. A dispatched model (device_map with offload) is saved as it is.
    """
    import torch

    dtype = dtype or getattr(model, "save_dtype", None)
    if dtype is not None:
        target = getattr(torch, dtype)
        if dispatched(model):
            if any(p.dtype != target for p in model.parameters()):
                log.warning(
                    "the model is dispatched over several devices: saved in its load dtype, not %s", dtype
                )
        else:  # parameters only: buffers such as rotary inv_freq stay as transformers computes them
            with torch.no_grad():
                for p in model.parameters():
                    if p.is_floating_point() and p.dtype != target:
                        p.data = p.data.to(target)
    model.save_pretrained(folder, safe_serialization=True)
    if processor is not None:
        processor.save_pretrained(folder)


def cast_checkpoint(folder: Path, dtype: str) -> None:
    """Rewrite a saved checkpoint's floating tensors (and its config's dtype) in `dtype`, file by file.

    For weights that did not go through `save_model`: the Trainer's gathered FSDP / ZeRO-3 state dict holds the
    fp32 master copies of the trained weights beside the 16-bit frozen ones.
    """
    import json

    import torch
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    for file in sorted(Path(folder).glob("*.safetensors")):
        tensors = load_file(str(file))
        if any(t.is_floating_point() and t.dtype != target for t in tensors.values()):
            cast = {k: t.to(target) if t.is_floating_point() else t for k, t in tensors.items()}
            save_file(cast, str(file), metadata={"format": "pt"})
    config = Path(folder) / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        data.pop("torch_dtype", None)
        data["dtype"] = dtype
        for sub in data.values():
            if isinstance(sub, dict) and ("dtype" in sub or "torch_dtype" in sub):
                sub.pop("torch_dtype", None)
                sub["dtype"] = dtype
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
