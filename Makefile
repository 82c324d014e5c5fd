# transformerkit: `make demo` sets up and trains a small GPT on Shakespeare; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN    ?= runs/shakespeare-char

.PHONY: setup demo test lint bench clean

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
test: lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_gpt2.py

clean:
	rm -rf $(VENV) runs .pytest_cache
