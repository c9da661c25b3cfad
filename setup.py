"""Build hook: compile the per-packet code with Cython, per module, optionally.

The modules listed in pcapreset/_build.py (the connection model and the flow
tracker in pcapreset/track/, Zeek's state machine, the pcap record walk in
pcapreset/capture/sources.py, the decode kernel, findings and the rollup) are
plain Python; compiled, with the declarations in their .pxd files, the tracker
runs about twice as fast and the walk costs no Python call per record (see
docs/architecture.md).

Compiling is optional, module by module: without Cython nothing is compiled;
without a working C compiler (none on PATH, ``CC=/bin/false``), or when one
module fails to compile, :class:`OptionalBuildExt` reports it on stderr and
leaves that module as plain Python (Cython's ``cythonize`` drops
``Extension(optional=True)``, so the build command itself catches the
failures). ``PCAPRESET_NO_COMPILE=1`` skips compiling altogether. The
generated .c files are build inputs, never package data. Metadata lives in
pyproject.toml; the module list lives in pcapreset/_build.py.
"""

import os
import runpy
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: the modules to compile: the list pcapreset/_build.py checks at import time
_BUILD = runpy.run_path(str(Path(__file__).parent / "pcapreset" / "_build.py"))
MODULES = _BUILD["MODULES"]


class OptionalBuildExt(build_ext):
    """build_ext that leaves a module uncompiled when it cannot be compiled, and
    runs the C compiler on as many modules at once as there are CPUs."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - e.g. no compiler at all
            self._skip("all modules", e)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001 - CompileError, LinkError, OSError (no gcc)
            self._skip(ext.name, e)

    @staticmethod
    def _skip(what: str, e: BaseException) -> None:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        sys.stderr.write(
            f"pcapreset: not compiling {what} ({msg}); it runs as plain Python (slower, "
            "same results)\n"
        )


def _extensions() -> list:
    if os.environ.get("PCAPRESET_NO_COMPILE"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:  # no Cython: plain Python
        return []
    from setuptools import Extension

    # -g0: no debug info (it was most of each .so's size); the C compiler's
    # other flags are Python's own, but -O1 for the modules compiled only so that
    # they are not parsed at every start (a third of -O3's compile time). One
    # cythonize call per module, so that a module Cython cannot translate stays
    # plain Python too.
    exts = []
    for m in MODULES:
        flags = ["-g0", "-O1"] if m in _BUILD["PARSE_ONLY"] else ["-g0"]
        try:
            exts += cythonize(
                [
                    Extension(
                        f"pcapreset.{m}",
                        [f"pcapreset/{m.replace('.', '/')}.py"],
                        extra_compile_args=flags,
                    )
                ],
                language_level=3,
                compiler_directives={"annotation_typing": False, "binding": False},
                quiet=True,
            )
        except Exception as e:  # noqa: BLE001 - Cython's CompileError
            OptionalBuildExt._skip(f"pcapreset.{m}", e)
    # the text each module is compiled from, so that a source merely touched
    # (same text, newer mtime) is not taken for a stale build (_build.stale)
    try:
        _BUILD["record_build"]()
    except OSError:  # a read-only source tree: staleness by mtime alone
        pass
    return exts


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
