# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install cnnspec with every extra, run the main job on a bundled spec
#   make test   the same set-up, then the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench fuzz lint gpu-check generate editors docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The main job: LeNet-5 on scikit-learn's bundled digits, a few epochs, held-out accuracy printed.
# One thread: LeNet is tiny, and torch's thread pool costs more than it gives on 2 shared cores.
demo: $(STAMP)
	$(BIN)/cnnspec summary specs/lenet5.cnn
	$(BIN)/cnnspec train specs/lenet5.cnn --data digits --epochs 5 --out runs/demo --threads 1 --progress off --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# On a machine with a GPU: CUDA training, mixed precision, NCCL, resnet50 against torchvision
# (prints "no CUDA, skipped" elsewhere).
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py

# The full-length DCGAN and VAE runs on digits, their samples judged (~2.5 min).
generate: $(STAMP)
	$(BIN)/python examples/generate_digits.py

fuzz: $(STAMP)
	$(BIN)/python tests/fuzzing.py 100000

# Run by CI before the tests: the whole tree passes ruff's lint and is in ruff's format.
lint: $(STAMP)
	$(BIN)/ruff check cnnspec tests bench examples
	$(BIN)/ruff format --check cnnspec tests bench examples

# Generated artefacts are rebuilt here, never by hand; a test fails while one is stale.
editors: $(STAMP)
	$(BIN)/python -m cnnspec.textmate > editors/cnnspec.tmLanguage.json.tmp
	mv editors/cnnspec.tmLanguage.json.tmp editors/cnnspec.tmLanguage.json

# The README's table of layer kinds, from the registry (tests/test_reference.py checks it).
docs: $(STAMP)
	$(BIN)/python -m cnnspec.reference README.md

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
