# Two commands on a fresh machine:
#   make demo   - virtualenv, install, analyze a bundled real capture
#   make test   - virtualenv with test extras, system packages, the whole suite
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_PCAP ?= sample_pcaps/keepalive_race_node/backend.pcap

.PHONY: demo test venv venv-test sysdeps lint clean

$(VENV)/.installed: pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@ $(VENV)/.compiled

# the per-packet loops are compiled in place (setup.py, Cython); rebuild them
# when their sources change (a stale build is ignored at import: pcapreset/_build.py)
$(VENV)/.compiled: pcapreset/flows.py pcapreset/flows.pxd pcapreset/connstate.py \
		pcapreset/sources.py pcapreset/sources.pxd pcapreset/findings.py \
		pcapreset/findings.pxd pcapreset/rollup.py pcapreset/rollup.pxd | $(VENV)/.installed
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[test,dev,lab]'
	touch $@

venv: $(VENV)/.installed $(VENV)/.compiled
venv-test: $(VENV)/.installed-test $(VENV)/.compiled

demo: venv
	$(VENV)/bin/pcapreset analyze $(DEMO_PCAP)

sysdeps:
	bash scripts/install-sysdeps

test: venv-test sysdeps
	$(PY) -m pytest -q -p no:cacheprovider

lint: venv-test
	$(VENV)/bin/ruff check pcapreset tests scripts
	$(VENV)/bin/ruff format --check pcapreset tests
	$(VENV)/bin/mypy pcapreset

clean:
	rm -rf $(VENV) build *.egg-info pcapreset/*.so pcapreset/*.c
