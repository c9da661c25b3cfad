"""jsonout: ``json.dump(obj, fp, indent=2)``, the same bytes, ~3x faster; strict JSON.

With ``indent`` set, the standard library encodes in pure Python through
nested generators (its C encoder does not indent); on the 1M-packet bench
capture that was ~50 ms of a ~0.6 s ``analyze --format json`` run. This
encoder walks the report's plain data (dicts, lists, tuples, str, int,
float, bool, None) with one list of parts, strings through the standard
library's C ``encode_basestring_ascii`` and numbers through their ``repr``,
exactly as :mod:`json` does with its defaults (``ensure_ascii``,
insertion order, separators ``","`` / ``": "``), except that a float that is
not finite is written ``null``: ``NaN`` and ``Infinity`` are not JSON, and
strict parsers reject them (:func:`dumps` does the same for one-line
output). It writes to ``fp`` every few thousand parts, so a large report is
never one string.

Anything else raises ``TypeError`` as :mod:`json` does; circular references
are not checked (the report is a tree). tests/test_jsonout.py compares it
with :func:`json.dump` on every report and on generated data.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring_ascii as _enc
from typing import IO, Any

_INF = float("inf")
#: parts gathered before they are written out
_FLUSH = 8192


def _float(o: float) -> str:
    if o != o or o == _INF or o == -_INF:
        return "null"  # (strict JSON has no NaN or Infinity)
    return float.__repr__(o)


def _key_float(o: float) -> str:
    # (a key is a string: json's spelling of a non-finite one is valid JSON)
    if o != o:
        return "NaN"
    if o == _INF:
        return "Infinity"
    if o == -_INF:
        return "-Infinity"
    return float.__repr__(o)


def finite(obj: Any) -> Any:
    """``obj`` with every float value that is not finite replaced by None,
    and every such key by json's spelling of it (a copy)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {
            _key_float(k) if isinstance(k, float) and not math.isfinite(k) else k: finite(v)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """``json.dumps(obj)`` as strict JSON: non-finite floats written ``null``."""
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:  # (rare: walk the data only then)
        return json.dumps(finite(obj), allow_nan=False)


def _key(k: object) -> str:
    # json's key conversion: str as is, then float, bool, None, int
    if isinstance(k, str):
        return k
    if isinstance(k, float):
        return _key_float(k)
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
            self.container(o, level, False)
        elif isinstance(o, dict):
            self.container(o, level, True)
        else:
            raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")

    def container(self, o: Any, level: int, keyed: bool) -> None:
        """A list or tuple (``[...]``) or, ``keyed``, a dict (``{...}``, its keys as
        json converts them), one item a line, indented one level deeper."""
        parts = self.parts
        if not o:
            parts.append("{}" if keyed else "[]")
            return
        level += 1
        nl = "\n" + "  " * level
        sep = "," + nl
        value = self.value
        if keyed:
            parts.append("{" + nl)
            for k, v in o.items():
                parts.append(_enc(k if type(k) is str else _key(k)) + ": ")
                if type(v) is str:
                    parts.append(_enc(v))
                else:
                    value(v, level)
                parts.append(sep)
            closing = "}"
        else:
            parts.append("[" + nl)
            for v in o:
                if type(v) is str:
                    parts.append(_enc(v))
                else:
                    value(v, level)
                parts.append(sep)
            closing = "]"
        parts[-1] = "\n" + "  " * (level - 1) + closing  # (the last item's separator)
        if len(parts) > _FLUSH:
            self.flush()


def dump(obj: Any, fp: IO[str]) -> None:
    """``json.dump(obj, fp, indent=2)`` for plain data, as strict JSON."""
    w = _Writer(fp)
    w.value(obj, 0)
    w.flush()
