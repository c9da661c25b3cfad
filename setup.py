"""Build hook: compile the flow tracker (pcapreset/flows.py) with Cython.

The same source runs as plain Python; compiled (its declarations are in
pcapreset/flows.pxd) the per-packet loop is about twice as fast. If Cython or
a C compiler is missing the build goes on without it (``optional=True``) and
pcapreset runs uncompiled. Metadata lives in pyproject.toml.
"""

from setuptools import setup

try:
    from Cython.Build import cythonize
except ImportError:  # no Cython: plain Python
    ext_modules = []
else:
    from setuptools import Extension

    ext_modules = cythonize(
        [Extension("pcapreset.flows", ["pcapreset/flows.py"], optional=True)],
        language_level=3,
        compiler_directives={"annotation_typing": False, "binding": False},
        quiet=True,
    )

setup(ext_modules=ext_modules)
