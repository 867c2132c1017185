# mhub-fmcib: the two commands of the README's quick start, and the helpers they use.
#   make demo   create .venv, install, run the DICOM workflow on sample_data/
#   make test   install the test extras (and, as root, the Debian tools), run the whole suite
#   make container-test   (root) build the CPU image offline with a private dockerd and run it
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
DEMO_OUT ?= demo_output

.PHONY: demo test install install-test system-deps js-deps lint typecheck bench train-smoke container-test slurm-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The CPU image's lock as pip constraints: the suite runs with exactly the versions the image
# ships (tests/test_dockerfiles.py checks it), whatever the index released since. Its index
# line and torch's pin are left out: torch is installed first, as $(TORCH), from any index.
LOCK        := requirements/lock-cpu.txt
CONSTRAINTS := $(VENV)/constraints.txt
PIP_LOCKED  := $(BIN)/pip install --quiet -c $(CONSTRAINTS)

$(CONSTRAINTS): $(LOCK) $(BIN)/python
	grep -Ev '^[[:space:]]*(#|--|$$|torch==)' $(LOCK) > $@

# torch first, pinned: anything unpinned would pull a multi-GB CUDA build
$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP_LOCKED) $(TORCH)
	$(PIP_LOCKED) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_LOCKED) -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Debian tools the tests use: Orthanc + DICOMweb plugin, dcmtk's dsrdump, chromium (the QC
# page in a browser), node + npm (dcmjs reads our SR and SEG). Installed when running as
# root and missing (only those missing); otherwise those tests skip with a reason.
system-deps:
	@bash scripts/system-deps.sh

# dcmjs (tests/js/package-lock.json) for the test that reads our SR and SEG as OHIF would.
tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	    cd tests/js && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "note: npm missing: the dcmjs test will skip"; fi

js-deps: system-deps tests/js/node_modules/.installed

demo: $(VENV)/.installed
	$(BIN)/python scripts/demo.py --output $(DEMO_OUT)

# The training smoke run first, then the whole suite in a private network namespace
# (loopback only) when possible: Orthanc binds every interface, and no test may reach any
# other address.
test: $(VENV)/.installed-test system-deps js-deps
	$(MAKE) --no-print-directory train-smoke
	@if [ "$$(id -u)" = "0" ] && unshare --net true 2>/dev/null; then \
	    scripts/netns-run.sh $(BIN)/python -m pytest $(PYTEST_ARGS); \
	else \
	    echo "note: no private network namespace (needs root): DICOMweb tests will skip"; \
	    $(BIN)/python -m pytest $(PYTEST_ARGS); \
	fi

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

# CPU benchmarks (issue 2 core; issue 18 start-up, encoder paths and batch, prefetch off/on,
# side by side with the authors' get_features when FMCIB_REF_PYTHON names a venv holding it,
# else skipped; seconds per lesion of the SR and SEG exporters). The GPU one is
# benchmarks/gpu.sh (needs CUDA).
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/core.py
	$(BIN)/python benchmarks/startup.py --reps 1
	$(BIN)/python benchmarks/cli_startup.py --reps 3
	$(BIN)/python benchmarks/encoder_proto.py --paths eager,fused,traced,cl3d --batch 16 --rounds 2
	$(BIN)/python benchmarks/fused_onednn.py --batch 16 --rounds 2
	$(BIN)/python benchmarks/encoder_layers.py --batch 16
	$(BIN)/python benchmarks/prefetch.py --studies 6 --reps 3
	$(BIN)/python benchmarks/vs_reference.py --reps 1 --variants "auto=;b8=--batch-size 8"
	$(BIN)/python benchmarks/exports.py --lesions 5 60 --reps 1

# 2-process torchrun SimCLR pre-training on the synthetic cohort (CPU, ~1 min); prints
# the first and last loss. Also run by `make test`.
train-smoke: $(VENV)/.installed-test
	PYTHON=$(BIN)/python bash training/scripts/train_smoke.sh

# A one-node Slurm cluster on loopback (private network namespace, as root) runs the
# README's shard array and the merge after it, cancels and resubmits a task, and checks the
# merge equals a single run (a few minutes; installs slurm-wlm and munge). See docs/hpc.md.
slurm-test: $(VENV)/.installed
	VENV=$(VENV) scripts/slurm-test.sh

# The image built and run for real, offline (docs/container.md): a private dockerd in its own
# network namespace, a Debian base from mmdebstrap, the locked wheels and random weights
# served on loopback; compares the container's outputs with a native run. Root; ~15 min.
container-test: $(VENV)/.installed
	VENV=$(VENV) bash scripts/container-test.sh

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
