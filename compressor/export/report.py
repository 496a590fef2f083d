"""ExportReport: the GGUF files written, what they hold, and how llama.cpp's answers compare with transformers'.

Plain pydantic, JSON-serialisable with `model_dump(mode="json")`; a run folder keeps it as `reports/export.json`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Fallback(BaseModel):
    tensor: str
    wanted: str = Field(description="The type the quant asks for.")
    got: str = Field(description="The type the tensor is stored in.")
    why: str


class GGUFFile(BaseModel):
    file: str = Field(description="File name inside the export folder.")
    kind: str = Field(description="text (the language model) or mmproj (vision tower + projector).")
    quant: str
    bytes: int
    bits_per_weight: float = Field(description="Tensor bytes x 8 / parameters, as llama.cpp prints it.")
    tensor_types: dict[str, int] = Field(description="Number of tensors per stored type.")
    fallbacks: list[Fallback] = Field(
        default_factory=list,
        description="Weight matrices stored in another type than the quant asks for, and why.",
    )
    seconds: float = Field(description="Time to write the file (conversion or quantisation).")


class Check(BaseModel):
    """llama.cpp (xllamacpp) against transformers (fp32) on a fixed text, teacher-forced: at every position both
    see the same prefix and predict the next token. kind "image": the same measure on the answer to a fixed image
    question asked with the mmproj, teacher-forced on llama.cpp's greedy answer."""

    file: str
    kind: str = Field(
        "text", description="text (the probe text) or image (an image question with the mmproj)."
    )
    mmproj: str | None = Field(None, description="The projector file used (image checks).")
    positions: int = Field(description="Next-token predictions compared.")
    top1_agreement: float = Field(
        description="Share of positions where both predict the same token, or where transformers ranks llama.cpp's "
        "token within 0.02 nats of its own top token (a near-tie; counted in near_ties)."
    )
    near_ties: int = Field(
        0, description="Positions counted as agreeing though the top tokens differ (near-ties)."
    )
    min_agreement: float = Field(description="The least agreement this quant must reach to pass.")
    max_logprob_diff: float = Field(
        description="Largest |log-probability of llama.cpp's top token in llama.cpp - in transformers| (nats)."
    )
    max_gap: float | None = Field(
        None, description="The largest max_logprob_diff this quant may show to pass."
    )
    tokenizer_agrees: bool | None = Field(
        None,
        description="Text checks: whether llama.cpp's tokenizer (the GGUF's) splits the probe text into the same ids "
        "as the model's tokenizer; a file whose tokenizer differs fails.",
    )
    spacing_agrees: bool | None = Field(
        None,
        description="Text checks: whether llama.cpp splits a text with runs of spaces, tabs and newlines before "
        "digits and words (code, tables; verify.SPACING) into the model's ids. Not a failure, since no file can change "
        "it (it is llama.cpp's pre-tokenizer for this vocabulary); where it differs, llama.cpp gives the model other "
        "token ids than it was trained on for such text, and spacing_note says so.",
    )
    spacing_note: str | None = Field(
        None, description="Where spacing_agrees is false: how the two split the text, and what it costs."
    )
    unmodified_agreement: float | None = Field(
        None,
        description="Where llama.cpp's graph is known to differ from the model's (LLaVA: the CLS token's features "
        "in place of the first patch's), top1_agreement is measured against transformers fed what llama.cpp "
        "computes, and this is the agreement with the unmodified model.",
    )
    unmodified_max_logprob_diff: float | None = Field(
        None, description="max_logprob_diff against the unmodified model (see unmodified_agreement)."
    )
    passed: bool
    note: str | None = Field(
        None, description="Why the answers could not be compared, or how llama.cpp's graph differs."
    )
    picture: str | None = Field(None, description="The picture asked about (image checks).")
    answer: str = Field(description="llama.cpp's greedy continuation of the probe's first tokens.")
    expected: str = Field(description="transformers' greedy continuation of the same prefix.")
    seconds: float


class ExportReport(BaseModel):
    source: str = Field(description="The model folder exported (as given).")
    name: str = Field(description="The files' base name.")
    family: str
    quants: list[str]
    files: list[GGUFFile]
    mmproj: str | None = Field(None, description="The projector file, when one is written.")
    mmproj_note: str | None = Field(None, description="Why no projector file is written.")
    fixes: list[str] = Field(
        default_factory=list, description="What the export changed on its staging copy for the converter."
    )
    checks: list[Check]
    converter: dict[str, str] = Field(description="The pinned llama.cpp pieces (versions, sha256).")
    seconds: float
    complete: bool = Field(description="Every file written and every check passed.")

    def table(self) -> str:
        rows = [
            "| file | type | MiB | bits/weight | fallbacks | top-1 agreement (text) | llama.cpp says | image question |",
            "|---|---|---|---|---|---|---|---|",
        ]
        text = {c.file: c for c in self.checks if c.kind == "text"}
        image = {c.file: c for c in self.checks if c.kind == "image"}
        for f in self.files:
            c, i = text.get(f.file), image.get(f.file)
            agree = f"{c.top1_agreement:.0%} of {c.positions} (≥ {c.min_agreement:.0%})" if c else "-"
            asked = (
                f"{i.top1_agreement:.0%} of {i.positions}, gap {i.max_logprob_diff:.3f} nats"
                + ("" if i.passed else " (failed)")
                if i
                else "-"
            )
            rows.append(
                f"| {f.file} | {f.quant} | {f.bytes / 2**20:.1f} | {f.bits_per_weight:.2f} | {len(f.fallbacks)} | "
                f"{agree} | {repr(c.answer) if c else '-'} | {asked} |"
            )
        if self.mmproj_note:
            rows.append(f"\nno mmproj: {self.mmproj_note}")
        return "\n".join(rows)
