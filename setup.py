"""Build hook: compile the per-packet code with Cython.

The modules listed in pcapreset/_build.py (the connection model and the flow
tracker in pcapreset/track/, Zeek's state machine, the pcap record walk in
pcapreset/capture/sources.py, the decode kernel, findings and the rollup) are
plain Python; compiled, with the declarations in their .pxd files, the tracker
runs about twice as fast and the walk costs no Python call per record (see
docs/architecture.md). If Cython or a C compiler is missing the build goes on
without them (``optional=True``) and pcapreset runs uncompiled. Metadata lives
in pyproject.toml.
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
