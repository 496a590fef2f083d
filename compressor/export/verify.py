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
MIN_AGREEMENT = {
    "f32": 1.0,
    "f16": 0.95,
    "bf16": 0.9,
    "q8_0": 0.9,
    "q6_k": 0.85,
    "q5_k_m": 0.8,
    "q4_k_m": 0.7,
}


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
    agree, diffs = 0, []
    for i, (token, logprob) in enumerate(answers["top"]):
        position = FIRST + i - 1  # transformers' prediction after ids[:FIRST + i]
        agree += int(ref.logprobs[position].argmax()) == token
        if logprob is not None:
            diffs.append(abs(float(ref.logprobs[position, token]) - logprob))
    positions = len(answers["top"])
    agreement = agree / positions if positions else 0.0
    minimum = MIN_AGREEMENT[quant]
    return Check(
        file=gguf.name,
        positions=positions,
        top1_agreement=round(agreement, 4),
        min_agreement=minimum,
        max_logprob_diff=round(max(diffs, default=0.0), 4),
        passed=positions > 0 and agreement >= minimum,
        answer=ref.decode(answers["greedy"]),
        expected=ref.decode(ref.greedy),
        seconds=round(time.perf_counter() - t, 2),
    )
