"""benchmarks/serving.py's fast parts: parsing llama-quantize / llama-bench output and the table (no build)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "serving.py"


@pytest.fixture(scope="module")
def serving():
    spec = importlib.util.spec_from_file_location("serving_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# as llama-quantize prints them (src/llama-quant.cpp), interleaved with its per-tensor lines
QUANTIZE_LOG = """\
[   4/ 272]                  blk.0.attn_k.weight - [  576,   192,     1,     1], type =    f16, converting to q5_0 .. \
warning: blk.0.ffn_down.weight                 - ncols    758 not divisible by 256 (required for type    q6_K) \
(WARNING: must use F16 due to unusual shape) -> falling back to     f16
size =     0.84 MiB ->     0.84 MiB
warning: blk.1.ffn_down.weight                 - ncols    758 not divisible by 256 (required for type    q4_K) \
(WARNING: must use F16 due to unusual shape) -> falling back to     f16
warning: blk.1.ffn_gate.weight                 - ncols    576 not divisible by 256 (required for type    q4_K) \
-> falling back to    q5_0
llama_model_quantize_impl: model size  =   181.35 MiB (16.00 BPW)
llama_model_quantize_impl: quant size  =    88.91 MiB (7.92 BPW)
llama_model_quantize_impl: WARNING: 3 of 272 tensor(s) required fallback quantization
"""


def test_parse_quantize_counts_and_summarises_fallbacks(serving):
    got = serving.parse_quantize(QUANTIZE_LOG)
    assert got["n_fallback"] == 3 and got["n_tensors"] == 272
    assert [f["got"] for f in got["fallbacks"]] == ["f16", "f16", "q5_0"]
    assert got["fallbacks"][0] == {
        "tensor": "blk.0.ffn_down.weight",
        "ncols": 758,
        "block": 256,
        "wanted": "q6_K",
        "got": "f16",
    }
    assert got["summary"] == "ffn_down 758: q6_K→f16 ×1, q4_K→f16 ×1; ffn_gate 576: q4_K→q5_0 ×1"
    assert (got["quant_mib"], got["quant_bpw"], got["source_bpw"]) == (88.91, 7.92, 16.0)


def test_parse_quantize_refuses_a_count_it_cannot_account_for(serving):
    with pytest.raises(ValueError, match="reports 4 fallbacks but 3"):
        serving.parse_quantize(QUANTIZE_LOG.replace("WARNING: 3 of", "WARNING: 4 of"))


def test_parse_bench_reads_prefill_and_decode(serving):
    rows = [
        {"n_prompt": 512, "n_gen": 0, "avg_ts": 1234.5, "model_size": 100, "model_n_params": 50},
        {"n_prompt": 0, "n_gen": 64, "avg_ts": 56.7, "model_size": 100, "model_n_params": 50},
    ]
    got = serving.parse_bench("build: x\n" + json.dumps(rows))
    assert got == {"prefill": 1234.5, "decode": 56.7, "size": 100.0, "params": 50.0}


def test_table_has_speedups_against_the_original_of_the_same_type(serving):
    def row(slug, kind, params, prefill, decode):
        return {
            "slug": slug,
            "labels": [slug],
            "heads": 9,
            "kv_heads": 3,
            "mlp": 768,
            "params": params,
            "type": kind,
            "n_fallback": 0,
            "mib": 1.0,
            "bpw": 8.0,
            "prefill": prefill,
            "decode": decode,
            "ppl": 10.0,
            "torch_ppl": 10.0,
        }

    md = serving.table(
        [
            row("original", "f16", 200, 100, 10),
            row("original", "Q4_K_M", 200, 200, 20),
            row("student", "f16", 100, 150, 20),
            row("student", "Q4_K_M", 100, 400, 30),
        ]
    )
    lines = md.splitlines()
    assert len(lines) == 6 and lines[0].count("|") == lines[2].count("|")
    assert "| 2.00× | f16 |" in lines[4] and "| 150 | 1.50× | 0.75 | 20.0 | 2.00× | 1.00 |" in lines[4]
    assert "| 400 | 2.00× | 1.00 | 30.0 | 1.50× | 0.75 |" in lines[5]
