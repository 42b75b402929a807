# The two commands of the README. Both create the environment on first use.
#   make demo   trains the default federated experiment (FedAvg on the embedded digits, ~15 s on 2 cores)
#   make test   runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,flower]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lightning-fl fit --config configs/fedavg_digits.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/round_overhead.py

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache
