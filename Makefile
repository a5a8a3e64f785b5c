# Both targets set up everything themselves (dataset package, .venv, pip extras) on a fresh machine.
.PHONY: quickstart test test-matrix test-all lint bench

EXTRAS ?= dev,openvino,tvm,remote,vlm

quickstart:            ## install, then run `edgevit compress` on the shipped quickstart recipe
	EXTRAS=$(EXTRAS) bash scripts/bootstrap.sh
	.venv/bin/edgevit compress examples/recipes/quickstart.yaml --out runs/quickstart --force

test:                  ## install, then run the default (fast) test selection on the newest torch pip may take (.venv), then on the oldest torch pyproject.toml admits (test-matrix) — what CI runs
	EXTRAS=$(EXTRAS) bash scripts/bootstrap.sh
	.venv/bin/python -m pytest -q --timeout 900
	EXTRAS=$(EXTRAS) bash scripts/test_matrix.sh

test-matrix:           ## the torch-sensitive tests in .venv-torch-oldest/, on the torch/torchvision lower bounds of pyproject.toml
	EXTRAS=$(EXTRAS) bash scripts/test_matrix.sh

test-all:              ## also the slow tests
	EXTRAS=$(EXTRAS) bash scripts/bootstrap.sh
	.venv/bin/python -m pytest -q -m "" --timeout 1800

lint:
	.venv/bin/ruff check edgevit tests benchmarks scripts

bench:                 ## latency anchors (see BENCHMARKS.md)
	.venv/bin/python benchmarks/latency_anchors.py
