"""Which per-packet code runs: compiled, unless built from other sources.

``pip install -e .`` compiles the modules in :data:`MODULES` with Cython
(see setup.py) into extension modules next to them, which Python then
prefers to the source. In a git checkout, editing a source or its .pxd after
that build would leave the old compiled code running;
:func:`prefer_fresh_source` loads the source instead (slower, never stale).
``make`` rebuilds them when their sources change. A source newer than its
build is compared with the hash setup.py recorded (:data:`BUILT`): the same
text (``git stash`` and back, a branch switched and back) keeps the build.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
#: the modules setup.py compiles, each after the ones it imports when it runs
#: (the order :func:`prefer_fresh_source` loads sources in: http and rst
#: import conn; control imports rst; flows imports them and connstate and
#: httphead; tests/test_compiled.py checks the order); dotted names under pcapreset/
MODULES = (
    "track.conn",
    "track.connstate",
    "capture.sources",
    "capture.pcap",
    "capture.pcapng",
    "capture.compressed",
    "capture.ring",
    "capture.decode_kernel",
    "track.httphead",
    "track.http",
    "interpret.findings",
    "engine.summary",
    "capture.tcp",
    "track.rst",
    "track.control",
    "track.flows",
    "capture.linklayer",
    "capture.dedup",
    "capture.decode",
    "capture.timeline",
    "interpret.vantage",
    "interpret.hosts",
    "engine.fold",
    "interpret.rules",
    "interpret.conversation",
    "interpret.events",
    "interpret.resets",
    "engine.spill",
    "engine.packed",
    "engine.rollup",
    "engine.evictor",
    "engine.tracking",
    "engine.result",
    "engine.pipeline",
    "engine.run",
    "report.jsonout",
    "report.jsonreport",
    "report.build",
)
#: the modules of :data:`MODULES` whose .pxd declares nothing: compiled only so that
#: they are not parsed at every start (every analysis imports them), with less
#: optimisation (setup.py), which they do not need
PARSE_ONLY = frozenset(
    {
        "capture.compressed",
        "capture.decode",
        "capture.dedup",
        "capture.linklayer",
        "capture.sources",
        "capture.tcp",
        "capture.timeline",
        "engine.evictor",
        "engine.packed",
        "engine.pipeline",
        "engine.result",
        "engine.rollup",
        "engine.run",
        "engine.spill",
        "engine.summary",
        "engine.tracking",
        "interpret.conversation",
        "interpret.events",
        "interpret.resets",
        "interpret.rules",
        "interpret.vantage",
        "report.build",
        "report.jsonout",
        "report.jsonreport",
    }
)
#: compiled modules that use another one's C types (``cimport``, see their
#: .pxd): they load only next to that module compiled from the same
#: declarations, so they run from source whenever it does
CIMPORTS = {
    "track.connstate": ("track.conn",),
    "track.http": ("track.conn",),
    "track.rst": ("track.conn",),
    "track.control": ("track.conn", "track.rst", "track.connstate"),
    "track.flows": ("track.conn", "track.http", "track.rst", "track.control", "track.connstate"),
    "interpret.findings": ("track.conn",),
    "interpret.hosts": ("track.conn",),
    "engine.fold": ("track.conn",),
}


#: where setup.py records the hash of each module's sources as it builds it
BUILT = "_built_sources.json"


def _sources(module: str) -> list[str]:
    """The files a compiled ``module`` is built from (those that exist)."""
    names = [module + ".py", module + ".pxd", *(m + ".pxd" for m in CIMPORTS.get(module, ()))]
    return [p for p in (_path(n) for n in names) if os.path.exists(p)]


def _path(name: str) -> str:
    """pcapreset/``name``'s file: dots of the module name become directories
    (``track.flows.py`` -> pcapreset/track/flows.py)."""
    stem, ext = os.path.splitext(name)
    return os.path.join(HERE, *stem.split(".")) + ext


def source_hash(module: str) -> str:
    """A hash of the text ``module`` is compiled from (its .py, its .pxd and
    the .pxd files it cimports)."""
    import hashlib  # (only when a source is newer than its build: not at every start)

    h = hashlib.sha256()
    for p in _sources(module):
        with open(p, "rb") as f:
            h.update(os.path.basename(p).encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


def record_build() -> None:
    """setup.py: record the hash of every module's sources as it compiles them."""
    import json

    with open(os.path.join(HERE, BUILT), "w") as f:
        json.dump({m: source_hash(m) for m in MODULES}, f, indent=1, sort_keys=True)


def _built_from(module: str) -> str | None:
    import json

    try:
        with open(os.path.join(HERE, BUILT)) as f:
            got = json.load(f).get(module)
    except (OSError, ValueError, AttributeError):
        return None
    return got if isinstance(got, str) else None


def compiled_path(module: str) -> str | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = os.path.join(HERE, *module.split(".")) + suffix
        if os.path.exists(p):
            return p
    return None


def stale(module: str) -> bool:
    """A compiled ``module`` exists in a git checkout (or worktree), is older
    than its source or the declarations it cimports, and was built from
    another text of them (or the build recorded none)."""
    so = compiled_path(module)
    if so is None or not os.path.exists(os.path.join(HERE, os.pardir, ".git")):
        return False
    try:
        built = os.path.getmtime(so)
    except OSError:
        return False
    if not any(os.path.getmtime(p) > built for p in _sources(module)):
        return False
    return _built_from(module) != source_hash(module)


def _runs_compiled(module: str) -> bool:
    """pcapreset.``module`` is (or will be) its compiled build."""
    mod = sys.modules.get(f"pcapreset.{module}")
    if mod is not None:
        return not str(getattr(mod, "__file__", "")).endswith(".py")
    return compiled_path(module) is not None and not stale(module)


def load_source(name: str, module: str) -> object:
    """pcapreset/``module``.py (dots: directories) executed from source as module ``name``."""
    loader = importlib.machinery.SourceFileLoader(name, _path(module + ".py"))
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


def run_from_source() -> list[str]:
    """The compiled modules to run from source instead, in :data:`MODULES`
    order: the stale ones, and the ones whose cimported module runs from
    source (stale, or never built), to a fixed point."""
    fresh: set[str] = set()
    for _ in range(len(MODULES)):  # each round adds one at least, or stops
        more = {
            m
            for m in MODULES
            if m not in fresh
            and f"pcapreset.{m}" not in sys.modules
            and compiled_path(m) is not None
            and (stale(m) or any(d in fresh or not _runs_compiled(d) for d in CIMPORTS.get(m, ())))
        }
        if not more:
            break
        fresh |= more
    return [m for m in MODULES if m in fresh]


def prefer_fresh_source() -> None:
    """Import the stale compiled modules from their source instead, and the
    ones whose cimported module runs from source (stale, or not built); a
    module is loaded after the ones it imports, so that a source module never
    imports a compiled one that cimports it."""
    for m in run_from_source():
        name = f"pcapreset.{m}"
        if name not in sys.modules:
            load_source(name, m)
