"""Multimodal conversation data, normalised to TRL's conversational vision format.

Every row becomes ``{"images": [PIL.Image, ...], "messages": [{"role", "content": [{"type": "image"} |
{"type": "text", "text": ...}]}]}``. Sources: a Hub dataset id, a folder written by
``Dataset.save_to_disk``, a local folder of json/jsonl/parquet rows with ``images`` + ``messages``
(image paths relative to the folder), or a LLaVA json file (``llava_v1_5_mix665k.json``) with its image
folder. Used by calibration (pruning) and by recovery.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError

LLAVA_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
IMAGE_PLACEHOLDER = "<image>"


def _open_image(value: Any, root: Path | None):
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict):  # datasets' Image feature without decoding
        if value.get("bytes"):
            import io

            return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
        value = value.get("path")
    if isinstance(value, str):
        path = Path(value)
        if not path.is_absolute() and root is not None:
            path = root / path
        if not path.is_file():
            raise CompressorError(
                f"image {str(path)!r} not found; check the dataset's image paths or --image-folder"
            )
        with Image.open(path) as img:
            return img.convert("RGB")
    raise CompressorError(f"cannot read an image from {type(value).__name__}; expected a PIL image or a path")


def _content(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [{k: v for k, v in part.items() if v is not None} for part in content]


def from_llava(row: dict[str, Any]) -> dict[str, Any]:
    """A LLaVA-format row ("conversations" with from/value, "<image>" in the text) → messages."""
    messages = []
    for turn in row["conversations"]:
        role = LLAVA_ROLES.get(turn["from"])
        if role is None:
            raise CompressorError(
                f"unknown LLaVA speaker {turn['from']!r}; expected one of {sorted(LLAVA_ROLES)}"
            )
        text = turn["value"]
        content: list[dict[str, Any]] = []
        if IMAGE_PLACEHOLDER in text:
            content.append({"type": "image"})
            text = text.replace(IMAGE_PLACEHOLDER, "").strip()
        content.append({"type": "text", "text": text})
        messages.append({"role": role, "content": content})
    image = row.get("image")
    return {"images": [image] if image else [], "messages": messages}


def normalise(row: dict[str, Any], root: Path | None) -> dict[str, Any]:
    """One row → TRL conversational vision format with PIL images."""
    if "conversations" in row and "messages" not in row:
        row = from_llava(row)
    if "messages" not in row:
        raise CompressorError(
            f"dataset row has keys {sorted(row)}; expected 'messages' (+ 'images'), or LLaVA's 'conversations'"
        )
    images = row.get("images")
    if images is None and row.get("image") is not None:
        images = [row["image"]]
    images = [_open_image(img, root) for img in (images or [])]
    messages = [{"role": m["role"], "content": _content(m["content"])} for m in row["messages"]]
    placeholders = sum(1 for m in messages for part in m["content"] if part.get("type") == "image")
    if images and placeholders == 0:  # images with plain-text messages: put them before the first user text
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"] = [{"type": "image"} for _ in images] + first_user["content"]
    return {"images": images, "messages": messages}


class Rows:
    """A lazily normalised view of a dataset: len(), [i] → normalised row.

    `raw` holds the rows as stored, `root` the folder their image paths are relative to, and `commit` the
    resolved commit of a Hub dataset (None for local data). For a Hub dataset whose rows reference image files
    beside them, `fetch(paths)` fetches those files into `root` on demand: `prefetch(indices)` (and each `[i]`)
    fetches only the images of the rows asked for.
    """

    def __init__(self, rows, root: Path | None, commit: str | None = None, fetch=None) -> None:
        self.raw = rows
        self.root = root
        self.commit = commit
        self._fetch = fetch

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self.prefetch([i])
        return normalise(dict(self.raw[i]), self.root)

    def prefetch(self, indices) -> None:
        """Fetch the image files that these rows reference and that are not local yet (Hub datasets only)."""
        if self._fetch is None or self.root is None:
            return
        wanted = sorted(
            {p for i in indices for p in image_paths(self.raw[int(i)]) if not (self.root / p).is_file()}
        )
        if wanted:
            self._fetch(wanted)

    def sample(self, n: int, seed: int) -> list[int]:
        """A deterministic, seeded subset of row indices (the seed's uniform random subset)."""
        import random

        idx = list(range(len(self)))
        random.Random(seed).shuffle(idx)
        return idx[: min(n, len(idx))]


def image_paths(row: dict[str, Any]) -> list[str]:
    """The relative image paths a raw row references (`images`, `image`, or a datasets Image dict's `path`
    without bytes), as posix paths."""
    from pathlib import PurePosixPath

    value = row.get("images")
    if value is None:
        value = row.get("image")
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if isinstance(v, dict) and not v.get("bytes"):
            v = v.get("path")
        if isinstance(v, str) and v and not PurePosixPath(v).is_absolute():
            out.append(PurePosixPath(v).as_posix())
    return out


_NOT_ROWS = {"dataset_info.json", "dataset_infos.json", "state.json"}


def _blank(file: Path) -> bool:
    """An empty (or whitespace-only) json/jsonl file."""
    size = file.stat().st_size
    return file.suffix != ".parquet" and (size == 0 or (size < 4096 and not file.read_text().strip()))


def _load_folder(path: Path, split: str):
    """Rows from the json/jsonl/parquet files at the folder's top (images beside them are referenced)."""
    import datasets

    for builder, patterns in (("parquet", ("*.parquet",)), ("json", ("*.jsonl", "*.json"))):
        found = sorted(f for pattern in patterns for f in path.glob(pattern) if f.name not in _NOT_ROWS)
        files = [str(f) for f in found if not _blank(f)]  # datasets' json builder fails on an empty file
        if found and not files:
            names = ", ".join(f.name for f in found)
            raise CompressorError(
                f"dataset {str(path)!r} has no rows: {names} {'is' if len(found) == 1 else 'are'} empty; write "
                "one JSON object per line with 'images' + 'messages' (or LLaVA's 'conversations')"
            )
        if files:
            return datasets.load_dataset(builder, data_files={split: files}, split=split)
    raise CompressorError(
        f"no *.jsonl, *.json or *.parquet rows found in {str(path)!r}; write rows with 'images' + 'messages' "
        "there, or save a dataset with Dataset.save_to_disk"
    )


def load_rows(
    source: str,
    split: str = "train",
    image_folder: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    subset: str | None = None,
) -> Rows:
    """Open a dataset from any supported source; rows are read and normalised on access.

    A Hub dataset is read at its resolved commit (kept in `Rows.commit`), fetching only the files of `split`
    (see `_load_hub`): one with rows at its top (json/jsonl/parquet beside the images they reference) is read
    like a local folder; one in the Hub's usual layout (parquet under data/, splits and subsets in its README)
    is read by `datasets`.
    """
    path = Path(source)
    if path.is_file() and path.suffix == ".json":
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            raise CompressorError(f"{source!r}: a LLaVA json file holds a list of rows")
        return Rows(rows, Path(image_folder) if image_folder else path.parent)
    if path.is_dir():
        import datasets

        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            ds = datasets.load_from_disk(str(path))
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = _load_folder(path, split)
        return Rows(ds, Path(image_folder) if image_folder else path)
    if path.suffix or source.startswith((".", "/")):
        raise CompressorError(
            f"dataset {source!r} not found: give an existing folder, a LLaVA .json file or a Hub id"
        )
    return _load_hub(source, split, image_folder, revision, token, subset)


_ROW_SUFFIXES = (".jsonl", ".json", ".parquet")


def _load_hub(
    source: str,
    split: str,
    image_folder: str | None,
    revision: str | None,
    token: str | None,
    subset: str | None,
) -> Rows:
    """A Hub dataset at its resolved commit, fetching only what the split needs.

    Rows at the repo's top (json/jsonl/parquet beside the images they reference, read like a local folder):
    the row files now, each image when its row is read or prefetched. A `save_to_disk` folder: all of it.
    The Hub's usual layout (data files per split and subset, as `datasets` resolves them from the file names
    and the README's `configs`): only the data files of `split`.
    """
    from compressor import hub

    commit, names = hub.dataset_files(source, revision, token)
    top = [n for n in names if "/" not in n and n.endswith(_ROW_SUFFIXES) and n not in _NOT_ROWS]
    if subset is None and "state.json" in names:
        folder = hub.pull_dataset_files(source, commit, names, token)
        rows = load_rows(str(folder), split, image_folder)
        return Rows(rows.raw, rows.root, commit)
    if subset is None and top:
        folder = hub.pull_dataset_files(source, commit, top, token)
        rows = load_rows(str(folder), split, image_folder)
        fetch = None
        if image_folder is None:
            present = set(names)

            def fetch(wanted: list[str]) -> None:
                wanted = [w for w in wanted if w in present]  # a missing one fails as "image … not found"
                if wanted:
                    hub.pull_dataset_files(source, commit, wanted, token)

        return Rows(rows.raw, rows.root, commit, fetch)
    import datasets

    module, files, features = _split_files(source, commit, names, subset, split, token)
    folder = hub.pull_dataset_files(source, commit, files, token)
    ds = datasets.load_dataset(
        module, data_files={split: [str(folder / f) for f in files]}, split=split, features=features
    )
    return Rows(ds, Path(image_folder) if image_folder else folder, commit)


def _split_files(
    source: str, commit: str, names: list[str], subset: str | None, split: str, token: str | None
) -> tuple[str, list[str], Any]:
    """(datasets builder, repo paths of the split's data files, features from the card or None), resolved by
    `datasets` itself over an empty copy of the repo's file tree with its real README (no data fetched)."""
    import tempfile

    import datasets

    from compressor import hub

    with tempfile.TemporaryDirectory() as tmp:
        skeleton = Path(tmp).resolve()
        for name in names:
            if name != ".gitattributes":
                (skeleton / name).parent.mkdir(parents=True, exist_ok=True)
                (skeleton / name).touch()
        if "README.md" in names:
            card = hub.pull_dataset_files(source, commit, ["README.md"], token) / "README.md"
            (skeleton / "README.md").write_text(card.read_text())
        where = f"dataset {source!r}" + (f" (subset {subset!r})" if subset else "")
        try:
            builder = datasets.load_dataset_builder(str(skeleton), subset)
        except (ValueError, FileNotFoundError) as err:  # unknown or missing subset, no data files
            raise CompressorError(f"{where}: {err}".rstrip()) from None
        splits = builder.config.data_files or {}
        if split not in splits:
            raise CompressorError(
                f"{where} has no split {split!r}; it has {', '.join(map(repr, splits)) or 'none'}: set the "
                "split (eval --split, recipe key split) to one of them"
            )
        files = [Path(f).resolve().relative_to(skeleton).as_posix() for f in splits[split]]
        return builder.name, files, builder.info.features
