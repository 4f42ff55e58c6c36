# Every target creates the virtual environment it needs, so a fresh clone runs any of them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint demo bench package clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/python -m handler.demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# The FunctionGraph code package that template.yaml deploys: the handler package, its run-time
# dependencies, `bootstrap` (HTTP function) and `index.py` (event function) at the root.
package:
	rm -rf build/package
	$(PYTHON) -m pip install --quiet --target build/package .
	cp handler/bootstrap build/package/bootstrap
	printf 'from handler.main import handler  # noqa: F401 - FunctionGraph entry index.handler\n' \
		> build/package/index.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
