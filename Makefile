# Aliases only: every target is one command (the venv lives in .venv/, installed once, stamped).
# The venv's Python once installed (gpu-check on a bare GPU machine runs with the Python there: PYTHON=python3).
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The lowest torch pair pyproject.toml admits, tested in a venv of its own (tests/test_toolchain.py checks they agree).
OLDEST_TORCH       := 2.11.0
OLDEST_TORCHVISION := 0.26.0
OLDEST             := .venv-oldest

.PHONY: install run test test-cluster test-loaded test-oldest coverage table docs bench gpu-check lint clean

# The dev extra (test tools and ruff) and the sweep engines' extras (Ray, submitit) so that every target below and
# every test works; a Makefile change reinstalls once, and so does a new version (the editable install's metadata,
# which `pip show` and importlib.metadata read, is written only at install time).
$(STAMP): pyproject.toml constraints.txt Makefile hgbench/_version.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,ray,slurm,mlflow]'
	touch $(STAMP)

# constraints.txt with the lowest torch pair in place of the newest.
$(OLDEST)/.installed: pyproject.toml constraints.txt Makefile hgbench/_version.py
	test -x $(OLDEST)/bin/python || $(PYTHON) -m venv $(OLDEST)
	sed -e 's/^torch==.*/torch==$(OLDEST_TORCH)/' -e 's/^torchvision==.*/torchvision==$(OLDEST_TORCHVISION)/' constraints.txt > $(OLDEST)/constraints.txt
	$(OLDEST)/bin/python -m pip install -q --upgrade pip
	$(OLDEST)/bin/python -m pip install -q -c $(OLDEST)/constraints.txt -e '.[dev,ray,slurm,mlflow]'
	touch $@

install: $(STAMP)

# Measures this machine: records go to results/<machine_id>/; the table reads results/ without results/published/.
run: $(STAMP)
	$(BIN)/hgbench run --case all --smoke && $(BIN)/hgbench table --reference

test: $(STAMP)
	$(BIN)/python -m pytest -q && HGBENCH_BENCH_SMOKE=1 $(BIN)/python -m pytest -q benchmarks -m smoke --benchmark-columns=min,median,rounds

# The tests under tests/cluster/ (make test never collects them) against a one-node Slurm that .ci/slurm-up starts and
# .ci/slurm-down stops (root installs slurm-wlm and munge where missing; without root the Slurm tests skip).
test-cluster: $(STAMP)
	.ci/test-cluster

# The same tests with every CPU kept busy by loops beside them (.ci/loaded): no test may depend on timing or load.
test-loaded: $(STAMP)
	.ci/loaded $(MAKE) test

# make test's suite under coverage: hgbench's line coverage, then its CUDA-only lines (tests/helpers/cuda_lines.py:
# what runs only on a GPU, executed on the CPU by the CUDA stand-in) and every one of them no test executed.
coverage: $(STAMP)
	$(BIN)/python -m pytest -q --cov=hgbench --cov-report=term:skip-covered && $(BIN)/python tests/helpers/cuda_lines.py .coverage

# The test suite on the lowest supported torch (TEST_ARGS narrows it, e.g. TEST_ARGS=tests/test_cases.py).
test-oldest: $(OLDEST)/.installed
	$(OLDEST)/bin/python -m pytest -q $(TEST_ARGS)

# README's table, and the manual's copy on its Reports page, is the published example (results/published/), never
# whatever this machine has run.
table: $(STAMP)
	$(BIN)/hgbench table --reference --results results/published --readme README.md --readme docs/reports.md

# The manual (mkdocs.yml, docs/) into site/; --strict: a broken link, a dangling anchor or a page outside the nav fails
# (make test builds it the same way, tests/test_docs.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-autosave --benchmark-storage=results/benchmarks $(BENCH_ARGS)

# On a machine with a GPU, no install: each of the manual's GPU claims measured in a step with its own time budget (all
# under 8 minutes), every step run, one report in results/gpu-check/<machine>/report.{json,md}.
gpu-check:
	$(PYTHON) -m hgbench.gpu_check $(CHECK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check hgbench tests benchmarks tools

clean:
	rm -rf $(VENV) $(OLDEST) build dist site *.egg-info .pytest_cache .benchmarks runs .coverage
