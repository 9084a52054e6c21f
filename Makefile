# The two commands of the README. Everything else is a detail of these two.
#   make demo  — install spargo into .venv and run the main job (in-process simulator)
#   make test  — install the dev extra, Mosquitto and a headless Chromium, then format, lint,
#                types, imports, tests
# And one for releases: make test-matrix — the tests on every supported Python installed here.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch 2.13.0 lies on the project's machines; pin it for our own venv so pip
# never pulls a CUDA build (the package itself asks for a range: torch>=2.13,<3).
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: demo test test-matrix

demo:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP_INSTALL) torch==2.13.0
	@$(PIP_INSTALL) -e '.[sim]'
	$(BIN)/spargo sim

test:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP_INSTALL) torch==2.13.0
	@$(PIP_INSTALL) -e '.[dev]'
	@scripts/ensure-mosquitto
	@scripts/ensure-browser
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@test -d tests || { echo "tests/ is missing: refusing to pass without tests" >&2; exit 1; }
	$(BIN)/pytest -q -p no:cacheprovider

test-matrix:
	@scripts/ensure-mosquitto
	scripts/test-matrix
