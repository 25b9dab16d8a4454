# Set-up and main entry points. Every target creates .venv with the tested versions when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test docs clean-venv browser

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) tools/demo.py

test: $(VENV)/.installed browser
	$(PY) -m pytest -q tests

# Headless Chromium + its driver for the search page's browser test (Debian packages; needs root).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "Installing chromium and chromium-driver for the browser test (apt-get)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver >/dev/null \
		|| echo "warning: could not install chromium/chromium-driver; the browser test will fail"; \
	fi

docs: $(VENV)/.installed
	$(PY) tools/gen_config_docs.py

clean-venv:
	rm -rf $(VENV)
