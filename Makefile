# Two commands on a fresh machine:
#   make demo   - virtualenv, install, analyze a bundled real capture
#   make test   - virtualenv with test extras, system packages, the whole suite
#   make wheels - sdist and manylinux wheels into dist/ (scripts/build-wheels)
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_PCAP ?= sample_pcaps/keepalive_race_node/backend.pcap
# editable installs put the checkout on sys.path (a .pth line) instead of
# setuptools' import hook, which cost ~30 ms at every start; the default mode
# if a setuptools without "compat" ever refuses it
EDITABLE = --config-settings editable_mode=compat
PIP_E = $(PY) -m pip install -q $(EDITABLE)

.PHONY: demo test venv venv-test sysdeps lint clean wheels

$(VENV)/.installed: pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP_E) -e . || $(PY) -m pip install -q -e .
	touch $@ $(VENV)/.compiled

# the per-packet loops are compiled in place (setup.py, Cython); rebuild them
# when their sources change (a stale build is ignored at import: pcapreset/_build.py)
$(VENV)/.compiled: pcapreset/track/flows.py pcapreset/track/flows.pxd \
		pcapreset/track/conn.py pcapreset/track/conn.pxd \
		pcapreset/track/http.py pcapreset/track/http.pxd \
		pcapreset/track/rst.py pcapreset/track/rst.pxd \
		pcapreset/track/control.py pcapreset/track/control.pxd \
		pcapreset/track/connstate.py pcapreset/track/connstate.pxd \
		pcapreset/track/httphead.py pcapreset/track/httphead.pxd \
		pcapreset/capture/sources.py pcapreset/capture/sources.pxd \
		pcapreset/capture/pcap.py pcapreset/capture/pcap.pxd \
		pcapreset/capture/pcapng.py pcapreset/capture/pcapng.pxd \
		pcapreset/capture/compressed.py pcapreset/capture/compressed.pxd \
		pcapreset/capture/ring.py pcapreset/capture/ring.pxd \
		pcapreset/capture/decode_kernel.py pcapreset/capture/decode_kernel.pxd \
		pcapreset/interpret/findings.py pcapreset/interpret/findings.pxd \
		pcapreset/interpret/hosts.py pcapreset/interpret/hosts.pxd \
		pcapreset/engine/fold.py pcapreset/engine/fold.pxd \
		pcapreset/engine/summary.py pcapreset/engine/summary.pxd \
		pcapreset/engine/rollup.py pcapreset/engine/rollup.pxd \
		pcapreset/capture/tcp.py pcapreset/capture/tcp.pxd \
		pcapreset/capture/linklayer.py pcapreset/capture/linklayer.pxd \
		pcapreset/capture/dedup.py pcapreset/capture/dedup.pxd \
		pcapreset/capture/decode.py pcapreset/capture/decode.pxd \
		pcapreset/capture/timeline.py pcapreset/capture/timeline.pxd \
		pcapreset/interpret/vantage.py pcapreset/interpret/vantage.pxd \
		pcapreset/interpret/rules.py pcapreset/interpret/rules.pxd \
		pcapreset/interpret/conversation.py pcapreset/interpret/conversation.pxd \
		pcapreset/interpret/events.py pcapreset/interpret/events.pxd \
		pcapreset/interpret/resets.py pcapreset/interpret/resets.pxd \
		pcapreset/engine/spill.py pcapreset/engine/spill.pxd \
		pcapreset/engine/packed.py pcapreset/engine/packed.pxd \
		pcapreset/engine/evictor.py pcapreset/engine/evictor.pxd \
		pcapreset/engine/tracking.py pcapreset/engine/tracking.pxd \
		pcapreset/engine/result.py pcapreset/engine/result.pxd \
		pcapreset/engine/pipeline.py pcapreset/engine/pipeline.pxd \
		pcapreset/engine/run.py pcapreset/engine/run.pxd \
		pcapreset/report/jsonout.py pcapreset/report/jsonout.pxd \
		pcapreset/report/jsonreport.py pcapreset/report/jsonreport.pxd \
		pcapreset/report/build.py pcapreset/report/build.pxd | $(VENV)/.installed
	$(PIP_E) --no-deps -e . || $(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP_E) -e '.[test,dev,lab,fleet]' || $(PY) -m pip install -q -e '.[test,dev,lab,fleet]'
	touch $@

# bytecode for the pure-Python modules, written once: with
# PYTHONDONTWRITEBYTECODE set (as on this project's machines) Python would
# otherwise compile them at every start (~15 ms of a ~0.63 s bench run)
$(VENV)/.bytecode: $(wildcard pcapreset/*.py pcapreset/*/*.py) | $(VENV)/.installed
	$(PY) -m compileall -q pcapreset
	touch $@

venv: $(VENV)/.installed $(VENV)/.compiled $(VENV)/.bytecode
venv-test: $(VENV)/.installed-test $(VENV)/.compiled $(VENV)/.bytecode

demo: venv
	$(VENV)/bin/pcapreset analyze $(DEMO_PCAP)

sysdeps:
	bash scripts/install-sysdeps

test: venv-test sysdeps
	$(PY) -m pytest -q -p no:cacheprovider

wheels: venv-test
	TOOL_PYTHON=$(PY) PYTHONS=$(PY) bash scripts/build-wheels

lint: venv-test
	$(VENV)/bin/ruff check pcapreset tests scripts
	$(VENV)/bin/ruff format --check pcapreset tests
	$(VENV)/bin/mypy pcapreset

clean:
	rm -rf $(VENV) build dist *.egg-info pcapreset/_built_sources.json
	rm -rf pcapreset/*.so pcapreset/*/*.so pcapreset/*.c pcapreset/*/*.c
	rm -rf pcapreset/__pycache__ pcapreset/*/__pycache__
