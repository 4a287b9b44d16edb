# The user's verbs. `make help` lists every target with its one-line description.
# Area-specific targets live in mk/*.mk and are included below.
SHELL := /bin/sh
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TOOLS ?= .tools
MODE ?= local
# Empty: the trainer's own rule picks config/$(MODE).yaml; CONFIG=my.yaml passes --config my.yaml.
CONFIG ?=
ARGS ?=

export PATH := $(CURDIR)/$(TOOLS)/bin:$(PATH)

.PHONY: help
help: ## Show every target with its one-line description
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST) | sort

include mk/*.mk
