"""A recipe: the YAML file that is the product. Pydantic models, frozen, unknown keys rejected.

Field docs live here once, on the field, and feed the CLI help, the app's labels and the JSON schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compressor.errors import CompressorError, field_words, invalid, words
from compressor.evaluate.config import Evaluate
from compressor.recover.config import Recover

DEPTH_SCORERS = ("block_influence", "angular", "last")
WIDTH_SCORERS = ("taylor", "activation", "magnitude")
DEFAULT_SCORER = {"depth": "block_influence", "width": "taylor"}
DEFAULT_NUM_SAMPLES = {"depth": 50, "width": 10}
LAYERS_REMOVED = (
    "prune.layers is not supported: the seed prunes only layers 3-20, which leaves the pruned layers narrower than "
    "the untouched ones, and in transformers 5.24 none of our backbones reads a width per layer (only Gemma 4's "
    "modeling code reads per_layer_config), so such a checkpoint could not reload in plain transformers, vLLM or "
    "TGI; remove `layers`: width pruning cuts every layer by the same ratio, depth pruning drops whole layers"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Strict):
    source: str = Field(
        description="Hub repo id (org/name) or local folder of the MLLM to compress.",
        json_schema_extra=words(flag="SRC", label="Model"),
    )
    revision: str | None = Field(
        None,
        description="Branch, tag or commit of the Hub repo (default: main).",
        json_schema_extra=words(flag="--revision", label="Revision"),
    )
    trust_remote_code: bool = Field(
        False,
        description="Run the repo's own modeling code (needed by Bunny). Read it first.",
        json_schema_extra=words(flag="--trust-remote-code"),
    )
    allow_pickle: bool = Field(
        False,
        description="Also load pickle weights (*.bin); safetensors only otherwise.",
        json_schema_extra=words(flag="--allow-pickle"),
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Load dtype; auto = bfloat16 on a GPU, float32 on the CPU.",
        json_schema_extra=words(flag="--dtype"),
    )
    device_map: str | None = Field(
        None,
        description="accelerate device map, e.g. auto when the model does not fit one device.",
        json_schema_extra=words(flag="--device-map"),
    )


class Calibration(_Strict):
    dataset: str | None = Field(
        None,
        description="Calibration rows with images + messages: a Hub dataset id, a local folder, "
        "or a LLaVA json file (llava_v1_5_mix665k.json) with --image-folder.",
        json_schema_extra=words(flag="--calibration", label="Calibration data", metavar="DATA"),
    )
    image_folder: str | None = Field(
        None, description="Image root for a LLaVA json file.", json_schema_extra=words(flag="--image-folder")
    )
    split: str = Field(
        "train",
        description="Dataset split to draw calibration samples from.",
        json_schema_extra=words(flag="--split"),
    )
    num_samples: int | None = Field(
        None,
        ge=1,
        description="Calibration samples; default 50 for depth scoring and 10 for Taylor, as in the seed.",
        json_schema_extra=words(flag="--num-samples", label="Calibration samples"),
    )
    max_length: int = Field(
        1024,
        ge=8,
        description="Longest tokenised sample (text + image tokens) kept.",
        json_schema_extra=words(flag="--max-length"),
    )
    seed: int = Field(
        42, description="Seed of the calibration sample draw.", json_schema_extra=words(flag="--seed")
    )
    modality: Literal["image", "text", "mixed"] = Field(
        "image",
        description="What importance is measured on. image (default): image + text rows, and rows without images "
        "are refused (the seed measures an MLLM on image + text); text: text only, any images in the rows are "
        "dropped (the seed's InternVL scripts calibrate on C4); mixed: the rows as they come, image + text and "
        "text-only together.",
        json_schema_extra=words(flag="--calibration-modality"),
    )


class Prune(_Strict):
    method: Literal["depth", "width"] = Field(
        description="depth: drop whole decoder layers; width: remove attention heads (whole KV groups) "
        "and MLP channels, the same ratio in every layer.",
        json_schema_extra=words(flag="--method", label="Pruning method"),
    )
    ratio: float = Field(
        gt=0.0,
        lt=1.0,
        description="Share of language-backbone parameters to remove (the seed's compression ratio).",
        json_schema_extra=words(flag="--ratio", label="Share of parameters to remove"),
    )
    scorer: str | None = Field(
        None,
        description="Importance scorer. depth: block_influence (default), angular, last; "
        "width: taylor (default), activation, magnitude.",
        json_schema_extra=words(flag="--scorer", label="Importance scorer"),
    )
    targets: tuple[Literal["heads", "mlp"], ...] | None = Field(
        None,
        description="Width only: what to prune; default both where the family allows heads.",
        json_schema_extra=words(flag="--targets", label="What to prune"),
    )
    round_to: int = Field(
        64,
        ge=1,
        description="MLP widths are snapped to a multiple of this (GPU-friendly).",
        json_schema_extra=words(flag="--round-to", label="Round MLP widths to a multiple of"),
    )
    target: Literal["default", "gpu", "gguf", "vllm", "vllm-tp2", "vllm-tp4"] = Field(
        "default",
        description="Width only: the serving stack the widths are made for. gpu: MLP multiples of 128; gguf: "
        "multiples of 256 (llama.cpp k-quants); vllm: 128 (Marlin kernels); vllm-tp2 / vllm-tp4: 128 per "
        "tensor-parallel shard, head counts divisible by 2 / 4. Combined with round_to; default: round_to only.",
        json_schema_extra=words(flag="--target"),
    )
    contiguous: bool = Field(
        False,
        description="angular only: drop the best contiguous block of layers.",
        json_schema_extra=words(flag="--contiguous"),
    )
    calibration: Calibration = Field(default_factory=Calibration)

    @model_validator(mode="before")
    @classmethod
    def _no_layer_range(cls, data: Any) -> Any:
        if isinstance(data, dict) and "layers" in data:
            raise ValueError(LAYERS_REMOVED)
        return data

    @model_validator(mode="after")
    def _scorer_fits_method(self) -> Prune:
        from compressor.registry import closest

        allowed = DEPTH_SCORERS if self.method == "depth" else WIDTH_SCORERS
        if self.scorer is not None and self.scorer not in allowed:
            raise ValueError(
                f"unknown {self.method} scorer {self.scorer!r}{closest(self.scorer, allowed)}; "
                f"known: {', '.join(allowed)}"
            )
        if self.method == "depth" and self.targets:
            raise ValueError("targets apply to method: width only; remove them for depth")
        if self.method == "depth" and self.target != "default":
            raise ValueError(
                f"target {self.target!r} sets widths, so it applies to method: width only; depth pruning keeps "
                "every width as it is: remove target"
            )
        if self.contiguous and self.scorer != "angular":
            raise ValueError("contiguous: true needs scorer: angular")
        return self

    @field_validator("targets")
    @classmethod
    def _targets_unique(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("targets must name heads and/or mlp, each once")
        return v

    @property
    def scorer_name(self) -> str:
        return self.scorer or DEFAULT_SCORER[self.method]

    @property
    def num_samples(self) -> int:
        return self.calibration.num_samples or DEFAULT_NUM_SAMPLES[self.method]


def _repo_id(v: str, example: str) -> str:
    """A Hub repo id as owner/name (for publish.repo_id and export.gguf.repo_id)."""
    import re

    if not re.fullmatch(r"[\w.-]+/[\w.-]+", v):
        raise ValueError(f"repo_id {v!r} must be owner/name, e.g. {example}")
    return v


class Publish(_Strict):
    repo_id: str = Field(
        description="Hub repo to push the compressed model to (owner/name).",
        json_schema_extra=words(flag="push --repo-id", label="Output repo on the Hub"),
    )
    private: bool = Field(
        False,
        description="Create the repo private.",
        json_schema_extra=words(flag="push --private", label="Private repo"),
    )
    overwrite: bool = Field(
        False,
        description="Replace the files of a non-empty repo (one commit).",
        json_schema_extra=words(flag="push --overwrite"),
    )
    require: dict[str, float] = Field(
        default_factory=dict,
        description="Quality gate: shares of the original's scores the model must keep to be pushed, e.g. "
        "{average_retained: 0.95} or {vqa: 0.9, perplexity.perplexity: 0.5} (a task, or TASK.METRIC). Below it "
        "the push is refused, the run folder is kept and the command exits non-zero; the card says the gate.",
    )

    @field_validator("require")
    @classmethod
    def _shares(cls, v: dict[str, float]) -> dict[str, float]:
        from compressor.gate import check_key

        for key, share in v.items():
            check_key(key)
            if not 0.0 < share <= 2.0:
                raise ValueError(
                    f"require {key}: {share} is not a share of the original's score; give e.g. 0.95 for 95 %"
                )
        return v

    @field_validator("repo_id")
    @classmethod
    def _owner_name(cls, v: str) -> str:
        return _repo_id(v, "alice/llava-1.5-7b-depth30")


class GGUFExport(_Strict):
    quants: tuple[str, ...] = Field(
        ("f16", "q8_0"),
        description="GGUF types to write, one text file each (f32, f16, bf16, q8_0 from llama.cpp's converter; "
        "q4_k_m, q5_k_m, q6_k need llama-quantize). Every file is checked against transformers in llama.cpp.",
        json_schema_extra=words(label="GGUF types"),
    )
    repo_id: str | None = Field(
        None,
        description="Hub repo the GGUF files are pushed to, with their own card, right after the model (owner/name; "
        "default: publish.repo_id + '-GGUF').",
    )

    @field_validator("repo_id")
    @classmethod
    def _gguf_owner_name(cls, v: str | None) -> str | None:
        return v if v is None else _repo_id(v, "alice/llava-1.5-7b-depth30-GGUF")

    def repo_for(self, model_repo: str | None) -> str | None:
        """Where the GGUF files go when the model goes to `model_repo` (None: nowhere)."""
        return self.repo_id or (f"{model_repo}-GGUF" if model_repo else None)

    @field_validator("quants")
    @classmethod
    def _known_quants(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from compressor.export.stage import QUANTS
        from compressor.registry import closest

        v = tuple(dict.fromkeys(q.strip().lower() for q in v))
        if not v:
            raise ValueError(f"give at least one quant; known: {', '.join(QUANTS)}")
        for q in v:
            if q not in QUANTS:
                raise ValueError(f"unknown quant {q!r}{closest(q, QUANTS)}; known: {', '.join(QUANTS)}")
        return v


class Export(_Strict):
    gguf: GGUFExport | None = Field(
        None,
        description="llama.cpp files (text GGUF per quant + mmproj where llama.cpp has the projector), written "
        "into RUN/gguf after eval and before push.",
        json_schema_extra=words(label="Export to GGUF"),
    )


class Recipe(_Strict):
    model: ModelSource
    prune: Prune
    recover: Recover | None = Field(
        None,
        description="Recovery training; omit to publish the pruned model as is.",
        json_schema_extra=words(label="Recover after pruning"),
    )
    evaluate: Evaluate | None = Field(
        None,
        description="Evaluation of original against compressed.",
        json_schema_extra=words(label="Evaluate against the original"),
    )
    export: Export | None = Field(None, description="Exports of the compressed model (GGUF for llama.cpp).")
    publish: Publish | None = Field(None, description="Where to push; omit to stop after the model card.")

    @model_validator(mode="after")
    def _gate_has_scores(self) -> Recipe:
        require = self.publish.require if self.publish is not None else {}
        if not require:
            return self
        if self.evaluate is None:
            raise ValueError(
                "publish.require gates the push on evaluation scores, but the recipe has no evaluate section; add "
                "evaluate.tasks or remove publish.require"
            )
        from compressor.gate import AVERAGE

        names = {t.name for t in self.evaluate.tasks}
        if self.evaluate.lmms_eval is not None:
            names |= set(self.evaluate.lmms_eval.tasks)
        for key in require:
            task = key.partition(".")[0]
            if key != AVERAGE and task not in names:
                known = ", ".join(sorted(names)) or "none"
                raise ValueError(
                    f"publish.require names task {task!r}, which evaluate does not run (its tasks: {known}); use "
                    "one of them or average_retained"
                )
        return self


# Recipe key (list indices dropped) → its field's words (CLI flag, app label), read off the fields themselves;
# FLAGS: the keys a CLI flag sets.
FIELD_WORDS = field_words(Recipe)
FLAGS = {key: w["flag"] for key, w in FIELD_WORDS.items() if "flag" in w}


def parse_recipe(data: Any, where: str = "", page_title: str | None = None) -> Recipe:
    """A recipe mapping → Recipe, or a CompressorError naming each bad field (`page_title`: the page's title for
    it, e.g. the form's)."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise invalid(
            err, f"invalid recipe {where or '(in memory)'}", Recipe, page_title=page_title
        ) from None


def recipe_data(text: str, where: str) -> dict[str, Any]:
    """A recipe's YAML text → its mapping, unvalidated; `where` names it in messages (a file, "(pasted)")."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise CompressorError(
            f"recipe {where} is not valid YAML{at}: {problem}; fix that line (indent with spaces, "
            "quote values that contain ': ')"
        ) from None
    if data is None:
        raise CompressorError(
            f"recipe {where} is empty; write model: and prune: sections (see recipes/ for examples)"
        )
    if not isinstance(data, dict):
        raise CompressorError(
            f"recipe {where} holds a {type(data).__name__}, not a mapping; write model: and prune: "
            "sections at the top level"
        )
    return data


def recipe_from_text(text: str | None, where: str) -> Recipe:
    """A recipe's YAML text → Recipe: the one parser of recipe text (a recipe file, the CLI's `base64:` recipe,
    the app's pasted YAML and API, a run's child), with a CompressorError that says what to fix."""
    return parse_recipe(recipe_data(text or "", where), where)


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """A recipe file's YAML mapping, unvalidated (commands that read one section of it start here)."""
    path = Path(path)
    if not path.is_file():
        raise CompressorError(f"recipe file {str(path)!r} does not exist; check the path")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise CompressorError(f"recipe {str(path)!r} is not a text file; give a YAML recipe") from None
    return recipe_data(text, repr(str(path)))


def load_recipe(path: str | Path) -> Recipe:
    return parse_recipe(read_recipe_file(path), repr(str(path)))


def dump_recipe(recipe: Recipe) -> str:
    import yaml

    return yaml.safe_dump(recipe.model_dump(mode="json", exclude_unset=True), sort_keys=False)


def json_schema() -> dict[str, Any]:
    return Recipe.model_json_schema()
