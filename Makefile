# Every target runs through the project's own virtual environment in .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data demo test lint bench clean

$(PY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch/torchvision pinned explicitly so pip takes the local wheels first.
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[test]'
	touch $(PY)

install: $(PY)

# The demo's data: Debian's package where we can install it; elsewhere torchvision downloads it.
data:
	@if [ ! -d $(FASHION_MNIST) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && apt-get install -y -q dataset-fashion-mnist; fi

demo: install data
	$(PY) -m sweep.demo

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/allocation.py
	$(PY) bench/repair_eval.py
	$(PY) bench/analysis_speed.py
	$(PY) bench/sweep_overhead.py
	$(PY) bench/scale.py

lint: install
	$(VENV)/bin/ruff check sweep analysis tests bench
	$(VENV)/bin/ruff format --check sweep analysis tests bench

clean:
	rm -rf $(VENV) results checkpoints
