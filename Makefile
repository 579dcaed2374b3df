# `make demo` and `make test` each create .venv, install vitc into it, and run.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# tensorrt-stubs declares a dependency on the tensorrt wheel, whose builder libraries are only on
# NVIDIA's index; the stubs themselves are plain .pyi files, so install them without dependencies.
TRT_STUBS = tensorrt-stubs>=10.0

.PHONY: demo test lint typecheck venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps '$(TRT_STUBS)'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/vitc demo

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check vitc tests tools benchmarks

# The stubs are copied with their few invalid signatures repaired (see tools/trt_stubs.py): unrepaired,
# mypy cannot read them and would type `tensorrt` as Any, checking nothing. The whole package is checked.
TRT_STUBS_DIR = $(VENV)/trt-stubs-repaired

typecheck: $(VENV)/.installed-dev
	$(PY) tools/trt_stubs.py $(TRT_STUBS_DIR)
	MYPYPATH=$(TRT_STUBS_DIR) $(PY) -m mypy --config-file pyproject.toml vitc tools benchmarks

# Three pytest processes: the whole suite in one process segfaulted (exit 139) at the same test on this
# build machine, deep into the run (at test 556 of 699, tests/test_trust.py's in-process YAML checks; again on
# 2026-12-02 after the CLI's audit hook was made once-per-process, so that was not it), while every part passes.
test: $(VENV)/.installed-dev lint typecheck
	$(PY) -m pytest -q tests/test_[a-k]*.py
	$(PY) -m pytest -q tests/test_[l-r]*.py
	$(PY) -m pytest -q tests/test_[s-z]*.py

clean:
	rm -rf $(VENV) runs demo-out .pytest_cache .mypy_cache
