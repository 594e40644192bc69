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

.PHONY: help setup test check run generate precompute train train_one evaluate plot bench faults \
        tensorboard restart_training end_training status clear reset

help:           ## list the targets
	@grep -E '^[a-z_]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.13.0     # first, exactly: the CPU wheel
	$(VENV)/bin/pip install -q -r requirements.lock   # every dependency at its locked version
	$(VENV)/bin/pip install -q --no-deps -e '.[test]'
	touch $@

setup: $(SETUP) ## create the venv from requirements.lock and install the project (automatic for other targets)

test: $(SETUP)  ## run the test suite
	$(PYTHON) -m pytest tests $(ARGS)

check: $(SETUP) ## results/ from the current config.yaml, readme.md from template + results/
	$(PYTHON) scripts/fill_readme.py --check

run: $(SETUP)   ## the whole pipeline for EXP: generate, precompute (training and test split), train, evaluate, plot
	$(ENKFRL) generate --exp $(EXP) --config $(CONFIG)
	$(ENKFRL) precompute --exp $(EXP) --config $(CONFIG)
	$(ENKFRL) train --exp $(EXP) --config $(CONFIG)
	$(ENKFRL) evaluate --exp $(EXP) --config $(CONFIG)
	$(ENKFRL) plot --exp $(EXP) --config $(CONFIG) --stage all

generate: $(SETUP)   ## spin-up and start states -> data/EXP/spinup.h5, test_spinup.h5
	$(ENKFRL) generate --exp $(EXP) --config $(CONFIG)

precompute: $(SETUP) ## reference EnKF runs -> data/EXP/paths.h5, test_paths.h5
	$(ENKFRL) precompute --exp $(EXP) --config $(CONFIG)

train: $(SETUP)      ## train L96_1..3 concurrently (scripts/train_concurrent.sh), in the foreground
	PYTHON=$(PYTHON) CONFIG=$(CONFIG) scripts/train_concurrent.sh

train_one: $(SETUP)  ## train EXP alone
	$(ENKFRL) train --exp $(EXP) --config $(CONFIG)

evaluate: $(SETUP)   ## closed-loop evaluation of EXP's newest run -> metrics.json, eval.h5
	$(ENKFRL) evaluate --exp $(EXP) --config $(CONFIG)

plot: $(SETUP)       ## all figures of EXP: data -> logs/EXP/plots/, train+eval -> newest run folder
	$(ENKFRL) plot --exp $(EXP) --config $(CONFIG) --stage all


tensorboard: $(SETUP) ## TensorBoard over logs/ (port 6006)
	$(PYTHON) -m tensorboard.main --logdir logs --port 6006

restart_training: $(SETUP) ## (re)start `make train` in the background; pid in logs/train.pid
	@mkdir -p logs
	@if [ -f logs/train.pid ] && kill -0 $$(cat logs/train.pid) 2>/dev/null; then \
	    echo "stopping running training (pid $$(cat logs/train.pid))"; kill -- -$$(cat logs/train.pid) 2>/dev/null || kill $$(cat logs/train.pid); sleep 1; fi
	@setsid env PYTHON=$(PYTHON) CONFIG=$(CONFIG) scripts/train_concurrent.sh > logs/train_concurrent.out 2>&1 & echo $$! > logs/train.pid
	@echo "training in the background (pid $$(cat logs/train.pid)); make status / make end_training"

end_training:   ## stop the background training
	@if [ -f logs/train.pid ] && kill -0 $$(cat logs/train.pid) 2>/dev/null; then \
	    kill -- -$$(cat logs/train.pid) 2>/dev/null || kill $$(cat logs/train.pid); echo "stopped pid $$(cat logs/train.pid)"; \
	else echo "no background training running"; fi
	@rm -f logs/train.pid

status:         ## is the background training running; last lines of each log
	@if [ -f logs/train.pid ] && kill -0 $$(cat logs/train.pid) 2>/dev/null; then \
	    echo "running (pid $$(cat logs/train.pid))"; else echo "not running"; fi
	@for f in logs/*_training.log; do [ -f "$$f" ] && { echo "== $$f"; tail -n 3 "$$f"; }; done; true

bench: $(SETUP)      ## speed ratios measured in one run
	$(ENKFRL) bench --config $(CONFIG) $(ARGS)

faults: $(SETUP)     ## the faults table results/faults.json (tests/test_faults.py on the smoke experiment)
	$(PYTHON) scripts/faults_table.py

clear:          ## delete logs/ (runs, plots, TensorBoard)
	rm -rf logs

reset: clear    ## delete logs/ and data/
	rm -rf data
