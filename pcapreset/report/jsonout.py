"""jsonout: ``json.dump(obj, fp, indent=2)``, the same bytes, ~3x faster.

With ``indent`` set, the standard library encodes in pure Python through
nested generators (its C encoder does not indent); on the 1M-packet bench
capture that was ~50 ms of a ~0.6 s ``analyze --format json`` run. This
encoder walks the report's plain data (dicts, lists, tuples, str, int,
float, bool, None) with one list of parts, strings through the standard
library's C ``encode_basestring_ascii`` and numbers through their ``repr``,
exactly as :mod:`json` does with its defaults (``ensure_ascii``,
``allow_nan``, insertion order, separators ``","`` / ``": "``). It writes to
``fp`` every few thousand parts, so a large report is never one string.

Anything else raises ``TypeError`` as :mod:`json` does; circular references
are not checked (the report is a tree). tests/test_jsonout.py compares it
with :func:`json.dump` on every report and on generated data.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as _enc
from typing import IO, Any

_INF = float("inf")
#: parts gathered before they are written out
_FLUSH = 8192


def _float(o: float) -> str:
    if o != o:
        return "NaN"
    if o == _INF:
        return "Infinity"
    if o == -_INF:
        return "-Infinity"
    return float.__repr__(o)


def _key(k: object) -> str:
    # json's key conversion: str as is, then float, bool, None, int
    if isinstance(k, str):
        return k
    if isinstance(k, float):
        return _float(k)
    if k is True:
        return "true"
    if k is False:
        return "false"
    if k is None:
        return "null"
    if isinstance(k, int):
        return int.__repr__(k)
    raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")


class _Writer:
    __slots__ = ("fp", "parts")

    def __init__(self, fp: IO[str]) -> None:
        self.fp = fp
        self.parts: list[str] = []

    def flush(self) -> None:
        self.fp.write("".join(self.parts))
        self.parts.clear()

    def value(self, o: Any, level: int) -> None:
        """One value at nesting ``level`` (its container's), in json's order of checks."""
        parts = self.parts
        if isinstance(o, str):
            parts.append(_enc(o))
        elif o is None:
            parts.append("null")
        elif o is True:
            parts.append("true")
        elif o is False:
            parts.append("false")
        elif isinstance(o, int):
            parts.append(int.__repr__(o))
        elif isinstance(o, float):
            parts.append(_float(o))
        elif isinstance(o, (list, tuple)):
            self.array(o, level)
        elif isinstance(o, dict):
            self.object(o, level)
        else:
            raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")

    def array(self, lst: list | tuple, level: int) -> None:
        parts = self.parts
        if not lst:
            parts.append("[]")
            return
        level += 1
        nl = "\n" + "  " * level
        parts.append("[" + nl)
        sep = "," + nl
        first = True
        value = self.value
        for v in lst:
            if first:
                first = False
            else:
                parts.append(sep)
            if type(v) is str:
                parts.append(_enc(v))
            else:
                value(v, level)
        parts.append("\n" + "  " * (level - 1) + "]")
        if len(parts) > _FLUSH:
            self.flush()

    def object(self, dct: dict, level: int) -> None:
        parts = self.parts
        if not dct:
            parts.append("{}")
            return
        level += 1
        nl = "\n" + "  " * level
        parts.append("{" + nl)
        sep = "," + nl
        first = True
        value = self.value
        for k, v in dct.items():
            if first:
                first = False
            else:
                parts.append(sep)
            parts.append(_enc(k if type(k) is str else _key(k)) + ": ")
            if type(v) is str:
                parts.append(_enc(v))
            else:
                value(v, level)
        parts.append("\n" + "  " * (level - 1) + "}")
        if len(parts) > _FLUSH:
            self.flush()


def dump(obj: Any, fp: IO[str]) -> None:
    """``json.dump(obj, fp, indent=2)`` for plain data."""
    w = _Writer(fp)
    w.value(obj, 0)
    w.flush()
