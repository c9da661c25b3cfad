"""Which per-packet code runs: compiled, unless older than its source.

``pip install -e .`` compiles the modules in :data:`MODULES` with Cython
(see setup.py) into extension modules next to them, which Python then
prefers to the source. In a git checkout, editing a source or its .pxd after
that build would leave the old compiled code running;
:func:`prefer_fresh_source` loads the source instead (slower, never stale).
``make`` rebuilds them when their sources change.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
#: the modules setup.py compiles
MODULES = ("flows", "connstate", "sources", "decode_kernel", "httphead")


def compiled_path(module: str) -> str | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = os.path.join(HERE, module + suffix)
        if os.path.exists(p):
            return p
    return None


def stale(module: str) -> bool:
    """A compiled ``module`` exists in a git checkout and is older than its source."""
    so = compiled_path(module)
    if so is None or not os.path.isdir(os.path.join(HERE, os.pardir, ".git")):
        return False
    try:
        built = os.path.getmtime(so)
    except OSError:
        return False
    for ext in (".py", ".pxd"):
        src = os.path.join(HERE, module + ext)
        if os.path.exists(src) and os.path.getmtime(src) > built:
            return True
    return False


def load_source(name: str, module: str) -> object:
    """pcapreset/``module``.py executed from source as module ``name``."""
    loader = importlib.machinery.SourceFileLoader(name, os.path.join(HERE, module + ".py"))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def prefer_fresh_source() -> None:
    """Import the stale compiled modules from their source instead."""
    for m in MODULES:
        name = f"pcapreset.{m}"
        if name not in sys.modules and stale(m):
            load_source(name, m)
