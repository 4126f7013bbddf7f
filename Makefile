# cnnblas: every target creates .venv from a bare Python 3 when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Some environments pin OpenBLAS to older kernels (e.g. OPENBLAS_CORETYPE=Haswell,
# AVX2) on CPUs that have AVX-512, which halves SGEMM speed. Let OpenBLAS detect
# the CPU itself; `cnnblas info` shows which kernels are in use.
unexport OPENBLAS_CORETYPE

.PHONY: venv test train lint bench report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,mpi]'
	@# PyTorch is optional (comparisons only); the CPU build is pinned.
	$(BIN)/python -m pip install --quiet 'torch==2.13.0' \
	    || echo "PyTorch unavailable: PyTorch comparisons will be skipped"
	@# Compile every kernel into the cache once, so later processes start fast.
	$(BIN)/cnnblas warmup
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

train: $(STAMP)
	$(BIN)/cnnblas train

lint: $(STAMP)
	$(BIN)/ruff check cnnblas tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-enable -q

report: $(STAMP)
	$(BIN)/python -m benchmarks.report

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks
