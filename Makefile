# Set-up and main entry points. Every target creates .venv with the tested versions when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test docs clean-venv

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) tools/demo.py

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

docs: $(VENV)/.installed
	$(PY) tools/gen_config_docs.py

clean-venv:
	rm -rf $(VENV)
