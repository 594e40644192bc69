# enkfrl makefile. `make help` lists the targets.
# PYTHON defaults to the project's venv (created and filled on first use); point it at any
# interpreter that has the project installed:  make PYTHON=/path/to/python test
VENV    ?= .venv
PYTHON  ?= $(VENV)/bin/python
EXP     ?= L96_1
CONFIG  ?= config.yaml
ARGS    ?=
ENKFRL   = $(PYTHON) -m cli.main
# the venv is built only when PYTHON is the venv's own interpreter
SETUP    = $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed,)

.PHONY: help setup test run generate precompute plot bench clear reset

help:           ## list the targets
	@grep -E '^[a-z_]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0     # first, exactly: the CPU wheel
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

setup: $(SETUP) ## create the venv and install the project (automatic for other targets)

test: $(SETUP)  ## run the test suite
	$(PYTHON) -m pytest tests $(ARGS)

run: $(SETUP)   ## the whole pipeline for EXP (default L96_1): generate, precompute, plot
	$(ENKFRL) generate --exp $(EXP) --config $(CONFIG)
	$(ENKFRL) precompute --exp $(EXP) --config $(CONFIG)
	$(ENKFRL) plot --exp $(EXP) --config $(CONFIG) --stage data

generate: $(SETUP)   ## spin-up and start states -> data/EXP/spinup.h5
	$(ENKFRL) generate --exp $(EXP) --config $(CONFIG)

precompute: $(SETUP) ## reference EnKF runs -> data/EXP/paths.h5
	$(ENKFRL) precompute --exp $(EXP) --config $(CONFIG)

plot: $(SETUP)       ## data figures -> logs/EXP/plots/
	$(ENKFRL) plot --exp $(EXP) --config $(CONFIG) --stage data

bench: $(SETUP)      ## speed ratios measured in one run
	$(ENKFRL) bench --config $(CONFIG) $(ARGS)

clear:          ## delete logs/ (runs, plots, TensorBoard)
	rm -rf logs

reset: clear    ## delete logs/ and data/
	rm -rf data
