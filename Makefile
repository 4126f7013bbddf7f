# cnnblas: every target creates .venv from a bare Python 3 when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Two installs: the core (cnnblas and the embedded data set) is all `make train`
# needs; the test extras (pytest, PyTorch, MPICH, Jupyter kernel: ~1.7 GB) come
# on top for test, lint, bench and report.
CORE   := $(VENV)/.installed-core
FULL   := $(VENV)/.installed-test

# Some environments pin OpenBLAS to older kernels (e.g. OPENBLAS_CORETYPE=Haswell,
# AVX2) on CPUs that have AVX-512, which halves SGEMM speed. Let OpenBLAS detect
# the CPU itself; `cnnblas info` shows which kernels are in use.
unexport OPENBLAS_CORETYPE

.PHONY: venv test train lint bench report clean

$(CORE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[data]'
	@# Compile every kernel into the cache once, so later processes start fast.
	$(BIN)/cnnblas warmup
	touch $(CORE)

$(FULL): $(CORE)
	$(BIN)/python -m pip install --quiet -e '.[test,mpi]'
	@# PyTorch is optional (comparisons only); the CPU build is pinned.
	$(BIN)/python -m pip install --quiet 'torch==2.13.0' \
	    || echo "PyTorch unavailable: PyTorch comparisons will be skipped"
	touch $(FULL)

venv: $(FULL)

test: $(FULL)
	$(BIN)/python -m pytest -q

train: $(CORE)
	$(BIN)/cnnblas train

lint: $(FULL)
	$(BIN)/ruff check cnnblas tests benchmarks

bench: $(FULL)
	$(BIN)/python -m pytest benchmarks --benchmark-enable -q

report: $(FULL)
	$(BIN)/python -m benchmarks.report

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks
