# One entry point for people, VS Code tasks and CI. `make run` and `make test` set everything up from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-done
NPM_STAMP := node_modules/.setup-done

SOLUTION := iot-edge-solution
LIB := $(SOLUTION)/libs/edgevision
EMULATOR := tools/edgehub-emulator
FRONTEND := $(SOLUTION)/frontend
MODULE_REQS := $(wildcard $(SOLUTION)/modules/*/requirements.txt)
SETUP_INPUTS := requirements-dev.txt $(LIB)/pyproject.toml $(MODULE_REQS) $(wildcard $(EMULATOR)/pyproject.toml) \
	$(FRONTEND)/pyproject.toml

# Local defaults for `make run`; override on the command line, e.g. `make run CAMERA_PATH=/dev/video0`.
CAMERA_PATH ?= $(SOLUTION)/media/demo.mp4
MODEL_NAME ?= efficientnet-lite0
MODEL_REPOSITORY ?= $(SOLUTION)/models
USE_TENSOR_RT ?= False

PY_SOURCES := $(LIB)/src $(LIB)/tests $(SOLUTION)/modules $(FRONTEND)/src $(FRONTEND)/tests tools bench tests

# iotedgedev (deployment manifests, module images) pins old dependencies: it gets its own environment.
IOTEDGEDEV_VENV ?= .venv-iotedgedev
IOTEDGEDEV_STAMP := $(IOTEDGEDEV_VENV)/.setup-done
# iotedgedev 3.3.9 needs Python >= 3.11: take the first such interpreter on PATH (PYTHON may be 3.10).
IOTEDGEDEV_PYTHON ?= $(firstword $(foreach candidate,$(PYTHON) python3.12 python3.11 python3.13,\
	$(shell $(candidate) -c 'import sys; print("$(candidate)" if sys.version_info >= (3, 11) else "")' 2>/dev/null)))
DOCKERFILES := .devcontainer/Dockerfile $(wildcard $(SOLUTION)/modules/*/Dockerfile.*)
PLATFORM ?=

.PHONY: iotedgedev-setup genconfig

.PHONY: help setup run test lint coverage format clean emulator emulator-up emulator-env

# The local edgeHub emulator (tools/edgehub-emulator): its state folder, and the module `make emulator-env` is for.
EMULATOR_STATE ?= .edgehub-emulator
MODULE ?= classifier

help:
	@echo "make run       set up, then run the classifier on the demo video (Ctrl-C stops it)"
	@echo "make test      set up, then run every test"
	@echo "make lint      pylint on all Python code"
	@echo "make coverage  tests with coverage: terminal, htmlcov/ and coverage.xml"
	@echo "make format    ruff format"
	@echo "make clean     remove the virtual environment and caches"
	@echo "make emulator  the local IoT Hub / edgeHub emulator for deployment.template.json (Ctrl-C stops it)"
	@echo "make emulator-up   the emulator and every module of deployment.template.json as local processes"
	@echo "make emulator-env [MODULE=classifier]  write .vscode/MODULE.env: what a module needs to reach the emulator"
	@echo "make frontend  the sign-in web front-end against the local emulator and Azurite (prints the demo user)"
	@echo "make frontend-env  write .vscode/frontend.env: the emulator's service connection string and CA"
	@echo "make iotedgedev-setup  iotedgedev in its own environment, $(IOTEDGEDEV_VENV)"
	@echo "make genconfig [PLATFORM=amd64|arm64v8]  expand both deployment templates into iot-edge-solution/config/"

setup: $(STAMP) $(NPM_STAMP)

# Azurite (local Azure Storage), pinned in package-lock.json, installed into ./node_modules.
$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: Node.js >= 18 and npm are needed for Azurite, the local Azure" \
		"Storage (Debian/Ubuntu: sudo apt-get install nodejs npm; macOS: brew install node; the dev container has" \
		"them)" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(STAMP): $(SETUP_INPUTS)
	@echo "== setting up $(VENV) with $$($(PYTHON) --version)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt -e "$(LIB)[dev]" $(addprefix -r ,$(MODULE_REQS)) \
		$(if $(wildcard $(EMULATOR)/pyproject.toml),-e "$(EMULATOR)") -e "$(FRONTEND)[dev]"
	@touch $@

run: setup
	CAMERA_PATH="$(CAMERA_PATH)" MODEL_NAME="$(MODEL_NAME)" MODEL_REPOSITORY="$(MODEL_REPOSITORY)" \
	USE_TENSOR_RT="$(USE_TENSOR_RT)" $(PY) $(SOLUTION)/modules/classifier/main.py

iotedgedev-setup:
	@if [ -n "$(IOTEDGEDEV_PYTHON)" ]; then $(MAKE) --no-print-directory $(IOTEDGEDEV_STAMP); \
	elif [ -n "$$CI" ]; then echo "iotedgedev needs Python >= 3.11 and none is on PATH" >&2; exit 1; \
	else echo "warning: iotedgedev needs Python >= 3.11 and none is on PATH (set IOTEDGEDEV_PYTHON):" \
		"make genconfig and its tests are unavailable" >&2; fi

$(IOTEDGEDEV_STAMP): tools/iotedgedev/requirements.txt
	@echo "== setting up $(IOTEDGEDEV_VENV) (iotedgedev) with $$($(IOTEDGEDEV_PYTHON) --version)"
	$(IOTEDGEDEV_PYTHON) -m venv $(IOTEDGEDEV_VENV)
	$(IOTEDGEDEV_VENV)/bin/python -m pip install --quiet -r tools/iotedgedev/requirements.txt
	@touch $@

genconfig: iotedgedev-setup
	IOTEDGEDEV_VENV="$(IOTEDGEDEV_VENV)" tools/iotedgedev/genconfig.sh $(PLATFORM)

test: setup iotedgedev-setup
	$(PY) -m pytest $(PYTEST_ARGS)

coverage: setup iotedgedev-setup
	$(PY) -m pytest --cov --cov-report=term --cov-report=html --cov-report=xml $(PYTEST_ARGS)

lint: setup
	$(PY) -m pylint $(PY_SOURCES)
	$(VENV)/bin/hadolint $(DOCKERFILES)

format: setup
	$(PY) -m ruff format $(PY_SOURCES)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache htmlcov coverage.xml .coverage

emulator: setup
	$(VENV)/bin/edgehub-emulator start --manifest $(SOLUTION)/deployment.template.json --state $(EMULATOR_STATE)

emulator-up: setup
	$(VENV)/bin/edgehub-emulator up $(SOLUTION)/deployment.template.json --state $(EMULATOR_STATE)

# Holds the module's key: .vscode/*.env is git-ignored.
emulator-env: setup
	@mkdir -p .vscode
	$(VENV)/bin/edgehub-emulator env $(MODULE) --state $(EMULATOR_STATE) > .vscode/$(MODULE).env
	@echo "wrote .vscode/$(MODULE).env"

# The sign-in web front-end (iot-edge-solution/frontend) against the local emulator and Azurite: `make emulator-up`
# in another terminal runs the hub, Azurite and the device's modules. .env (if any) first, then the emulator's
# service connection string and CA (the same for every module; read from authrequest's environment).
FRONTEND_SERVICE_ENV = $(VENV)/bin/edgehub-emulator env authrequest --state $(EMULATOR_STATE)
FRONTEND_SERVICE_VARS = (IOTHUB_CONNECTION_STRING|REQUESTS_CA_BUNDLE)=

.PHONY: frontend frontend-env
frontend: setup
	@set -a; if [ -f .env ]; then . ./.env; fi; set +a; \
	eval "$$($(FRONTEND_SERVICE_ENV) --format shell | grep -E '^export $(FRONTEND_SERVICE_VARS)')"; \
	$(VENV)/bin/frontend users ensure-demo && exec $(VENV)/bin/frontend serve

# Holds the service key: .vscode/*.env is git-ignored. Used by the launch configuration "frontend: debug".
frontend-env: setup
	@mkdir -p .vscode
	$(FRONTEND_SERVICE_ENV) | grep -E '^$(FRONTEND_SERVICE_VARS)' > .vscode/frontend.env
	@echo "wrote .vscode/frontend.env"
