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

# One pytest process, as a long `vitc run` is one process (torch's OpenMP, ONNX Runtime and OpenVINO side by side).
# It once segfaulted deep into the run (exit 139): OpenVINO's CPU plugins, one per Core, left the main thread's
# alternate signal stack unmapped when freed out of order; vitc now keeps one Core (vitc.backends.openvino_runner).
test: $(VENV)/.installed-dev lint typecheck
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs demo-out .pytest_cache .mypy_cache
