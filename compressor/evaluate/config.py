"""The `evaluate:` section of a recipe: which tasks, on which data, and whether to time both models.

Pydantic models, frozen, unknown keys rejected; the field descriptions are the docs (CLI help, app labels,
JSON schema). Imported by the CLI at start-up: no heavy imports here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compressor.errors import words

# The LLaVA-1.5 benchmark suite, as lmms-eval names its tasks.
LLAVA_SUITE = ("gqa", "scienceqa_img", "textvqa_val", "pope", "mme", "mmbench_en")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvalTask(_Strict):
    name: str = Field(
        description="Task: vqa (VQA accuracy), yes_no (POPE-style accuracy/precision/recall/F1), "
        "multiple_choice (option-letter accuracy), perplexity (on held-out conversations) or "
        "teacher_agreement (top-1 next-token agreement with the original).",
        json_schema_extra=words(flag="eval --task NAME=…"),
    )
    dataset: str = Field(
        description="Rows to evaluate on: a Hub dataset id, a local folder of json/jsonl/parquet rows (image "
        "paths relative to it), a save_to_disk folder or a LLaVA json file. Row formats: see "
        "compressor.evaluate.tasks.",
        json_schema_extra=words(flag="eval --task …=DATASET"),
    )
    split: str = Field("test", description="Dataset split.", json_schema_extra=words(flag="eval --split"))
    subset: str | None = Field(
        None, description="Dataset configuration (subset) name, for Hub datasets with several."
    )
    revision: str | None = Field(None, description="Branch, tag or commit of a Hub dataset (default: main).")
    image_folder: str | None = Field(
        None, description="Image root, when image paths are not relative to the rows."
    )
    limit: int = Field(
        100,
        ge=1,
        description="Most samples evaluated, the same ones for both models.",
        json_schema_extra=words(flag="eval --limit"),
    )
    sample: Literal["random", "first"] = Field(
        "random",
        description="Which `limit` rows are scored: random (default), a uniform random draw with `seed`, so a "
        "dataset stored in order (POPE is grouped by category) gives an unbiased sample; first, the first "
        "`limit` rows in stored order. The report records the row ids scored either way.",
        json_schema_extra=words(flag="eval --sample"),
    )
    seed: int = Field(
        0,
        description="Seed of the random draw (sample: random); ignored for sample: first.",
        json_schema_extra=words(flag="eval --seed"),
    )
    max_new_tokens: int = Field(
        16,
        ge=1,
        description="Longest generated answer (greedy decoding).",
        json_schema_extra=words(flag="eval --max-new-tokens"),
    )
    prompt: str | None = Field(
        None,
        description="Instruction after the question; default: the LLaVA-1.5 evaluation prompt of the task "
        "('Answer the question using a single word or phrase.', or for multiple_choice 'Answer with the "
        "option's letter from the given choices directly.').",
    )

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, seed: object) -> object:
        if seed is None:
            raise ValueError("seed: null no longer means the first rows; write sample: first for those")
        return seed

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from compressor.evaluate.tasks import TASKS

        TASKS.get(name)  # a CompressorError (a ValueError) with the known names and the closest one
        return name


class LmmsEval(_Strict):
    tasks: tuple[str, ...] = Field(
        LLAVA_SUITE,
        min_length=1,
        description="lmms-eval task names; default the LLaVA-1.5 suite: " + ", ".join(LLAVA_SUITE) + ".",
    )
    model: str | None = Field(
        None,
        description="lmms-eval model name; default from the model family (llava_hf for LLaVA, qwen2_vl, "
        "qwen2_5_vl, qwen3_vl for Qwen, else the generic huggingface chat model).",
    )
    model_args: str | None = Field(
        None,
        description="Extra lmms-eval --model_args after pretrained=…, e.g. 'dtype=bfloat16,device_map=auto'.",
    )
    batch_size: int = Field(1, ge=1, description="lmms-eval --batch_size.")
    limit: int | None = Field(
        None, ge=1, description="lmms-eval --limit: samples per task (for a quick look; scores need all)."
    )
    python: str | None = Field(
        None,
        description="Python interpreter of the environment where lmms-eval is installed; default this one.",
    )
    output_dir: str | None = Field(
        None,
        description="Where lmms-eval writes its results and logs (each model's run in a fresh folder under it); "
        "default a temporary folder.",
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        description="Most tokens generated per answer (lmms-eval --gen_kwargs max_new_tokens=N, every task); "
        "default each task's own (128 for pope).",
    )
    datasets: dict[str, str] = Field(
        default_factory=dict,
        description="Per task, its dataset from elsewhere: a local parquet file (or a folder of them) or a Hub "
        "dataset id[@revision]; the bridge writes a task yaml including lmms-eval's own with only the dataset "
        "replaced (for a firewall or a Job), e.g. {pope: data/pope.parquet}.",
    )


class Evaluate(_Strict):
    tasks: tuple[EvalTask, ...] = Field(
        (),
        description="Our tasks, each run on both models with the same samples.",
        json_schema_extra=words(label="Evaluation tasks"),
    )
    speed: bool = Field(
        True,
        description="Measure both models in the same run: parameters, disk size, prefill latency, decode "
        "tokens/s and peak memory.",
        json_schema_extra=words(label="Measure speed"),
    )
    speed_prompt_tokens: int = Field(
        32, ge=1, description="Prompt length of the speed test, in tokens (text only)."
    )
    speed_new_tokens: int = Field(
        64, ge=2, description="Tokens generated per speed measurement (greedy, end-of-sequence ignored)."
    )
    speed_repeats: int = Field(
        5, ge=1, description="Timed rounds, interleaving the two models, after one warm-up each."
    )
    speed_memory: bool = Field(
        True, description="Measure peak memory, loading each model once more in a process of its own."
    )
    lmms_eval: LmmsEval | None = Field(
        None,
        description="Also run lmms-eval's benchmarks on both models (the pinned lmms-eval: `make lmms` installs it "
        "without torchvision; see compressor.evaluate.lmms).",
    )
