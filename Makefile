# `make demo` and `make test` each create .venv, install vitc into it, and run.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# tensorrt-stubs declares a dependency on the tensorrt wheel, whose builder libraries are only on
# NVIDIA's index; the stubs themselves are plain .pyi files, so install them without dependencies.
TRT_STUBS = tensorrt-stubs>=10.0

.PHONY: demo test typecheck venv clean

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

# The stubs are copied with their few invalid signatures repaired (see vitc/engines/trt_stubs.py):
# unrepaired, mypy cannot read them and would type `tensorrt` as Any, checking nothing.
TRT_STUBS_DIR = $(VENV)/trt-stubs-repaired
TRT_MODULES = vitc/engines/tensorrt_runner.py vitc/engines/trt_build.py vitc/engines/trt_common.py vitc/engines/trt_profile.py vitc/engines/trt_stubs.py

typecheck: $(VENV)/.installed-dev
	$(PY) -m vitc.engines.trt_stubs $(TRT_STUBS_DIR)
	MYPYPATH=$(TRT_STUBS_DIR) $(PY) -m mypy --config-file pyproject.toml --follow-imports=silent $(TRT_MODULES)

test: $(VENV)/.installed-dev typecheck
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs demo-out .pytest_cache .mypy_cache
