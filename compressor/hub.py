"""The one module that talks to the Hugging Face Hub: pull a config or a snapshot, check a token, push a folder.

Every Hub failure becomes a `CompressorError` that names the value at fault and the fix. Tokens are passed
through to `huggingface_hub` and never appear in messages or logs. The Hub is `HF_ENDPOINT` (read by
`huggingface_hub` when it is first imported), e.g. a local `python -m compressor serve-hub`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from compressor.errors import CompressorError, worded

log = logging.getLogger(__name__)

# Pickle can run code when it is loaded: these are fetched only with allow_pickle and no safetensors.
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt"]
# Weights for other frameworks, which we never load.
OTHER_WEIGHTS = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite"]
DEFAULT_COMMIT_MESSAGE = "Upload compressed model with compressor"

# The only files a push uploads, at the top of the folder: weights (safetensors), configs, processor and
# tokenizer files, the card, the recipe and the reports. Never the Trainer's training_args.bin (a pickle),
# TensorBoard runs/, checkpoints or anything else a training run leaves behind.
PUSH_ALLOW = (
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "README.md",
    "recipe.yaml",
    "*_report.json",
)


# ... and the card's pictures, one level down (the card links them as plots/NAME.png): PNG only, no weights.
PUSH_ALLOW_PLOTS = ("plots", "*.png")


def publishable(relative: str | Path) -> bool:
    """Whether a file (path relative to the model folder) may be pushed: on `PUSH_ALLOW`, at the top level,
    or a picture directly in `plots/`."""
    name = Path(relative).as_posix()
    folder, _, base = name.rpartition("/")
    if folder == PUSH_ALLOW_PLOTS[0]:
        return fnmatch.fnmatchcase(base, PUSH_ALLOW_PLOTS[1])
    return "/" not in name and any(fnmatch.fnmatchcase(name, p) for p in PUSH_ALLOW)


def remote_code_files(folder: str | Path) -> set[str]:
    """The Python files that config.json's `auto_map` names (a remote-code model's own modeling code), with the
    files they import relatively: a pushed repo must carry them to load with trust_remote_code=True."""
    import re

    folder = Path(folder)
    file = folder / "config.json"
    auto_map = (json.loads(file.read_text()).get("auto_map") or {}) if file.is_file() else {}
    refs = [r for v in auto_map.values() for r in (v if isinstance(v, list) else [v]) if isinstance(r, str)]
    todo = [r.split("--")[-1].rsplit(".", 1)[0] + ".py" for r in refs]
    found: set[str] = set()
    while todo:
        name = todo.pop()
        if name in found or not (folder / name).is_file():
            continue
        found.add(name)
        todo += [m + ".py" for m in re.findall(r"^\s*from \.(\w+) import", (folder / name).read_text(), re.M)]
    return found


def push_plan(folder: str | Path) -> tuple[list[str], list[str]]:
    """(files that a push uploads, files it leaves out), relative to `folder`, sorted."""
    folder = Path(folder)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    code = remote_code_files(folder)
    keep = [f for f in files if publishable(f) or f in code]
    return keep, [f for f in files if f not in keep]


def pull_config(
    src: str | Path, revision: str | None = None, token: str | None = None, trust_remote_code: bool = False
) -> tuple[dict, str | None]:
    """config.json of a local folder or a Hub repo, and the commit it was read at (None for a folder)."""
    folder = _local_folder(src)
    if folder is not None:
        path, commit = folder / "config.json", None
        if not path.is_file():
            raise CompressorError(
                f"{folder} has no config.json: point at a folder saved with save_pretrained"
            )
    else:
        from huggingface_hub import HfApi, hf_hub_download

        with _hub_errors(str(src), revision, token, entry="config.json"):
            commit = HfApi().model_info(str(src), revision=revision, token=token).sha
            path = Path(hf_hub_download(str(src), "config.json", revision=commit, token=token))
    config = json.loads(path.read_text())
    if config.get("auto_map") and not trust_remote_code:
        raise CompressorError(
            f"{src} ships its own modeling code (auto_map in config.json): pass --trust-remote-code only if "
            "you trust it, or pick a model that transformers supports natively"
        )
    return config, commit


def pull(
    src: str | Path, revision: str | None = None, token: str | None = None, allow_pickle: bool = False
) -> tuple[Path, str | None]:
    """A local folder as is, or a snapshot of a Hub repo at `revision`: (folder, resolved commit or None).

    Only safetensors weights are fetched; pickle weights (`.bin`, `.pt` …) only with `allow_pickle` and
    when the repo has no safetensors.
    """
    folder = _local_folder(src)
    if folder is not None:
        return folder, None
    from huggingface_hub import HfApi, snapshot_download

    with _hub_errors(str(src), revision, token):
        info = HfApi().model_info(str(src), revision=revision, token=token)
        ignore = _ignored_weights(
            str(src), info.sha, [s.rfilename for s in info.siblings or []], allow_pickle
        )
        local = snapshot_download(str(src), revision=info.sha, token=token, ignore_patterns=ignore)
    return Path(local), info.sha


def dataset_files(
    repo_id: str, revision: str | None = None, token: str | None = None
) -> tuple[str, list[str]]:
    """(resolved commit, every file path in the repo) of a Hub dataset, fetching no file."""
    from huggingface_hub import HfApi

    with _hub_errors(repo_id, revision, token, kind="dataset"):
        api = HfApi()
        sha = api.dataset_info(repo_id, revision=revision, token=token).sha
        names = api.list_repo_files(repo_id, repo_type="dataset", revision=sha, token=token)
    return sha, sorted(names)


def pull_dataset_files(repo_id: str, commit: str, names: list[str], token: str | None = None) -> Path:
    """Fetch these files (repo paths) of a Hub dataset at `commit`, a few at a time, into the local snapshot
    folder of that commit, and return the folder; files already there are not fetched again."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import hf_hub_download

    if not names:
        raise ValueError("pull_dataset_files needs at least one file")

    def one(name: str) -> Path:
        return Path(hf_hub_download(repo_id, name, repo_type="dataset", revision=commit, token=token))

    with (
        _hub_errors(repo_id, commit, token, kind="dataset"),
        ThreadPoolExecutor(max_workers=min(8, len(names))) as pool,
    ):
        paths = list(pool.map(one, names))
    return paths[0].parents[names[0].count("/")]


def license_of(src: str | Path, revision: str | None = None, token: str | None = None) -> str | None:
    """The `license` of a model's card (README.md front matter), fetching only that file; None if absent."""
    from huggingface_hub import ModelCard, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    folder = _local_folder(src)
    if folder is not None:
        readme = folder / "README.md"
    else:
        with _hub_errors(str(src), revision, token):
            try:
                readme = Path(hf_hub_download(str(src), "README.md", revision=revision, token=token))
            except EntryNotFoundError:  # a repo without a card
                return None
    if not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.to_dict().get("license")
    except ValueError:  # a malformed card only loses the license line
        return None


def validate_card(content: str) -> None:
    """Check a model card's metadata with the Hub's validate-yaml endpoint.

    A card whose YAML does not parse fails here; when the Hub cannot be reached, the remote check is
    skipped with a warning (the push itself will need the Hub anyway).
    """
    import yaml
    from huggingface_hub import ModelCard

    try:
        card = ModelCard(content)  # parses the front matter locally
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CompressorError(
            f"the model card's metadata (the YAML between the '---' lines) does not parse{where}: {problem}; "
            "nothing was written or pushed. compressor writes its cards' metadata through huggingface_hub's "
            "ModelCardData, so a card of ours that fails here is a bug: please report it with the run's recipe.yaml"
        ) from None
    try:
        card.validate()
    except Exception as exc:
        if not _unreachable(exc):
            raise CompressorError(f"the model card's metadata is invalid: {exc}") from None
        log.warning("the Hub is unreachable: the model card's metadata was only checked locally")


def check_token(token: str | None = None, write: bool = False) -> str:
    """The user name behind `token` (else HF_TOKEN or the saved login); with `write`, refuse a read-only token."""
    from huggingface_hub import HfApi, constants

    with _hub_errors(None, None, token):
        info = HfApi().whoami(token=token)
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if write and role == "read":
        raise worded(
            f"the Hub token of '{info['name']}' is read-only and pushing needs write access: create a write "
            f"token at {constants.ENDPOINT}/settings/tokens and {{ask}}",
            ask="pass_it",
        )
    return info["name"]


def push(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    overwrite: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Upload the publishable files of `folder` (`PUSH_ALLOW`) to `repo_id` in ONE commit; returns the repo URL.

    Anything else in the folder (training_args.bin, runs/, checkpoints) is left out, with a warning naming it.
    A repo with files (other than .gitattributes) is replaced only with `overwrite` (stale files are deleted
    in the same commit). If the commit fails, nothing lands, and a repo created by this call is deleted.
    """
    folder = Path(folder)
    if not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*")):
        raise CompressorError(f"nothing to push: {folder} is not a folder with files; run the pipeline first")
    upload, left_out = push_plan(folder)
    if not any(f.endswith(".safetensors") for f in upload):
        raise CompressorError(
            f"nothing to push: {folder} has no safetensors weights at its top level; run the pipeline first"
        )
    if left_out:
        tops = sorted({f.split("/")[0] + ("/" if "/" in f else "") for f in left_out})
        shown = ", ".join(tops[:12]) + (f" and {len(tops) - 12} more" if len(tops) > 12 else "")
        log.warning(
            "not pushed (only weights, configs, processor files, the card, its pictures and reports are): %s",
            shown,
        )
    return _commit(folder, upload, repo_id, token, private, overwrite, commit_message)


# What a GGUF repo holds (compressor.export): the GGUF files, their card and the export's report.
GGUF_PUSH_ALLOW = ("*.gguf", "README.md", "export_report.json")


def push_gguf(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    overwrite: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Upload an export folder's GGUF files, card and report (`GGUF_PUSH_ALLOW`, top level) to `repo_id` in ONE
    commit, with `push`'s rules (a repo with files is replaced only with `overwrite`; a failed commit leaves
    nothing); returns the repo URL."""
    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    upload = [f for f in files if any(fnmatch.fnmatchcase(f, p) for p in GGUF_PUSH_ALLOW)]
    if not any(f.endswith(".gguf") for f in upload):
        raise CompressorError(f"nothing to push: {folder} has no .gguf files; run the export first")
    if "README.md" not in upload:
        raise CompressorError(f"{folder} has no README.md (the GGUF card); render it before the push")
    return _commit(folder, upload, repo_id, token, private, overwrite, commit_message)


def _commit(
    folder: Path,
    upload: list[str],
    repo_id: str,
    token: str | None,
    private: bool,
    overwrite: bool,
    commit_message: str,
) -> str:
    """`upload` (paths relative to `folder`) to `repo_id` in one commit; a repo this call created is deleted
    when the commit fails."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with _hub_errors(repo_id, None, token, writing=True):
        existed = _retrying(f"checking {repo_id}", lambda: api.repo_exists(repo_id))
        if existed:
            _refuse_overwrite(api, repo_id, overwrite)
        url = _retrying(
            f"creating {repo_id}", lambda: api.create_repo(repo_id, private=private, exist_ok=True)
        )
        try:
            _retrying(
                f"the commit to {repo_id}",
                lambda: api.upload_folder(
                    repo_id=repo_id,
                    folder_path=folder,
                    allow_patterns=[_literal(f) for f in upload],
                    commit_message=commit_message,
                    delete_patterns="*" if existed else None,
                ),
            )
        except BaseException:
            if not existed:
                _delete_quietly(api, repo_id)
            raise
    return str(url)


# Seconds to wait before each retry of one push step after a 5xx, a 429 or a dropped connection; after the
# last one the push fails (and a repo it created is deleted). huggingface_hub retries LFS transfers itself.
RETRY_WAITS = (1.0, 2.0, 4.0)
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)


def _waits() -> tuple[float, ...]:
    """RETRY_WAITS, or COMPRESSOR_RETRY_WAITS (comma-separated seconds, e.g. '0.1,0.2'; empty: no retry)."""
    import os

    text = os.environ.get("COMPRESSOR_RETRY_WAITS")
    if text is None:
        return RETRY_WAITS
    try:
        return tuple(float(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise CompressorError(
            f"COMPRESSOR_RETRY_WAITS={text!r} must be comma-separated seconds, e.g. 1,2,4"
        ) from None


def _transient(exc: BaseException) -> bool:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status in TRANSIENT_STATUS or _unreachable(exc)


def _retrying(what: str, call):
    """`call()`, retried after the waits of RETRY_WAITS when it fails for a transient reason."""
    import time

    waits = _waits()
    for attempt, wait in enumerate((*waits, None), start=1):
        try:
            return call()
        except Exception as exc:
            if wait is None or not _transient(exc):
                raise
            status = getattr(getattr(exc, "response", None), "status_code", None)
            reason = f"the Hub answered {status}" if status else "the connection failed"
            log.warning("%s failed (%s); retry %d of %d in %.1f s", what, reason, attempt, len(waits), wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _literal(name: str) -> str:
    """An fnmatch pattern that matches exactly `name` (glob characters escaped)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _local_folder(src: str | Path) -> Path | None:
    path = Path(src).expanduser()
    if path.is_dir():
        return path
    text = str(src)
    if isinstance(src, Path) or text.startswith(("/", "./", "../", "~")) or text.count("/") > 1:
        raise CompressorError(
            f"{src} is not a folder: give an existing model folder or a Hub repo id (owner/name)"
        )
    return None


def _ignored_weights(repo_id: str, commit: str, names: list[str], allow_pickle: bool) -> list[str]:
    has_safetensors = any(name.endswith(".safetensors") for name in names)
    pickles = [name for name in names if any(fnmatch.fnmatch(name, p) for p in PICKLE_PATTERNS)]
    if pickles and not has_safetensors and not allow_pickle:
        raise CompressorError(
            f"{repo_id} (commit {commit[:10]}) has only pickle weights ({', '.join(pickles[:3])}), which can run "
            "code when loaded: pass --allow-pickle if you trust this repo, or use one with .safetensors weights"
        )
    return OTHER_WEIGHTS + ([] if allow_pickle and not has_safetensors else PICKLE_PATTERNS)


def _refuse_overwrite(api, repo_id: str, overwrite: bool) -> None:
    files = [name for name in api.list_repo_files(repo_id) if name != ".gitattributes"]
    if files and not overwrite:
        shown = ", ".join(files[:5]) + (" …" if len(files) > 5 else "")
        raise CompressorError(
            f"{repo_id} already has files ({shown}): pass --overwrite to replace them, or push to a new repo id"
        )


def _delete_quietly(api, repo_id: str) -> None:
    """Remove a repo this push created, so a failed push leaves nothing behind."""
    try:
        _retrying(f"deleting {repo_id}", lambda: api.delete_repo(repo_id, missing_ok=True))
    except Exception:
        log.warning("the push failed and the empty repo %s could not be deleted: delete it by hand", repo_id)


@contextlib.contextmanager
def _hub_errors(
    repo_id: str | None,
    revision: str | None,
    token: str | None,
    entry: str | None = None,
    writing: bool = False,
    kind: str = "model",
) -> Iterator[None]:
    """Turn huggingface_hub and network failures into CompressorErrors that say what to do."""
    try:
        yield
    except CompressorError:
        raise
    except Exception as exc:
        message = _explain(exc, repo_id, revision, token, entry, writing, kind)
        if message is None:
            raise
        raise (message if isinstance(message, CompressorError) else CompressorError(message)) from exc


def _explain(
    exc: Exception,
    repo_id: str | None,
    revision: str | None,
    token: str | None,
    entry: str | None,
    writing: bool,
    kind: str = "model",
) -> str | CompressorError | None:
    """What went wrong and how to fix it, naming the repo, revision or endpoint (never the token); an error where
    the fix is said otherwise on the page (the token)."""
    from huggingface_hub import constants, errors, get_token

    endpoint = constants.ENDPOINT
    where = f"{repo_id} on {endpoint}" if repo_id else endpoint
    has_token = bool(token or get_token())
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE is set, so {where} cannot be reached: unset it to use the Hub"
    if _unreachable(exc):
        tried = f" (the push tried {len(_waits()) + 1} times and committed nothing)" if writing else ""
        return (
            f"cannot reach the Hub at {endpoint}{tried}: check your network, or set HF_ENDPOINT to a Hub that is up "
            "(e.g. one started with `python -m compressor serve-hub`)"
        )
    if isinstance(exc, errors.GatedRepoError):
        return worded(
            f"{where} is gated: accept its conditions at {endpoint}/{repo_id} and pass a token of an account "
            "that has access {ask}",
            ask="token_aside",
        )
    if isinstance(exc, errors.RepositoryNotFoundError) and repo_id and not writing:
        other = _other_kind(repo_id, token, kind)
        if other is not None:
            said = f"{repo_id} on {endpoint} is a {other} repo, not a {kind}: give a {kind} repo id here"
            return worded(said + " ({hint})", hint="datasets") if other == "dataset" else said
    if isinstance(exc, errors.RepositoryNotFoundError):
        if has_token:
            return f"repo {where} was not found or is not visible to you: check the repo id"
        return worded(
            f"repo {where} was not found or is not visible to you: if it is private, pass a token {{ask}}",
            ask="token_aside",
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return (
            f"revision '{revision}' does not exist in {where}: use a branch, tag or commit sha of that repo"
        )
    if isinstance(exc, errors.RemoteEntryNotFoundError) and entry:
        return f"{where} has no {entry} at revision '{revision or 'main'}'"
    if isinstance(exc, errors.LocalTokenNotFoundError) or (status == 401 and not has_token):
        return worded("this needs a Hub token: {ask}", ask="token")
    if status == 401:
        return worded(
            f"the Hub at {endpoint} rejected the token (401): it is invalid or expired; create one at "
            f"{endpoint}/settings/tokens and {{ask}}",
            ask="pass_it",
        )
    if status == 403:
        return (
            f"your token may not {'write to' if writing else 'access'} {where} (403): use a write token of its "
            "owner, or push to your own namespace"
        )
    if isinstance(exc, errors.HFValidationError):
        return f"'{repo_id}' is neither a local folder nor a valid Hub repo id (owner/name)"
    if isinstance(exc, ValueError) and "Invalid metadata in README.md" in str(exc):
        detail = str(exc).split("\n", 1)[-1]
        return f"the model card README.md has invalid metadata; fix its YAML front matter:\n{detail}"
    if isinstance(exc, OSError) and getattr(exc, "filename", None) and not status:
        return f"cannot read {exc.filename} ({exc.strerror}): fix it and try again"
    detail = (
        f"the Hub answered {status}: {getattr(exc, 'server_message', None) or 'try again later'}"
        if status
        else str(exc)
    )
    if writing:
        tries = f" (tried {len(_waits()) + 1} times)" if status in TRANSIENT_STATUS else ""
        return f"the push to {where} failed{tries} and nothing was committed: {detail}; push again later"
    return f"reading {where} failed: {detail}" if status else None


def _other_kind(repo_id: str, token: str | None, kind: str) -> str | None:
    """'dataset' when `repo_id` is not a `kind` repo but a dataset (or 'model' the other way round)."""
    from huggingface_hub import HfApi

    other = "model" if kind == "dataset" else "dataset"
    try:
        return other if HfApi().repo_exists(repo_id, repo_type=other, token=token) else None
    except Exception:
        return None


def _unreachable(exc: BaseException) -> bool:
    """Whether a connection failure (refused, DNS, timeout) is anywhere in the exception chain."""
    import httpx2

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (httpx2.TransportError, ConnectionError)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
