"""Build hook: compile the per-packet code with Cython.

pcapreset/track/flows.py (the flow tracker), pcapreset/track/connstate.py
(Zeek's state machine, called by it) and pcapreset/capture/sources.py (the pcap
record walk), among others, are plain Python; compiled, with the declarations in the .pxd files, the tracker
runs about twice as fast and the walk costs no Python call per record (see
docs/performance.md for measurements). If Cython or a C
compiler is missing the build goes on without them (``optional=True``) and
pcapreset runs uncompiled. Metadata lives in pyproject.toml;
the module list lives in pcapreset/_build.py.
"""

import runpy
from pathlib import Path

from setuptools import setup

#: the modules to compile: the list pcapreset/_build.py checks at import time
_BUILD = runpy.run_path(str(Path(__file__).parent / "pcapreset" / "_build.py"))
MODULES = _BUILD["MODULES"]

try:
    from Cython.Build import cythonize
except ImportError:  # no Cython: plain Python
    ext_modules = []
else:
    from setuptools import Extension

    ext_modules = cythonize(
        [
            Extension(f"pcapreset.{m}", [f"pcapreset/{m.replace('.', '/')}.py"], optional=True)
            for m in MODULES
        ],
        language_level=3,
        compiler_directives={"annotation_typing": False, "binding": False},
        quiet=True,
    )
    # the text each module is compiled from, so that a source merely touched
    # (same text, newer mtime) is not taken for a stale build (_build.stale)
    try:
        _BUILD["record_build"]()
    except OSError:  # a read-only source tree: staleness by mtime alone
        pass

setup(ext_modules=ext_modules)
