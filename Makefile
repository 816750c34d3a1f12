# One entry point for people, VS Code tasks and CI. `make run` and `make test` set everything up from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The stamp records the interpreter .venv was built with (real path and version).
STAMP := $(VENV)/.setup-done
NPM_STAMP := node_modules/.setup-done
SUPPORTED_PYTHONS := 3.10 3.11 3.12
# PYTHON not chosen on the command line or in the environment: keep the interpreter .venv was built with.
ifeq ($(origin PYTHON),file)
RECORDED_PYTHON := $(firstword $(shell cat $(STAMP) 2>/dev/null))
ifneq ($(wildcard $(RECORDED_PYTHON)),)
PYTHON := $(RECORDED_PYTHON)
endif
endif
PYTHON_ID := $(shell $(PYTHON) -c 'import os, sys; print(os.path.realpath(sys.executable), "%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)
PYTHON_VERSION := $(basename $(word 2,$(PYTHON_ID)))
# Another interpreter than the one recorded: set up again (the recipe starts from an empty .venv).
ifneq ($(PYTHON_ID),$(shell cat $(STAMP) 2>/dev/null))
.PHONY: $(STAMP)
endif

SOLUTION := iot-edge-solution
LIB := $(SOLUTION)/libs/edgevision
EMULATOR := tools/edgehub-emulator
FRONTEND := $(SOLUTION)/frontend
MODULE_REQS := $(wildcard $(SOLUTION)/modules/*/requirements.txt)
# Every version comes from the lock (requirements/lock.txt, `make lock`); the projects of this repository are
# installed from the working tree on top, without dependencies of their own.
LOCK := requirements/lock.txt
SETUP_INPUTS := $(LOCK) requirements-dev.txt $(LIB)/pyproject.toml $(MODULE_REQS) $(wildcard $(EMULATOR)/pyproject.toml) \
	$(FRONTEND)/pyproject.toml

# Local defaults for `make run`; override on the command line, e.g. `make run CAMERA_PATH=/dev/video0`.
CAMERA_PATH ?= $(SOLUTION)/media/demo.mp4
MODEL_NAME ?= efficientnet-lite0
MODEL_REPOSITORY ?= $(SOLUTION)/models
USE_TENSOR_RT ?= False

PY_SOURCES := $(LIB)/src $(LIB)/tests $(SOLUTION)/modules $(FRONTEND)/src $(FRONTEND)/tests tools bench tests conftest.py

# iotedgedev (deployment manifests, module images) pins old dependencies: it gets its own environment.
IOTEDGEDEV_VENV ?= .venv-iotedgedev
IOTEDGEDEV_STAMP := $(IOTEDGEDEV_VENV)/.setup-done
# iotedgedev 3.3.9 needs Python >= 3.11: take the first such interpreter on PATH (PYTHON may be 3.10).
IOTEDGEDEV_PYTHON ?= $(firstword $(foreach candidate,$(PYTHON) python3.12 python3.11 python3.13,\
	$(shell $(candidate) -c 'import sys; print("$(candidate)" if sys.version_info >= (3, 11) else "")' 2>/dev/null)))
DOCKERFILES := .devcontainer/Dockerfile $(wildcard $(SOLUTION)/modules/*/Dockerfile.*)
PLATFORM ?=

.PHONY: iotedgedev-setup genconfig node-setup lock images-check images

# The Node.js module of the emulator's tests (a second SDK): its npm packages, installed from package-lock.json.
NODE_TEST := $(EMULATOR)/tests/node
NODE_STAMP := $(NODE_TEST)/node_modules/.install-done

.PHONY: chaos
.PHONY: help setup run run-classifier test lint coverage format clean reset emulator emulator-up emulator-env emulator-status

# All local state of a user's runs (the emulator's hub and Azurite data, the classifier's model store and engine
# cache, the alert queue, the front-end's users) lives under STATE; `make clean` (or `make reset`, which keeps the
# environments) removes it. The module `make emulator-env` is for.
STATE ?= .state
EMULATOR_STATE ?= $(STATE)/edgehub-emulator
# where earlier versions kept local state, and where a bare `edgehub-emulator up` (without make) keeps the
# modules' state (.env_template's paths, relative to the module folders): `make clean` and `make reset` remove it
OLD_STATE := .edgehub-emulator .model-store $(SOLUTION)/modules/classifier/.model-store \
	$(SOLUTION)/modules/alert/alert-queue $(SOLUTION)/model-store $(SOLUTION)/engine-cache $(SOLUTION)/alert-queue \
	$(SOLUTION)/authrequest-state
MODULE ?= classifier

help:
	@echo "make setup     everything make run and make test need: .venv (PYTHON=python3.10|3.11|3.12), Azurite, iotedgedev, Node test packages"
	@echo "make run       set up, then the whole solution: Azurite, the hub with every module, the front-end (Ctrl-C stops all)"
	@echo "               module settings on the command line: make run CAMERA_PATH=/dev/video0 MODEL_NAME=nanodet-m-416;"
	@echo "               VERBOSE=1: a line per frame and the Azure SDKs' logs"
	@echo "make run-classifier  set up, then only the classifier on the demo video (CAMERA_PATH=, MODEL_NAME=, ...)"
	@echo "make test      set up, then run every test (tests/chaos too)"
	@echo "make chaos     the whole solution under injected faults (tests/chaos; run it inside unshare --net)"
	@echo "make lint      pylint on all Python code, hadolint on the Dockerfiles, ruff format --check"
	@echo "make coverage  tests with coverage, subprocesses included: terminal, htmlcov/ and coverage.xml"
	@echo "make format    ruff format (the version pinned in requirements-dev.txt)"
	@echo "make clean     remove the virtual environments, the local state ($(STATE)/), node_modules and caches"
	@echo "make reset     remove only the local state ($(STATE)/: hub, Azurite data, model store, alert queue, users)"
	@echo "make emulator  the local IoT Hub / edgeHub emulator for deployment.template.json (Ctrl-C stops it)"
	@echo "make emulator-up   the emulator, Azurite and every module of deployment.template.json as local processes"
	@echo "                   DEVICES=\"lobby garage\" or FLEET=fleet.json: a local fleet (make emulator-status: who serves what)"
	@echo "make emulator-env [MODULE=classifier]  write .vscode/MODULE.env: what a module needs to reach the emulator"
	@echo "make frontend  the sign-in web front-end against the local emulator and Azurite (prints the demo user)"
	@echo "make frontend-env  write .vscode/frontend.env: the emulator's service connection string and CA"
	@echo "make iotedgedev-setup  iotedgedev in its own environment, $(IOTEDGEDEV_VENV)"
	@echo "make genconfig [PLATFORM=amd64|amd64.gpu|arm64v8]  expand both deployment templates into iot-edge-solution/config/"
	@echo "make deploy DEVICE=id | TARGET_CONDITION=\"tags.site='lobby'\" [PRIORITY= LAYERED=1 DEPLOYMENT_ID= LABELS=\"k=v ...\""
	@echo "            METRICS=\"name=SELECT ...;name2=SELECT ...\" WAIT=1 TIMEOUT= MANIFEST= PLATFORM=]"
	@echo "            deploy to IOTHUB_CONNECTION_STRING (default: the local emulator)"
	@echo "make deployments   list the hub's deployments with their system metrics"
	@echo "make lock      resolve requirements/lock.txt and the images' iot-edge-solution/requirements/*.txt again (uv)"
	@echo "make images-check  build and run every module's amd64 image and the dev container with buildah (no Docker)"
	@echo "make images [PLATFORMS=linux/amd64,linux/arm64] [PUSH=1]  every module image with docker buildx bake"

# Everything `make run` and `make test` need, so that both then run without a network.
setup: $(STAMP) $(NPM_STAMP) iotedgedev-setup node-setup

# Azurite (local Azure Storage), pinned in package-lock.json, installed into ./node_modules.
$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: Node.js >= 18 and npm are needed for Azurite, the local Azure" \
		"Storage (Debian/Ubuntu: sudo apt-get install nodejs npm; macOS: brew install node; the dev container has" \
		"them)" >&2; exit 1; }
	@echo "== installing Azurite (npm ci)"
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(STAMP): $(SETUP_INPUTS)
	@if [ -z "$(PYTHON_ID)" ]; then \
		echo "error: PYTHON=$(PYTHON) is not a Python interpreter on PATH; choose one, e.g. make setup PYTHON=python3.12" >&2; \
		exit 1; fi
	@if [[ " $(SUPPORTED_PYTHONS) " != *" $(PYTHON_VERSION) "* ]]; then \
		echo "error: PYTHON=$(PYTHON) is Python $(PYTHON_VERSION); this project needs $(SUPPORTED_PYTHONS):" \
			"choose one, e.g. make setup PYTHON=python3.12" >&2; exit 1; fi
	@if [[ -e $(VENV) && "$$(cat $@ 2>/dev/null)" != "$(PYTHON_ID)" ]]; then \
		echo "== $(VENV) is not a finished set-up with $(PYTHON_ID): building it again"; rm -rf $(VENV); fi
	@echo "== setting up $(VENV) with Python $(PYTHON_VERSION) ($(firstword $(PYTHON_ID)))"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@echo "== installing the library, the modules' requirements, the emulator, the front-end and the dev tools" \
		"(a minute or two; pip names each download)"
	$(PIP) install --progress-bar off --require-hashes --no-deps -r $(LOCK)
	$(PIP) install --quiet --no-deps -e "$(LIB)" $(if $(wildcard $(EMULATOR)/pyproject.toml),-e "$(EMULATOR)") \
		-e "$(FRONTEND)" -e tools/testkit
	$(PIP) check
	@echo "$(PYTHON_ID)" > $@

# The whole solution: Azurite, the edgeHub emulator with every module of deployment.template.json, the sign-in
# front-end; prints the URLs and a demo user. Ctrl-C, or SIGINT/SIGTERM to make, stops everything. SDK_LOGS=1 keeps
# the Azure SDKs' INFO lines; VERBOSE=1 also a line per frame. Module settings given on the command line
# (make run CAMERA_PATH=...) go to the modules that read them (tools/solution_up.py prints the precedence).
run: setup
	$(PY) tools/solution_up.py --state $(EMULATOR_STATE) --local-state $(STATE) --frontend \
		$(if $(SDK_LOGS),--sdk-logs) $(if $(VERBOSE),--verbose) -- \
		$(VENV)/bin/edgehub-emulator up $(SOLUTION)/deployment.template.json --state $(EMULATOR_STATE)

# One module on its own: a line per frame (LOG_EVERY_FRAME=False for the periodic status only), its model store
# in $(STATE).
LOG_EVERY_FRAME ?= True
run-classifier: setup
	CAMERA_PATH="$(CAMERA_PATH)" MODEL_NAME="$(MODEL_NAME)" MODEL_REPOSITORY="$(MODEL_REPOSITORY)" \
	USE_TENSOR_RT="$(USE_TENSOR_RT)" LOG_EVERY_FRAME="$(LOG_EVERY_FRAME)" \
	MODEL_STORE="$${MODEL_STORE:-$(STATE)/classifier/model-store}" \
	ENGINE_CACHE_DIR="$${ENGINE_CACHE_DIR:-$(STATE)/classifier/engine-cache}" \
	$(PY) $(SOLUTION)/modules/classifier/main.py

iotedgedev-setup:
	@if [ -n "$(IOTEDGEDEV_PYTHON)" ]; then $(MAKE) --no-print-directory $(IOTEDGEDEV_STAMP); \
	elif [ -n "$$CI" ]; then echo "iotedgedev needs Python >= 3.11 and none is on PATH" >&2; exit 1; \
	else echo "warning: iotedgedev needs Python >= 3.11 and none is on PATH (set IOTEDGEDEV_PYTHON):" \
		"make genconfig and its tests are unavailable" >&2; fi

$(IOTEDGEDEV_STAMP): tools/iotedgedev/requirements.txt
	@echo "== setting up $(IOTEDGEDEV_VENV) (iotedgedev) with $$($(IOTEDGEDEV_PYTHON) --version)"
	$(IOTEDGEDEV_PYTHON) -m venv $(IOTEDGEDEV_VENV)
	$(IOTEDGEDEV_VENV)/bin/python -m pip install --progress-bar off -r tools/iotedgedev/requirements.txt
	@touch $@

node-setup:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory $(NODE_STAMP); \
	elif [ -n "$$CI" ]; then echo "npm is needed for the emulator's Node.js module test" >&2; exit 1; \
	else echo "warning: npm is not on PATH: the emulator's Node.js module test will be skipped" >&2; fi

$(NODE_STAMP): $(NODE_TEST)/package-lock.json
	@echo "== installing the Node.js packages of the emulator's Node.js module test (npm ci)"
	cd $(NODE_TEST) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

genconfig: iotedgedev-setup
	IOTEDGEDEV_VENV="$(abspath $(IOTEDGEDEV_VENV))" tools/iotedgedev/genconfig.sh $(PLATFORM)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The whole solution under injected faults alone (tests/chaos, part of make test too; a few minutes; CHAOS_SEED=N
# replays a run, the default is a fixed seed). Needs the
# fixed ports of `make run`: as root, `unshare --net bash -c 'ip link set lo up; make chaos'`.
chaos: setup
	$(PY) -m pytest -m chaos tests/chaos $(PYTEST_ARGS)

# pyproject.toml's [tool.coverage.run] patch = ["subprocess"] measures the processes tests start (the emulator,
# the CLIs, the modules) too; pytest-cov combines their data files into the report.
coverage: setup
	rm -f .coverage .coverage.*
	$(PY) -m pytest --cov --cov-report=term --cov-report=html --cov-report=xml $(PYTEST_ARGS)

lint: setup
	$(PY) -m pylint $(PY_SOURCES)
	$(VENV)/bin/hadolint $(DOCKERFILES)
	$(PY) -m ruff format --check $(PY_SOURCES)

format: setup
	$(PY) -m ruff format $(PY_SOURCES)

clean: reset
	rm -rf $(VENV) $(IOTEDGEDEV_VENV) node_modules $(NODE_TEST)/node_modules .pytest_cache .ruff_cache htmlcov coverage.xml \
		.coverage .coverage.*

# The local state of every earlier run: the hub's devices, twins and messages, Azurite's data, installed model
# versions, undelivered alerts, the front-end's users.
reset:
	rm -rf $(STATE) $(EMULATOR_STATE) $(OLD_STATE)

emulator: setup
	$(VENV)/bin/edgehub-emulator start --manifest $(SOLUTION)/deployment.template.json --state $(EMULATOR_STATE)

# With Azurite (data in $(EMULATOR_STATE)/azurite) and, when .env sets none, a local MODULE_KEY made once into
# $(EMULATOR_STATE)/module-key (see tools/solution_up.py).
emulator-up: setup
	$(PY) tools/solution_up.py --state $(EMULATOR_STATE) --local-state $(STATE) -- \
		$(VENV)/bin/edgehub-emulator up $(SOLUTION)/deployment.template.json --state $(EMULATOR_STATE) \
		$(foreach device,$(DEVICES),--device $(device)) $(if $(FLEET),--fleet "$(FLEET)")

# The hub's devices (with their tags), deployments, modules and the ports each device serves.
emulator-status: setup
	$(VENV)/bin/edgehub-emulator status --state $(EMULATOR_STATE)

# Holds the module's key: .vscode/*.env is git-ignored.
emulator-env: setup
	@mkdir -p .vscode
	$(VENV)/bin/edgehub-emulator env $(MODULE) --state $(EMULATOR_STATE) \
		--manifest $(SOLUTION)/deployment.template.json > .vscode/$(MODULE).env.tmp
	@mv .vscode/$(MODULE).env.tmp .vscode/$(MODULE).env
	@echo "wrote .vscode/$(MODULE).env"

# The sign-in web front-end (iot-edge-solution/frontend) against the local emulator and Azurite: `make emulator-up`
# in another terminal runs the hub, Azurite and the device's modules. .env (if any) first, then the emulator's
# service connection string and CA (the same for every module; read from authrequest's environment).
FRONTEND_SERVICE_ENV = $(VENV)/bin/edgehub-emulator env authrequest --state $(EMULATOR_STATE)
FRONTEND_SERVICE_VARS = (IOTHUB_CONNECTION_STRING|REQUESTS_CA_BUNDLE)=

# Deployments through IoT Hub's service API: to IOTHUB_CONNECTION_STRING from the shell or .env, else to the local
# emulator (its state in EMULATOR_STATE; start it with `make run`, `make emulator-up` or `edgehub-emulator up`).
# `make deploy` options (empty: not given): see `make help` and getting-started/deploy.md
# `make emulator-up` options: a local fleet, DEVICES="lobby garage" or FLEET=fleet.json (each device's tags)
DEVICES ?=
FLEET ?=
MANIFEST ?=
DEVICE ?=
TARGET_CONDITION ?=
PRIORITY ?=
LAYERED ?=
DEPLOYMENT_ID ?=
LABELS ?=
# custom metrics of an at-scale deployment: NAME=QUERY items separated by `;`; these and TARGET_CONDITION are taken
# as written (a `$edgeAgent` in them stays as it is: neither make nor the shell expands it)
METRICS ?=
WAIT ?=
TIMEOUT ?=
# No emulator state (it never ran, or was reset): `edgehub-emulator env` says so, and that one error ends the command.
DEPLOY_HUB_ENV = set -a; if [ -f .env ]; then . ./.env; fi; set +a; \
	if [ -z "$$IOTHUB_CONNECTION_STRING" ]; then \
	hub_env="$$($(VENV)/bin/edgehub-emulator env --state $(EMULATOR_STATE) --format shell)" || exit 2; \
	eval "$$hub_env"; fi
# a variable's value as written (no `$` expanded by make), single-quoted for the shell (its own single quotes escaped)
AS_WRITTEN = '$(subst ','\'',$(value $(1)))'
# METRICS as one single-quoted --metric per `;`-separated item
METRIC_ARGS = $(if $(value METRICS),--metric $(subst ;,' --metric ',$(call AS_WRITTEN,METRICS)))
DEPLOY_ARGS = $(if $(MANIFEST),--manifest "$(MANIFEST)") $(if $(PLATFORM),--platform $(PLATFORM)) \
	$(if $(DEVICE),--device "$(DEVICE)") \
	$(if $(value TARGET_CONDITION),--target-condition $(call AS_WRITTEN,TARGET_CONDITION)) \
	$(if $(PRIORITY),--priority $(PRIORITY)) $(if $(LAYERED),--layered) $(if $(DEPLOYMENT_ID),--id "$(DEPLOYMENT_ID)") \
	$(foreach label,$(LABELS),--label "$(label)") $(METRIC_ARGS) $(if $(WAIT),--wait) $(if $(TIMEOUT),--timeout $(TIMEOUT))

.PHONY: deploy deployments
deploy: setup
	@$(DEPLOY_HUB_ENV); $(VENV)/bin/edgevision deploy $(DEPLOY_ARGS)

deployments: setup
	@$(DEPLOY_HUB_ENV); $(VENV)/bin/edgevision deployments

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

# One lock of pinned versions (with hashes) for .venv, every module image and the dev container; see requirements/.
lock: setup
	UV=$(VENV)/bin/uv tools/images/lock.sh

# Builds and runs the images without a Docker daemon (buildah, vfs storage, chroot isolation) on stand-ins of the
# base images made from Debian's packages (tools/images/make-standin-base.sh): needs root, buildah, debootstrap.
# In CI (CI=true) a missing tool is an error, elsewhere the check says what to install and stops.
# The tools are checked before the set-up, so their absence is what a machine without them hears first.
.PHONY: images-check-tools
images-check-tools:
	@missing="$$(for t in buildah debootstrap unshare; do command -v $$t >/dev/null 2>&1 || printf '%s ' $$t; done)"; \
	if [ -n "$$missing" ]; then \
		echo "images-check needs: $${missing% } (Debian/Ubuntu: sudo apt-get install buildah debootstrap uidmap)" >&2; \
		exit 1; fi

images-check: images-check-tools setup
	tools/images/make-standin-base.sh all
	$(PY) tools/images/images_check.py $(IMAGES_CHECK_ARGS)

# Every module image for every platform in its module.json, and the dev container flavours, with `docker buildx
# bake` (the bake file is generated from module.json; tags as iotedgedev gives them). Refuses without docker/buildx.
PLATFORMS ?= linux/amd64,linux/arm64
# PUSH=1 pushes what was built to the registry
PUSH ?=
images:
	$(PYTHON) tools/images/bake.py --platforms "$(PLATFORMS)" $(if $(PUSH),--push)
