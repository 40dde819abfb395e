# The README's two commands: `make demo` and `make test`.  Both do the whole set-up first:
# a virtualenv in .venv, `pip install -e .[test]`, and Debian's swarp when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install swarp test demo benchmark clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# SWarp is a system program: Debian's package installs it as SWarp, conda's as swarp.
swarp:
	@if command -v SWarp >/dev/null 2>&1 || command -v swarp >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's swarp"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swarp) >/dev/null; \
	else \
		echo "SWarp is not installed: run 'sudo apt-get install swarp' (or conda install -c conda-forge astromatic-swarp)."; \
		echo "Until then Tails re-projects with the slower 'reproject' package."; \
	fi

install: $(STAMP) swarp

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) scripts/demo.py

benchmark: install
	$(PY) scripts/benchmark.py

clean:
	rm -rf demo .pytest_cache
