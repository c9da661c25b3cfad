"""Which flow tracker runs: the compiled one, unless it is older than its source.

``pip install -e .`` compiles pcapreset/flows.py with Cython (see setup.py)
into an extension module next to it, which Python then prefers to the
source. In a git checkout, editing flows.py or flows.pxd after that build
would leave the old compiled code running; :func:`prefer_fresh_source` loads
the source instead (slower, never stale). ``make test`` rebuilds first.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def compiled_flows_path() -> str | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = os.path.join(HERE, "flows" + suffix)
        if os.path.exists(p):
            return p
    return None


def stale() -> bool:
    """A compiled flows module exists in a git checkout and is older than its source."""
    so = compiled_flows_path()
    if so is None or not os.path.isdir(os.path.join(HERE, os.pardir, ".git")):
        return False
    try:
        built = os.path.getmtime(so)
        return any(
            os.path.getmtime(os.path.join(HERE, f)) > built for f in ("flows.py", "flows.pxd")
        )
    except OSError:
        return False


def prefer_fresh_source() -> None:
    """Import pcapreset.flows from flows.py when the compiled module is stale."""
    if "pcapreset.flows" in sys.modules or not stale():
        return
    loader = importlib.machinery.SourceFileLoader("pcapreset.flows", os.path.join(HERE, "flows.py"))
    spec = importlib.util.spec_from_loader("pcapreset.flows", loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pcapreset.flows"] = mod
    try:
        loader.exec_module(mod)
    except BaseException:
        del sys.modules["pcapreset.flows"]
        raise
