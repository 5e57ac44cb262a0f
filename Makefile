# Two entry points do all set-up on a fresh clone (see README):
#   make quickstart   -> builds/reuses the virtualenv, runs `lepton-exp experiment=quickstart`
#   make test         -> builds/reuses the virtualenv, runs the default test suite
#
# The virtualenv is ~6 GB (torch), so it lives outside the clone, keyed by a hash of
# pyproject.toml: a clone reuses it until pyproject.toml changes, then a new one is built
# (and older ones are removed). Each clone re-points the editable install at itself (seconds).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
CACHE_DIR ?= $(HOME)/.cache/lepton-exp
DEPS_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-12)
VENV ?= $(CACHE_DIR)/venv-$(DEPS_HASH)
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not slow"
ARGS ?=
# pip's own output goes to $(VENV)/install.log and is printed only if an install fails.
pip_install = @echo '[setup] pip install $(1)'; \
	$(BIN)/python -m pip install $(1) >> "$(VENV)/install.log" 2>&1 \
	|| { cat "$(VENV)/install.log"; exit 1; }

.PHONY: venv quickstart test test-all clean-venvs

# No file prerequisite: a fresh clone has new mtimes; the hash in $(VENV) is what counts.
$(VENV)/.complete:
	@echo "[setup] building virtualenv $(VENV) (first time for this pyproject.toml; ~2 min)"
	@rm -rf "$(VENV)"
	@mkdir -p "$(CACHE_DIR)"
	@$(PYTHON) -m venv "$(VENV)"
	$(call pip_install,--upgrade pip "setuptools>=77" wheel)
	$(call pip_install,torch torchvision)
	$(call pip_install,-e ".[test]")
	@touch "$@"
	@# Old environments of this cache only (never anything beside a VENV given by hand).
	@if [ "$(dir $(VENV))" = "$(CACHE_DIR)/" ]; then \
		for old in "$(CACHE_DIR)"/venv-*; do [ "$$old" = "$(VENV)" ] || rm -rf "$$old"; done; fi

venv: $(VENV)/.complete
	@out=$$($(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1) \
		|| { echo "$$out"; exit 1; }
	@echo "[setup] using $(VENV)"

quickstart: venv
	$(BIN)/lepton-exp experiment=quickstart $(ARGS)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS) $(ARGS)

test-all: venv
	$(BIN)/python -m pytest $(ARGS)

clean-venvs:
	rm -rf "$(CACHE_DIR)"/venv-*
