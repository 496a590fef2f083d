"""Each text GGUF against transformers on a fixed probe, teacher-forced.

The probe is a fixed English text, tokenised by the model's own tokenizer. transformers (fp32, the staged
folder) gives the next-token log-probabilities at every position in one forward; llama.cpp (xllamacpp, in a
subprocess: `compressor.export.probe`) gives its top token for every prefix. A file passes when the share of
positions where both pick the same top token reaches MIN_AGREEMENT for its quant.

Where an mmproj is written, each text file is also asked a fixed image question with it (`ImageReference`,
`check_image`): llama.cpp answers greedily, then transformers reads the same prompt, picture and llama.cpp's answer
in one forward, so at every answer position both have seen the same prefix (teacher-forced on llama.cpp's tokens),
and the same near-tie rule and bounds apply. Both must also count the same prompt tokens (text + image
embeddings), or the picture was cut into other tiles.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError
from compressor.export.report import Check

PROBE = (
    "The picture shows a red circle on a white background. Question: what colour is the circle? Answer: red. "
    "Question: is there a blue square in the picture? Answer: no. The"
)
# Runs of spaces, tabs and newlines before digits and words, as in code and tables: llama.cpp's pre-tokenizer may
# split them otherwise than the model's tokenizer (SmolLM2's vocabulary: "\n\n   3" is one whitespace token + "3" in
# llama.cpp, two whitespace tokens + "3" in transformers). The probe has none, so this is compared apart.
SPACING = "def area(r):\n\n    return 3.14 *  r\n\tif  r >   2:\n        x = [1,  2,   3]\n\n\n   42 |  7\n"
FIRST = 4  # predictions start after this many tokens
GREEDY = 8  # tokens of greedy continuation shown in the report
# The least top-1 agreement per quant: f16 rounds the weights only (a flip needs a near-tie); q8_0 and the
# k-quants change every weight a little more. Measured on the tests' tiny models and stated in the README.
# A position where transformers ranks llama.cpp's token within TIE nats of its own top token counts as agreeing:
# a near-tie flips under any rounding and says nothing about the file.
TIE = 0.02
MIN_AGREEMENT = {
    "f32": 1.0,
    "f16": 0.95,
    "bf16": 0.9,
    "q8_0": 0.9,
    "q6_k": 0.85,
    "q5_k_m": 0.8,
    "q4_k_m": 0.6,  # real weights: the reference 91 %, its 30 % width student 69 % (benchmarks/export_gguf.py)
}
# The largest |log-probability of llama.cpp's top token in llama.cpp - in transformers| a file may show (nats):
# rounding to f16 moves it by thousandths (0.009 measured on the real SmolLM2), a wrong graph by tenths (0.2
# measured on a depth-pruned Gemma 3 without its layer pattern). None: not bounded (k-quants).
MAX_GAP = {"f32": 0.05, "f16": 0.05, "bf16": 0.15, "q8_0": 0.6, "q6_k": 1.0, "q5_k_m": None, "q4_k_m": None}


class Reference:
    """transformers' answers on the probe, computed once for every file."""

    def __init__(self, folder: Path, spec, trust_remote_code: bool = False) -> None:
        import torch
        from transformers import AutoTokenizer

        from compressor.models import load_model

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.ids: list[int] = tokenizer(PROBE, add_special_tokens=True)["input_ids"]
        self.plain_ids: list[int] = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
        self.spacing_ids: list[int] = tokenizer(SPACING, add_special_tokens=False)["input_ids"]
        self.decode = lambda ids: tokenizer.decode(ids)
        model = load_model(folder, spec, "float32", None, trust_remote_code)
        with torch.no_grad():
            ids = torch.tensor([self.ids])
            self.logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            greedy = model.generate(
                input_ids=ids[:, :FIRST],
                attention_mask=torch.ones_like(ids[:, :FIRST]),
                max_new_tokens=GREEDY,
                do_sample=False,
            )
        self.greedy = greedy[0, FIRST:].tolist()
        del model


def llama_answers(gguf: Path, ids: list[int], mmproj: Path | None = None) -> dict[str, Any]:
    request = {"model": str(gguf), "mmproj": str(mmproj) if mmproj else None, "ids": ids, "start": FIRST}
    request["text"], request["spacing"] = PROBE, SPACING
    request["greedy"] = GREEDY
    return _probe(gguf, request)


def _probe(gguf: Path, request: dict[str, Any]) -> dict[str, Any]:
    import os

    done = subprocess.run(
        [sys.executable, "-m", "compressor.export.probe"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env={**os.environ, "LLAMA_MEDIA_MARKER": MEDIA},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        lines_ = [line for line in (done.stderr or "").splitlines() if line.strip()]
        errors = list(
            dict.fromkeys(line.split(" E ", 1)[1] for line in lines_ if " E " in line)
        )  # llama.cpp's
        tail = errors[:4] or lines_[-6:]
        raise CompressorError(
            f"llama.cpp (xllamacpp) could not load or run {gguf.name} (exit {done.returncode}); nothing was "
            "written. Its last lines:\n" + "\n".join(tail + lines)
        )
    return json.loads(lines[-1])


def _score(rows, tokens: list[int], logprobs: list[float | None]) -> tuple[float, int, float]:
    """(agreement, near ties, largest log-probability gap) of llama.cpp's `tokens` against transformers' log-prob
    `rows` (row i: transformers' prediction where llama.cpp chose tokens[i]): a position agrees when both top
    tokens are the same or transformers ranks llama.cpp's within TIE nats of its own top."""
    agree = ties = 0
    diffs = []
    for row, token, logprob in zip(rows, tokens, logprobs):
        if int(row.argmax()) == token:
            agree += 1
        elif float(row.max() - row[token]) <= TIE:
            ties += 1
        if logprob is not None:
            diffs.append(abs(float(row[token]) - logprob))
    return ((agree + ties) / len(tokens) if tokens else 0.0), ties, max(diffs, default=0.0)


def _spacing_note(llama: list[int], model: list[int]) -> str:
    differ = next((i for i, (a, b) in enumerate(zip(llama, model)) if a != b), min(len(llama), len(model)))
    return (
        f"llama.cpp splits runs of spaces and newlines before digits and words (code, tables) otherwise than the "
        f"model's tokenizer ({len(llama)} against {len(model)} tokens on a code-like text, the first difference at "
        f"token {differ}): it is llama.cpp's pre-tokenizer for this vocabulary, so no file can change it. On such "
        "text llama.cpp gives the model token ids it was not trained on (measured on SmolLM2-135M: held-out "
        "perplexity 4.6 % higher than on the model's own ids); prompts without such runs are tokenized alike"
    )


def _meets(quant: str, positions: int, agreement: float, gap: float) -> bool:
    """The quant's bars: enough top-1 agreement over at least one position, and a small enough gap (if bounded)."""
    return (
        positions > 0
        and agreement >= MIN_AGREEMENT[quant]
        and (MAX_GAP[quant] is None or gap <= MAX_GAP[quant])
    )


def check(gguf: Path, quant: str, ref: Reference) -> Check:
    t = time.perf_counter()
    answers = llama_answers(gguf, ref.ids)
    tokens = [token for token, _ in answers["top"]]
    rows = [ref.logprobs[FIRST + i - 1] for i in range(len(tokens))]  # transformers' after ids[:FIRST + i]
    agreement, ties, gap = _score(rows, tokens, [logprob for _, logprob in answers["top"]])
    positions = len(tokens)
    minimum = MIN_AGREEMENT[quant]
    tokenized = answers.get("tokenized")
    same_tokens = None if tokenized is None else tokenized == ref.plain_ids
    spacing = answers.get("tokenized_spacing")
    same_spacing = None if spacing is None else spacing == ref.spacing_ids
    return Check(
        tokenizer_agrees=same_tokens,
        spacing_agrees=same_spacing,
        file=gguf.name,
        positions=positions,
        top1_agreement=round(agreement, 4),
        near_ties=ties,
        min_agreement=minimum,
        max_logprob_diff=round(gap, 4),
        max_gap=MAX_GAP[quant],
        passed=_meets(quant, positions, agreement, gap) and same_tokens is not False,
        note=None
        if same_tokens is not False
        else f"llama.cpp splits the probe text into {len(tokenized)} tokens, transformers into "
        f"{len(ref.plain_ids)}: the GGUF's tokenizer is not the model's",
        spacing_note=_spacing_note(spacing, ref.spacing_ids) if same_spacing is False else None,
        answer=ref.decode(answers["greedy"]),
        expected=ref.decode(ref.greedy),
        seconds=round(time.perf_counter() - t, 2),
    )


# The image question: a picture drawn with PIL and numpy, one fixed prompt.
MEDIA = "<__media__>"  # where llama.cpp's mtmd puts the image (and the family's markers around it)
IMAGE_PROMPT = ("<|im_start|>user\n", "What colour is the circle?<|im_end|>\n<|im_start|>assistant\n")
IMAGE_TOKENS = 12  # answer tokens compared
PICTURE_SIDE = 128  # about this many pixels a side where the family allows any size ("patch_merge")


def picture(side: int):
    """A 4 x 4 grid of fixed colours with a red circle: spatially varied, so a picture that is cut, ordered or
    mirrored differently changes the answer (a plain circle on white barely moved a tiny Qwen2-VL's)."""
    import numpy as np
    from PIL import Image, ImageDraw

    cells = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(cells, "RGB").resize((side, side), Image.Resampling.NEAREST)
    ImageDraw.Draw(img).ellipse((side // 8, side // 8, side * 5 // 8, side * 5 // 8), fill=(220, 30, 30))
    return img


def picture_side(facts, config: dict[str, Any], processor) -> int:
    """The picture's side, chosen so that neither transformers nor llama.cpp resamples it on its own way."""
    vision = config.get("vision_config") or {}
    if facts.picture == "patch_merge":
        factor = int(vision["patch_size"]) * int(vision.get("spatial_merge_size", 2))
        return factor * max(1, round(PICTURE_SIDE / factor))
    if (
        facts.picture == "size"
    ):  # a fixed-size tower (CLIP's processor: crop_size after a shortest-edge resize)
        size = getattr(processor.image_processor, "crop_size", None) or processor.image_processor.size
        return int(size.get("height") or size["shortest_edge"])
    return int(processor.image_processor.size["longest_edge"])


class ImageReference:
    """transformers' side of the image question: the processor's inputs for the picture, and the fp32 model, which
    reads llama.cpp's answers teacher-forced (`check_image`)."""

    def __init__(self, folder: Path, spec, trust_remote_code: bool = False) -> None:
        from compressor.models import load_model, load_processor

        processor = load_processor(folder, trust_remote_code)
        if processor is None or getattr(processor, "image_processor", None) is None:
            raise CompressorError(
                f"{folder} has no image processor, so the mmproj cannot be checked with an image; save the "
                "model's processor with it (processor.save_pretrained)"
            )
        config = json.loads((Path(folder) / "config.json").read_text())
        self.side = picture_side(spec.gguf, config, processor)
        self.image = picture(self.side)
        pre, post = IMAGE_PROMPT
        self.inputs = processor(
            text=pre + spec.gguf.image_prompt + post, images=[self.image], return_tensors="pt"
        )
        self.prompt = pre + spec.gguf.media_text + post
        self.decode = lambda ids: processor.tokenizer.decode(ids)
        self.model = load_model(folder, spec, "float32", None, trust_remote_code)
        # LLaVA: llama.cpp's graph keeps patches 1..n-1 and CLS as the image tokens (compressor.export.llava_mmproj)
        self.cls_last = spec.gguf.mmproj_writer == "llava"

    def png(self) -> str:
        import base64
        import io

        buf = io.BytesIO()
        self.image.save(buf, "PNG")
        return base64.b64encode(buf.getvalue()).decode()

    def _cls_last_embeds(self, full):
        """The LLaVA's input embeddings with llama.cpp's image tokens: the feature layer's patches 1..n-1, then its
        CLS token (transformers takes patches 0..n-1), through the model's own projector."""
        import torch

        model, config = self.model.model, self.model.config
        pixels = self.inputs["pixel_values"].to(torch.float32)
        hidden = model.vision_tower(pixels, output_hidden_states=True, return_dict=True).hidden_states
        layer = hidden[config.vision_feature_layer]  # [1, 1 + n, d]: CLS first
        order = [*range(2, layer.shape[1]), 0]
        features = model.multi_modal_projector(layer[:, order])
        embeds = self.model.get_input_embeddings()(full)
        mask = full == config.image_token_id
        if int(mask.sum()) != features.shape[1]:
            raise CompressorError(
                f"the prompt has {int(mask.sum())} image tokens and the tower gives {features.shape[1]} features"
            )
        embeds[mask] = features[0].to(embeds.dtype)
        return embeds

    def logprobs(self, answer: list[int], as_llama_cpp: bool = False):
        """transformers' next-token log-probabilities after the prompt and each prefix of `answer`; `as_llama_cpp`:
        with the image tokens llama.cpp's graph computes where it is known to differ (`cls_last`)."""
        import torch

        ids = self.inputs["input_ids"]
        n0 = ids.shape[1]
        full = torch.cat([ids, torch.tensor([answer], dtype=ids.dtype)], 1)
        if as_llama_cpp and self.cls_last:
            with torch.no_grad():
                embeds = self._cls_last_embeds(full)
                logits = self.model(inputs_embeds=embeds, attention_mask=torch.ones_like(full)).logits[0]
            return torch.log_softmax(logits.float(), -1)[n0 - 1 : n0 - 1 + len(answer)]
        extra = {}
        for key, value in self.inputs.items():
            if key in ("input_ids", "attention_mask"):
                continue
            if (
                torch.is_tensor(value) and value.dim() == 2 and value.shape[:2] == (1, n0)
            ):  # mm_token_type_ids
                value = torch.cat([value, torch.zeros(1, len(answer), dtype=value.dtype)], 1)
            extra[key] = value
        with torch.no_grad():
            logits = self.model(input_ids=full, attention_mask=torch.ones_like(full), **extra).logits[0]
        return torch.log_softmax(logits.float(), -1)[n0 - 1 : n0 - 1 + len(answer)]


def check_image(gguf: Path, mmproj: Path, quant: str, ref: ImageReference) -> Check:
    t = time.perf_counter()
    request = {"model": str(gguf), "mmproj": str(mmproj), "prompt": ref.prompt, "image": ref.png()}
    n0 = int(ref.inputs["input_ids"].shape[1])
    answers = _probe(
        gguf, {**request, "ids": [], "greedy": IMAGE_TOKENS, "n_ctx": 2 * n0 + IMAGE_TOKENS + 64}
    )
    tokens, logprobs = answers["tokens"], answers["logprobs"]
    note = None
    unmodified = None
    agreement, ties, gap = 0.0, 0, 0.0
    expected: list[int] = []
    same_prompt = answers["prompt_tokens"] == n0
    if not same_prompt:
        note = (
            f"llama.cpp's prompt has {answers['prompt_tokens']} tokens (text + image) and transformers' {n0}: the "
            "picture is cut or embedded differently, so the answers are not compared"
        )
    elif tokens:
        rows = ref.logprobs(tokens, as_llama_cpp=True)
        expected = [int(row.argmax()) for row in rows][: len(tokens)]
        agreement, ties, gap = _score(rows, tokens, logprobs)
        if ref.cls_last:
            unmodified = _score(ref.logprobs(tokens), tokens, logprobs)
            note = (
                "llama.cpp's LLaVA graph gives the language model the CLS token's features in place of the first "
                "patch's: the bars apply to transformers fed that order; against the unmodified model: "
                f"{unmodified[0]:.0%} agreement, gap {unmodified[2]:.3f} nats"
            )
    positions = len(expected)
    return Check(
        file=gguf.name,
        kind="image",
        mmproj=mmproj.name,
        positions=positions,
        top1_agreement=round(agreement, 4),
        near_ties=ties,
        min_agreement=MIN_AGREEMENT[quant],
        max_logprob_diff=round(gap, 4),
        max_gap=MAX_GAP[quant],
        unmodified_agreement=round(unmodified[0], 4) if unmodified else None,
        unmodified_max_logprob_diff=round(unmodified[2], 4) if unmodified else None,
        passed=same_prompt and _meets(quant, positions, agreement, gap),
        answer=ref.decode(tokens),
        expected=ref.decode(expected),
        note=note,
        picture=f"{ref.side}x{ref.side} PNG: a red circle on a 4 x 4 grid of colours",
        seconds=round(time.perf_counter() - t, 2),
    )
