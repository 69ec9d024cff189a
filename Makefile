# The two commands. Both create .venv when it is missing and install from
# project files only, so a fresh clone needs nothing but Python 3.11.
# Another interpreter gets its own environment beside the default one, e.g.
# `make test PYTHON=python3.13 VENV=.venv-3.13`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint chaos clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# Stamps re-run the install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/bupmesh demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The web UI's browser test drives Debian's Chromium (never a downloaded browser), and
# its Chinese page needs CJK fonts to render (Debian's Noto CJK). Both are installed
# from the distribution when missing; CI runs as root on a clean Debian.
CHROMIUM := /usr/bin/chromium
CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc

browser: $(CHROMIUM) $(CJK_FONT)

$(CHROMIUM):
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

$(CJK_FONT):
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fonts-noto-cjk

test: $(VENV)/.installed-test $(CHROMIUM) $(CJK_FONT)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# The long chaos campaign (tests/chaos, docs/internals.md): 20 fresh random seeds,
# or replay given ones with SEEDS="3 17". Each seed is a 1-2 minute run with real processes.
# Its own --basetemp: a failing seed's logs and files stay there, and other pytest runs
# (which prune the shared /tmp/pytest-of-$USER) cannot delete them mid-campaign.
SEEDS ?=
CHAOS_COUNT ?= 20
CHAOS_TMP ?= /tmp/bupmesh-chaos
chaos: $(VENV)/.installed-test
	CHAOS_LONG=1 CHAOS_SEEDS="$(SEEDS)" CHAOS_COUNT=$(CHAOS_COUNT) \
		$(BIN)/python -m pytest tests/chaos -m chaos -s -p no:cacheprovider --basetemp=$(CHAOS_TMP)

clean:
	rm -rf $(VENV) build *.egg-info
