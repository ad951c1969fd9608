.DEFAULT_GOAL := help
PYTHON := .venv/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help bootstrap test unit vm-test soak demo bench wheels base-image clean

help:
	@echo "make test       bootstrap, then run every test (PYTEST_ARGS=... passes options to pytest)"
	@echo "make unit       bootstrap, then run tests/unit and tests/sim (no root needed)"
	@echo "make vm-test    bootstrap, then run the full-kernel tier tests/vm alone (root; Debian's kernel under qemu)"
	@echo "make soak       bootstrap, then the long versions of the tests marked soak (root; OVERLAYD_SOAK=1)"
	@echo "make demo       bootstrap, then run tools/demo.py"
	@echo "make bench      bootstrap, then benchmark overlayd against kernel VXLAN (root; BENCH_ARGS=--quick)"
	@echo "make wheels     fill docker/wheelhouse with the image's Python wheels, built by the host's pip"
	@echo "make base-image build overlayd-base:bookworm with debootstrap (root, no registry needed)"
	@echo "make bootstrap  install system packages (as root) and .venv"
	@echo "make clean      remove .venv and caches"

bootstrap:
	scripts/bootstrap

test: bootstrap
	$(PYTHON) -m pytest -ra $(PYTEST_ARGS)

unit: bootstrap
	$(PYTHON) -m pytest -ra tests/unit tests/sim $(PYTEST_ARGS)

vm-test: bootstrap
	$(PYTHON) -m pytest -ra tests/vm $(PYTEST_ARGS)

# The long versions of the tests marked `soak` (CI runs their short versions with the rest).
soak: bootstrap
	OVERLAYD_SOAK=1 $(PYTHON) -m pytest -ra -s -m soak $(PYTEST_ARGS)

demo: bootstrap
	$(PYTHON) tools/demo.py

bench: bootstrap
	$(PYTHON) tools/bench.py $(BENCH_ARGS)

# The image's wheels, for builds whose containers cannot reach a package
# index: overlayd's dependencies plus setuptools (its build backend).
wheels: bootstrap
	$(PYTHON) tools/compose.py wheels

base-image:
	scripts/base-image

clean:
	rm -rf .venv .pytest_cache .hypothesis build dist *.egg-info
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
