.DEFAULT_GOAL := help
PYTHON := .venv/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=
FUZZ_ARGS ?=

.PHONY: help bootstrap bench-bootstrap test unit vm-test demo bench fuzz soak wheels base-image clean

help:
	@echo "make test       bootstrap, then run every test (PYTEST_ARGS=... passes options to pytest)"
	@echo "make unit       bootstrap, then run tests/unit and tests/sim (no root needed)"
	@echo "make vm-test    bootstrap, then run the full-kernel tier tests/vm alone (root; Debian's kernel under qemu)"
	@echo "make demo       bootstrap, then run tools/demo.py"
	@echo "make bench      bootstrap (with the bench extra: matplotlib), then benchmark overlayd against kernel VXLAN"
	@echo "                (root; BENCH_ARGS=--quick, or e.g. \"--only data,routed,table --routed-modes vxlan-by-hand,userspace\")"
	@echo "make fuzz       bootstrap, then fuzz every decoder, 1e6 inputs per target, 2 at a time (~1 h; FUZZ_ARGS=...)"
	@echo "make soak       bootstrap, then the soak tests' full versions: flap storm, lossy underlay, 1M MACs, netem (root; ~40 min)"
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


demo: bootstrap
	$(PYTHON) tools/demo.py

bench-bootstrap:
	OVERLAYD_EXTRAS=test,bench scripts/bootstrap

bench: bench-bootstrap
	$(PYTHON) tools/bench.py $(BENCH_ARGS)

# tools/fuzz.py: atheris (the test extras bring it on x86-64 Linux), else Hypothesis with the
# same budget. Crashers land in tests/fuzz/corpus/<target>/, which the normal suite replays.
fuzz: bootstrap
	$(PYTHON) tools/fuzz.py $(FUZZ_ARGS)

# The full versions of the tests marked `soak` (tests/soak.py; CI runs their short versions with
# the rest): 100 SIGKILL/restart cycles and 5 minutes of 5% loss on the host, 1M random source MACs,
# then the full-kernel tier with 5 minutes of netem.
soak: bootstrap
	OVERLAYD_SOAK=full $(PYTHON) -m pytest -ra -s -m soak tests/netns $(PYTEST_ARGS)
	OVERLAYD_SOAK=full $(PYTHON) -m pytest -ra -s tests/vm $(PYTEST_ARGS)
	OVERLAYD_SOAK=full OVERLAYD_VM_TIMEOUT_S=$${OVERLAYD_VM_TIMEOUT_S:-1200} \
		$(PYTHON) -m pytest -ra tests/vm -k test_netem_underlay $(PYTEST_ARGS)

# The image's wheels, for builds whose containers cannot reach a package
# index: overlayd's dependencies plus setuptools (its build backend).
wheels: bootstrap
	$(PYTHON) tools/compose.py wheels

base-image:
	scripts/base-image

clean:
	rm -rf .venv .pytest_cache .hypothesis build dist *.egg-info
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
