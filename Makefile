# Two commands do all the set-up on a fresh machine:
#   make train   virtual environment, install, Fashion-MNIST, then train BiGAN (configs/bigan.yaml)
#   make test    the same set-up, then the test suite
# and one keeps the code tidy (CI runs it before the tests):
#   make lint    virtual environment, install (ruff comes with the dev extra), then `ruff check .`
#                (rules and line length in pyproject.toml's [tool.ruff]; `.venv/bin/ruff check --fix .` fixes most)
# Extra arguments: make train ARGS="--trainer.max_epochs 1"   make test PYTEST_ARGS="-m 'not slow'"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
ARGS ?=
PYTEST_ARGS ?=

.PHONY: train test lint install data benchmark clean

train: install data
	$(BIN)/python -m gan_lightning fit --config configs/bigan.yaml --data.init_args.data_dir $(DATA_DIR) $(ARGS)

test: install data
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

benchmark: install data
	$(BIN)/python benchmarks/throughput.py --data-dir $(DATA_DIR)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# Fashion-MNIST: from $(DATA_DIR) if there, else Debian's dataset-fashion-mnist (installed here when
# apt-get is available with root or passwordless sudo), else torchvision's download.
data: install
	@if [ ! -e $(DATA_DIR)/FashionMNIST/raw/train-images-idx3-ubyte ] \
	    && [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else SUDO=skip; fi; \
	  if [ "$$SUDO" != skip ]; then \
	    echo "Installing Debian's dataset-fashion-mnist"; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null || true; \
	  fi; \
	fi
	@$(BIN)/python -c "from gan_lightning.data import GANDataModule; \
	  GANDataModule('fashion_mnist', data_dir='$(DATA_DIR)').prepare_data(); \
	  print('Fashion-MNIST ready in $(DATA_DIR)/FashionMNIST/raw')"

clean:
	rm -rf $(VENV) runs
