# shardproof: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The library asks for a torch range; the install step pins the local CPU wheel
# so that pip never pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup test soak demo bench bench-peer clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)
	@bash tools/ensure_postgres.sh
	@bash tools/ensure_netns_tools.sh

# Two workers (TEST_WORKERS): the suite's multi-process tests spend much of their time waiting, so one
# pytest process keeps only about one of the 2 cores busy. --dist loadscope keeps a module's tests (and
# its module-scoped deployment) on one worker.
TEST_WORKERS ?= 2

test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --durations=30

# The long sweeps that `make test` runs in a smaller version (tests marked `soak`, see tests/conftest.py).
# --dist load: the soak sweeps are a few long tests in one module; each worker builds its own deployment.
soak: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist load --soak -m soak --timeout 3600 --durations=20

demo: setup
	$(VENV)/bin/shardproof demo

bench: setup
	$(PY) bench/mpc_ops.py --json bench/results/mpc_ops.json

# shardproof against CrypTen 0.4.1 on one GPT-2-small-shaped block (issue 12). CrypTen and what it imports
# go to .peer/, beside the project (not among its dependencies), and its ONNX-converter import is made
# optional there (tools/patch_crypten.py): the benchmark builds its block from CrypTen tensors.
PEER := .peer
bench-peer: setup
	@test -f $(PEER)/crypten/__init__.py || $(PY) -m pip install --quiet --no-deps --target $(PEER) \
		crypten==0.4.1 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 pyyaml scipy
	$(PY) tools/patch_crypten.py $(PEER)
	PYTHONPATH=$(PEER) $(PY) bench/peer_crypten.py --json bench/results/peer_crypten.json

clean:
	rm -rf $(VENV) $(PEER) .pytest_cache .hypothesis
