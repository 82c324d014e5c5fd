# transformerkit: `make demo` sets up and trains a small GPT on Shakespeare; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN    ?= runs/shakespeare-char

.PHONY: setup demo test lint browser bench bench-deps clean

setup: $(VENV)/.installed

# Without a GPU, install the pinned CPU build of torch first: a plain `torch` requirement would
# otherwise pull several GB of CUDA packages.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch==2.13.0; fi
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# A 0.8M-parameter character-level GPT on Shakespeare, about 3 minutes on 2 CPU cores:
# prints the validation loss and a sample, leaves a checkpoint in $(RUN)/checkpoint.
demo: setup
	$(BIN)/tkit train --model gpt2-tiny --data shakespeare --tokenizer char \
	    --set n_layer=4 d_model=128 n_head=4 d_ff=512 dropout=0.0 attn_dropout=0.0 \
	    --block-size 128 --batch-size 12 --max-steps 2000 --lr 2e-3 --min-lr 2e-4 --warmup-steps 100 \
	    --eval-interval 500 --eval-batches 20 --log-interval 50 --save-interval 500 \
	    --out $(RUN) --prompt "ROMEO:" --sample-tokens 300

# The house style (ruff: lint and import order, [tool.ruff] in pyproject.toml), then the pytest suite.
test: lint browser
	$(BIN)/python -m pytest

# Debian's Chromium for the page's browser tests (tests/test_browser.py; Playwright drives it and never
# downloads a browser of its own). Installed with apt when missing, through sudo when not root; where that
# cannot be done, a warning, and those tests skip (TKIT_REQUIRE_BROWSER=1 makes them fail instead).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && $$SUDO apt-get update -q && \
	     $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; then :; \
	  else echo "WARNING: could not install chromium (apt-get install chromium as root); the browser tests will skip"; fi; }

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_gpt2.py

# The benchmark-only extra (llama.cpp for benchmarks/bench_decode.py), built from source without -march=native:
# a native build stopped with "Illegal instruction" on these machines. GGML_NATIVE=OFF still compiles AVX2/FMA/F16C.
# 10-20 minutes on 2 cores. Nothing else depends on it.
bench-deps: setup
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install --no-binary llama-cpp-python -e ".[bench]"

clean:
	rm -rf $(VENV) runs .pytest_cache
