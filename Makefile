# The two Quickstart commands: `make demo` (set up, then the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ENV_ID ?= RNP-CIFAR10-v0

# Beside a project checkout the real CIFAR-10/MNIST subsets live in ../shared/data; use them when
# present (a user's machine downloads the full datasets with torchvision instead).
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/cifar10-subset.npz),)
export PRUNE_GYM_DATA ?= $(SHARED_DATA)
endif

.PHONY: install demo bench test lint weights
install: $(BIN)/prune-gym

$(BIN)/prune-gym: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev,ray]"
	touch $@

# The main job: load the backbone (shipped with the package, else cached or pretrained now), train
# the custom RNP DQN with its defaults, and evaluate it on the test split against the full backbone.
demo: install
	$(BIN)/prune-gym envs
	$(BIN)/prune-gym pretrain $(ENV_ID)
	rm -rf runs/demo
	$(BIN)/prune-gym train $(ENV_ID) --algo rnp-dqn --out runs/demo
	$(BIN)/prune-gym evaluate runs/demo --json runs/demo/evaluation.json

bench: install
	$(BIN)/prune-gym bench $(ENV_ID) --json bench.json

test: install
	$(BIN)/python -m pytest

# Regenerate the pretrained weights shipped in prune_gym/pretrained/ (loads each backbone from the
# weights cache, else trains it on $(PRUNE_GYM_DATA)); `make weights ONLY=cnn4-mnist` for one.
weights: install
	$(BIN)/prune-gym ship-weights $(if $(ONLY),--only $(ONLY))

lint: install
	$(BIN)/ruff check prune_gym agents baselines tests
