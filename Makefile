# Two commands do everything on a fresh Debian 12 machine:
#   make demo   -- the main job on the built-in small world
#   make test   -- the test suite
# Both install the system packages and the virtual environment first, idempotently.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMPS := .stamps

APT_PACKAGES := flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
	sox libsox-fmt-all flac bible-kjv fluidsynth fluid-soundfont-gm timgm6mb-soundfont \
	musescore-general-soundfont-small opus-tools shellcheck chromium

.PHONY: demo test sysdeps venv clean-venv

demo: $(STAMPS)/sysdeps $(STAMPS)/venv
	$(VENV)/bin/audiolm-jax demo

# Two pytest workers, one test file each at a time (module fixtures stay shared): the suite is
# mostly single-threaded compiles and subprocess starts, so 2 cores run it in ~13 min, not ~21.
TEST_WORKERS ?= 2
test: $(STAMPS)/sysdeps $(STAMPS)/venv
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

sysdeps: $(STAMPS)/sysdeps
venv: $(STAMPS)/venv

# System tools: only what is missing is installed (needs root, as on the project's machines).
$(STAMPS)/sysdeps: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $@

# The virtual environment: Python 3.11 (see README) with every extra pinned in setup.py.
$(STAMPS)/venv: setup.py
	@mkdir -p $(STAMPS)
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]'
	@touch $@

clean-venv:
	rm -rf $(VENV) $(STAMPS)
