# Every target creates the virtual environment it needs, so a fresh clone runs any of them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint demo bench package clean

# Everything `make test`, `lint`, `bench` and `package` use: the project with its test extras
# (pytest, the official SDKs the signers are checked against, ruff, ...).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# What `make demo` runs and nothing more: the project and its run-time dependencies, so a fresh
# clone's first demo installs a handful of packages, not the test extras and both SDKs. A venv
# that `make test` already filled serves as it is.
DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e .
	touch $(DEMO_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The current workflow API, DWR; `make demo API=obs` shows the same story on the OBS one.
# `make demo SCENARIO=outage` shows outage mode instead: a broken downstream, the breaker opening
# and closing, every held failure restored once (about 25 s: the shortest breaker cooldown);
# `make demo SCENARIO=give-up` the give-up message that reaches the operators' SMN topic.
API ?= dwr
SCENARIO ?= restore

demo: $(if $(wildcard $(STAMP)),$(STAMP),$(DEMO_STAMP))
	$(BIN)/python -m handler.devtools.demo --api $(API) --scenario $(SCENARIO)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# The FunctionGraph runtime every function runs on, stated here once: `make package` builds
# for it, and tests check that pyproject's requires-python and template.yaml's runtimes agree.
# `make package PYTHON_VERSION=3.12` builds for Python3.12 (set the template's runtime to match).
PYTHON_VERSION ?= 3.10

# The two code packages, with dependencies resolved for that runtime; needs the package index
# (pip). Each is left unpacked in the folder template.yaml deploys (build/restore-event/,
# build/restore-http/: the fgs component zips a folder itself) and as a zip for the console.
package: $(STAMP)
	$(BIN)/python scripts/build_package.py --python-version $(PYTHON_VERSION) --out build

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
