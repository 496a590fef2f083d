"""Each text GGUF against transformers on a fixed probe, teacher-forced.

The probe is a fixed English text, tokenised by the model's own tokenizer. transformers (fp32, the staged
folder) gives the next-token log-probabilities at every position in one forward; llama.cpp (xllamacpp, in a
subprocess: `compressor.export.probe`) gives its top token for every prefix. A file passes when the share of
positions where both pick the same top token reaches MIN_AGREEMENT for its quant.
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
    "q4_k_m": 0.7,
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
    request["greedy"] = GREEDY
    done = subprocess.run(
        [sys.executable, "-m", "compressor.export.probe"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
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


def check(gguf: Path, quant: str, ref: Reference) -> Check:
    t = time.perf_counter()
    answers = llama_answers(gguf, ref.ids)
    agree = ties = 0
    diffs = []
    for i, (token, logprob) in enumerate(answers["top"]):
        row = ref.logprobs[FIRST + i - 1]  # transformers' prediction after ids[:FIRST + i]
        if int(row.argmax()) == token:
            agree += 1
        elif float(row.max() - row[token]) <= TIE:
            ties += 1
        if logprob is not None:
            diffs.append(abs(float(row[token]) - logprob))
    positions = len(answers["top"])
    agreement = (agree + ties) / positions if positions else 0.0
    minimum = MIN_AGREEMENT[quant]
    return Check(
        file=gguf.name,
        positions=positions,
        top1_agreement=round(agreement, 4),
        near_ties=ties,
        min_agreement=minimum,
        max_logprob_diff=round(max(diffs, default=0.0), 4),
        max_gap=MAX_GAP[quant],
        passed=positions > 0
        and agreement >= minimum
        and (MAX_GAP[quant] is None or max(diffs, default=0.0) <= MAX_GAP[quant]),
        answer=ref.decode(answers["greedy"]),
        expected=ref.decode(ref.greedy),
        seconds=round(time.perf_counter() - t, 2),
    )
