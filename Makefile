# Two commands do all set-up on a fresh machine with Python 3.11 and pip:
#   make demo   create .venv, install, run the main study on the built-in defaults, write its report
#   make test   create .venv if missing, install with dev extras, run the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-dev benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, pinned: it takes the build served here before anything can ask for a newer one. On a GPU machine,
# give the CUDA build instead, e.g. make demo TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/codebert-heads corpus
	$(BIN)/codebert-heads evaluate --config demo
	$(BIN)/codebert-heads ablate --config demo
	$(BIN)/codebert-heads attention --config demo
	$(BIN)/codebert-heads report --config demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs *.egg-info
