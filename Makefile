# One entry point. Every target creates (or reuses) the local .venv, so on a fresh machine with
# Python 3.11 `make run` serves the committed model and `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
# The locks (exact versions and hashes) are resolved for Linux x86_64 and Python 3.11, what CI
# and the image run; anywhere else the project's own version ranges are installed.
LOCKED := $(shell $(PYTHON) -c "import platform, sys; print(sys.platform == 'linux' and platform.machine() == 'x86_64' and sys.version_info[:2] == (3, 11))")
PYTEST_ARGS ?=
TRAIN_ARGS ?= --data ../shared/data/mnist.npz
BENCH_ARGS ?=

.PHONY: install run test lint format train evaluate bench lock clean

$(STAMP): pyproject.toml requirements-dev.lock requirements-no-deps.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifeq ($(LOCKED),True)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
else
	$(BIN)/python -m pip install --quiet -e '.[dev]'
endif
	# tensorflow-serving-api asks for the full tensorflow package; tensorflow-cpu serves it.
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-no-deps.lock
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m app

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app model bench cnn_serve
	$(BIN)/hadolint Dockerfile

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

train: $(STAMP)
	$(BIN)/python -m model.train $(TRAIN_ARGS)

evaluate: $(STAMP)
	$(BIN)/python -m model.evaluate model/export/mnist/1 --data ../shared/data/mnist.npz

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Re-resolve both locks to the newest versions the ranges in pyproject.toml allow (needs PyPI).
lock:
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet pip-tools
	$(VENV)-lock/bin/pip-compile --quiet --upgrade --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml
	$(VENV)-lock/bin/pip-compile --quiet --upgrade --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --extra dev --output-file requirements-dev.lock \
		pyproject.toml
	rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
