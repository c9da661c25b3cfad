"""jsonout.dump writes exactly what json.dump(obj, fp, indent=2) writes.

Compared on the report of every sample capture and on arbitrary JSON-like
data (nested dicts / lists / tuples, non-ASCII and control characters,
special floats, int / float / bool / None keys, str and int subclasses).
"""

from __future__ import annotations

import enum
import io
import json

import pytest
from conftest import sample_captures
from hypothesis import given
from hypothesis import strategies as st

import pcapreset
from pcapreset.report import jsonout


def _both(obj: object) -> tuple[str, str]:
    a, b = io.StringIO(), io.StringIO()
    json.dump(jsonout.finite(obj), a, indent=2)  # (strict: NaN and Infinity are null)
    jsonout.dump(obj, b)
    return a.getvalue(), b.getvalue()


@pytest.mark.parametrize("path", sample_captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sample_reports(path):
    a, b = _both(pcapreset.analyze(path).to_json())
    assert a == b


class _Color(enum.IntEnum):
    RED = 1


class _Name(str):
    pass


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.sampled_from([_Color.RED, _Name("a"), -0.0, 1e16, 1e-7, 2**70])
)
KEYS = st.text() | st.integers() | st.floats() | st.booleans() | st.none()
DATA = st.recursive(
    SCALARS,
    lambda kids: (
        st.lists(kids, max_size=6)
        | st.lists(kids, max_size=4).map(tuple)
        | st.dictionaries(KEYS, kids, max_size=6)
    ),
    max_leaves=60,
)


@given(DATA)
def test_arbitrary_data(obj):
    a, b = _both(obj)
    assert a == b


def test_large_output_is_written_in_pieces():
    writes: list[str] = []

    class Sink:
        def write(self, s: str) -> None:
            writes.append(s)

    obj = [{"i": i, "s": "x" * 3} for i in range(5000)]
    jsonout.dump(obj, Sink())  # type: ignore[arg-type]
    assert len(writes) > 1
    assert "".join(writes) == json.dumps(obj, indent=2)


@pytest.mark.parametrize("obj", [{1j: 1}, [object()], {"a": {1, 2}}, b"x"])
def test_errors_as_json(obj):
    with pytest.raises(TypeError):
        json.dumps(obj, indent=2)
    with pytest.raises(TypeError):
        jsonout.dump(obj, io.StringIO())
