# seglab: `make demo` and `make test` are all a newcomer needs; both install first if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Exact versions the results were measured with (Linux x86_64, Python 3.11); LOCK= installs the
# newest versions pyproject.toml allows instead. Refresh with make lock.
LOCK ?= requirements.lock
export TF_CPP_MIN_LOG_LEVEL ?= 2
export NO_MKDOCS_2_WARNING ?= 1
PORT ?= 5000
# The port of make ui: the links every run and sweep prints open there.
export SEGLAB_UI_PORT := $(PORT)
# JupyterLab refuses to start as root (containers, CI machines) unless told to.
JUPYTER_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
# Test processes: the suite's fixed costs (imports, subprocess runs, sqlite) overlap on two.
TEST_WORKERS ?= 2
LINT_PATHS := $(wildcard src tests benchmarks)

.DEFAULT_GOAL := help
.PHONY: help install lock demo report stats notebook test test-cpu-paths lint docs mutate planted \
	format ui bench clean test-cluster

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## Create .venv: the locked versions, then seglab itself (idempotent)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
ifneq ($(strip $(LOCK)),)
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
else
	$(PY) -m pip install --quiet -e '.[dev]'
endif
	touch $(STAMP)

lock: ## Re-resolve requirements.lock: the newest versions pyproject.toml allows
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --upgrade --extra dev --strip-extras --no-emit-index-url \
		--no-emit-find-links --output-file requirements.lock pyproject.toml

demo: install ## Sweep loss {ce,dice} x class_weights {none,median_frequency}; print the report
	$(VENV)/bin/seglab train experiment=demo
	@echo "The links above open in the MLflow UI that make ui PORT=$(PORT) serves"

stats: install ## Class pixel shares and image counts: make stats ARGS="data=folder data.root=..."
	$(VENV)/bin/seglab stats hydra.run.dir=outputs/stats $(ARGS)

report: install ## Report on a sweep: make report SWEEP=outputs/sweeps/<time> (default: latest)
	$(VENV)/bin/seglab report $(SWEEP)

notebook: install ## Open the per-class IoU notebook in JupyterLab (installs the notebook extra)
	$(PY) -m pip install --quiet -e '.[notebook]'
	$(VENV)/bin/jupyter lab $(JUPYTER_ROOT) notebooks/per_class_iou_analysis.ipynb

test: install lint docs ## Lint, build the docs strictly, run the whole test suite (what CI runs)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not cluster"

test-cluster: install ## The sweeps on real SLURM (SLURM_CONF, SEGLAB_TEST_SLURM_PARTITION) and Ray clusters
	$(PY) -m pytest -m cluster

# oneDNN picks its kernels by instruction set, so other CPUs round differently: cap it to the
# paths of other machines (a cap above this CPU's own set changes nothing), then TF's own kernels.
CPU_PATHS := ONEDNN_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX512_CORE TF_ENABLE_ONEDNN_OPTS=0
test-cpu-paths: install ## The suite once per CPU path other machines take (oneDNN AVX2, AVX-512, off)
	@for path in $(CPU_PATHS); do \
	  echo "[test-cpu-paths] $$path"; \
	  env $$path $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -q -p no:cacheprovider || exit 1; \
	done

lint: install ## ruff check, ruff format --check, mypy on src/ (--strict on core, losses, schema)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy src/seglab
	$(VENV)/bin/mypy --strict src/seglab/core src/seglab/losses src/seglab/schema.py

docs: install ## Build the documentation site into outputs/site (mkdocs --strict)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

mutate: install ## Mutation testing of the numbers' core ([tool.mutmut]); lists the survivors
	rm -rf mutants
	$(VENV)/bin/mutmut run > outputs/mutmut.log 2>&1 || (tail -20 outputs/mutmut.log; exit 1)
	$(PY) tests/mutation_recheck.py

planted: install ## Plant the listed one-line bugs in the slow-tested modules; each must be caught
	$(PY) tests/planted_bugs.py

format: install ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

bench: install ## Run benchmarks/*.py; JSON + markdown in benchmarks/results/
	cd benchmarks && for script in $$(ls *.py | grep -v common.py); do \
		../$(PY) $$script || exit 1; done
	cat $$(ls benchmarks/results/*.md | grep -v SUMMARY.md) > benchmarks/results/SUMMARY.md

ui: install ## MLflow UI on outputs/mlflow.db at PORT (5000); first prints each experiment's page and its latest sweep's verdict
	@$(PY) -m seglab.analysis.overview sqlite:///$(CURDIR)/outputs/mlflow.db
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db \
		--host 127.0.0.1 --port $(PORT)

clean: ## Remove runs, sweeps and the MLflow store under outputs/
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
