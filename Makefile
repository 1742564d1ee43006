# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision first, pinned to the wheels this machine carries; elsewhere any torch>=2.4 works.
	$(BIN)/python -m pip install -q "torch>=2.4" "torchvision>=0.19"
	$(BIN)/python -m pip install -q -e ".[dev,faiss,viz,onnx]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/esseg demo

test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
