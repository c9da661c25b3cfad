"""Build hook: compile the two per-packet loops with Cython.

pcapreset/flows.py (the flow tracker) and pcapreset/sources.py (the pcap
record walk) are plain Python; compiled, with the declarations in their .pxd
files, their loops run about twice (flows) and twenty times (the walk) as
fast. If Cython or a C compiler is missing the build goes on without them
(``optional=True``) and pcapreset runs uncompiled. Metadata lives in
pyproject.toml; pcapreset/_build.py lists the same modules.
"""

from setuptools import setup

try:
    from Cython.Build import cythonize
except ImportError:  # no Cython: plain Python
    ext_modules = []
else:
    from setuptools import Extension

    ext_modules = cythonize(
        [
            Extension(f"pcapreset.{m}", [f"pcapreset/{m}.py"], optional=True)
            for m in ("flows", "sources")
        ],
        language_level=3,
        compiler_directives={"annotation_typing": False, "binding": False},
        quiet=True,
    )

setup(ext_modules=ext_modules)
