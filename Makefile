# Aliases only: every target is one command (the venv lives in .venv/, installed once, stamped).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-loaded coverage table bench gpu-check lint clean

# The dev extra (test tools and ruff) and the sweep engines' extras (Ray, submitit) so that every target below and
# every test works; a Makefile change reinstalls once.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,ray,slurm]'
	touch $(STAMP)

install: $(STAMP)

# Measures this machine: records go to results/<machine_id>/; the table reads results/ without results/published/.
run: $(STAMP)
	$(BIN)/hgbench run --case all --smoke && $(BIN)/hgbench table --reference

test: $(STAMP)
	$(BIN)/python -m pytest -q && HGBENCH_BENCH_SMOKE=1 $(BIN)/python -m pytest -q benchmarks -m smoke --benchmark-columns=min,median,rounds

# The same tests with every CPU kept busy by loops beside them (.ci/loaded): no test may depend on timing or load.
test-loaded: $(STAMP)
	.ci/loaded $(MAKE) test

# make test's suite under coverage: hgbench's line coverage, then its CUDA-only lines (tests/helpers/cuda_lines.py:
# what runs only on a GPU, executed on the CPU by the CUDA stand-in) and every one of them no test executed.
coverage: $(STAMP)
	$(BIN)/python -m pytest -q --cov=hgbench --cov-report=term:skip-covered && $(BIN)/python tests/helpers/cuda_lines.py .coverage

# README's table is the published example (results/published/), never whatever this machine has run.
table: $(STAMP)
	$(BIN)/hgbench table --reference --results results/published --readme README.md

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-autosave --benchmark-storage=results/benchmarks $(BENCH_ARGS)

# On a machine with a GPU: the CUDA-only tests, the issue-7 speed figures (records in results/bench/) and the data
# pipeline benchmarks on the GPU.
gpu-check: $(STAMP)
	$(BIN)/python -m pytest -q -m cuda && $(BIN)/hgbench bench --case 1 --batch 6 && $(BIN)/hgbench bench --case 1 --batch 32 && $(BIN)/python -m pytest -q benchmarks/test_data_pipeline.py --benchmark-only --benchmark-autosave --benchmark-storage=results/benchmarks

lint: $(STAMP)
	$(BIN)/ruff check hgbench tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .benchmarks runs .coverage
