# Two entry points do all set-up on a fresh clone (see README):
#   make quickstart   -> builds/reuses the virtualenv, runs `lepton-exp experiment=quickstart`
#   make test         -> builds/reuses the virtualenv, runs the default test suite
#
# The virtualenv is ~6 GB (torch), so it lives outside the clone, keyed by a hash of
# pyproject.toml: a clone reuses it until pyproject.toml changes, then a new one is built
# and the cache's other venv-* are removed. Each clone re-points the editable install at
# itself (seconds). VENV=<dir> uses another place; make deletes only inside $(SAFE_ROOT).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
# The only directory whose contents make may delete (not overridable from the command line).
override SAFE_ROOT := $(HOME)/.cache/lepton-exp
DEPS_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-12)
VENV ?= $(SAFE_ROOT)/venv-$(DEPS_HASH)
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not slow"
# test: pytest & co; text: the offline pretrained text teacher; tune: the Optuna sweeper;
# stream: sharded streaming data (LitData); docs: the documentation site (mkdocs);
# deploy: ONNX / ExecuTorch exports and their runtimes
# (a variable: $(call) splits its arguments on literal commas)
EXTRAS := test,text,tune,stream,docs,deploy
ARGS ?=
# pip's own output goes to $(VENV)/install.log and is printed only if an install fails.
pip_install = @echo '[setup] pip install $(1)'; \
	$(BIN)/python -m pip install $(1) >> "$(VENV)/install.log" 2>&1 \
	|| { cat "$(VENV)/install.log"; exit 1; }

.PHONY: venv quickstart test test-all benchmarks clean-venvs

# No file prerequisite: a fresh clone has new mtimes; the hash in $(VENV) is what counts.
$(VENV)/.complete:
	@echo "[setup] building virtualenv $(VENV) (first time for this pyproject.toml; ~2 min)"
	@case "$(VENV)" in \
		"$(SAFE_ROOT)"/venv-*) rm -rf "$(VENV)" ;; \
		*) if [ -e "$(VENV)" ]; then echo "[setup] $(VENV) exists but is not a finished" \
			"lepton-exp venv (no .complete): remove it or pick another VENV" >&2; exit 1; fi ;; \
	esac
	@mkdir -p "$(dir $(VENV))"
	@$(PYTHON) -m venv "$(VENV)"
	$(call pip_install,--upgrade pip "setuptools>=77" wheel)
	$(call pip_install,torch torchvision)
	$(call pip_install,-e ".[$(EXTRAS)]")
	@touch "$@"
	@# Other environments of the cache, only when this one is in it (6 GB each).
	@if [ "$(dir $(VENV))" = "$(SAFE_ROOT)/" ]; then \
		for old in "$(SAFE_ROOT)"/venv-*; do [ "$$old" = "$(VENV)" ] || rm -rf "$$old"; done; fi

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

# results/BENCHMARKS.md (~75 min on 2 cores; data in ../shared/data): see benchmarks/__main__.py
benchmarks: venv
	$(BIN)/python -m benchmarks $(ARGS)

clean-venvs:
	rm -rf "$(SAFE_ROOT)"/venv-*
