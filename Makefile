# Two commands on a fresh machine with only Python 3.11: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: run test test-fast bench lint clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)  ## serve the dashboard on http://127.0.0.1:$(PORT)
	$(BIN)/streamlit run dashboard/app.py --server.address 127.0.0.1 --server.port $(PORT)

test: $(STAMP)  ## the whole suite, browser tests included; prints its wall time and the 15 slowest tests
	@start=$$(date +%s); $(BIN)/python -m pytest tests --timeout=900 -ra --durations=15; code=$$?; \
	  echo "test suite wall time: $$(( $$(date +%s) - start )) s"; exit $$code

test-fast: $(STAMP)  ## skip the slow trainings and the browser
	$(BIN)/python -m pytest tests -m "not slow and not e2e"

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_training.py

lint: $(STAMP)
	$(BIN)/ruff check --line-length 120 engine dashboard tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
