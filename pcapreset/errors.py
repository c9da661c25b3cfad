"""The library's own error types. Everything the CLI turns into a one-line message.

Also the optional dependencies, named by the extra that installs them: the
core (``analyze``, ``conns``) needs numpy and click only; tables, plots and
exports need ``pcapreset[notebook]``, compiling a live capture's filter
``pcapreset[live]``. A missing one is a :class:`MissingExtraError` naming the
``pip install`` that brings it.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class PcapResetError(Exception):
    """Base class of every error pcapreset raises on purpose."""


class CaptureError(PcapResetError):
    """The input is not a capture we can read (garbage, empty, unknown link type...)."""


class CaptureSourceError(PcapResetError):
    """A live capture could not be started (permissions, interface, filter)."""


class MissingExtraError(PcapResetError, ImportError):
    """An optional dependency is not installed (``except ImportError`` catches it too)."""


#: module -> the extra that installs it
EXTRAS = {"pandas": "notebook", "matplotlib": "notebook", "pyarrow": "notebook",
          "scapy": "live"}  # fmt: skip


def extra_hint(module: str, what: str, tail: str = "") -> str:
    """``<what> needs <module>: pip install 'pcapreset[<extra>]'<tail>``."""
    top = module.partition(".")[0]
    return f"{what} needs {top}: pip install 'pcapreset[{EXTRAS.get(top, 'notebook')}]'{tail}"


def require(module: str, what: str, tail: str = "") -> ModuleType:
    """``import module``, or :class:`MissingExtraError` saying which extra to install."""
    try:
        return importlib.import_module(module)
    except MissingExtraError:  # a pcapreset module naming its own missing extra
        raise
    except ImportError:
        raise MissingExtraError(extra_hint(module, what, tail)) from None
