"""spill.Spill: the same items back, in memory, in the file or both."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapreset import spill
from pcapreset.spill import Spill

items_st = st.lists(st.binary(max_size=300), max_size=60)


@settings(max_examples=60, deadline=None)
@given(items=items_st, limit=st.sampled_from([0, 1, 100, 1000, None]))
def test_items_come_back(items: list[bytes], limit: int | None) -> None:
    s = Spill(limit)
    idx = [s.append(b) for b in items]
    assert idx == list(range(len(items)))
    assert len(s) == len(items) and bool(s) == bool(items)
    assert [s[i] for i in range(len(items))] == items
    assert list(s) == items
    if items:
        assert s[-1] == items[-1]
    back = pickle.loads(pickle.dumps(s))
    assert list(back) == items and back.limit == limit
    t = Spill(limit)
    t.extend(s)
    assert list(t) == items
    s.close()
    assert len(s) == 0 and list(s) == []


def test_spills_past_the_limit() -> None:
    s = Spill(10)
    s.append(b"12345")
    assert s.spilled == 0
    s.append(b"123456")  # 11 bytes held: written out
    assert s.spilled == 2 and s._file is not None
    s.append(b"x")
    assert s.spilled == 2 and list(s) == [b"12345", b"123456", b"x"]
    with pytest.raises(IndexError):
        s[5]
    with pytest.raises(IndexError):
        s[-4]


def test_iteration_reads_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # items larger than a read, and many small ones across read boundaries
    monkeypatch.setattr(spill, "SPILL_AFTER", 64)
    items = [bytes([i % 256]) * (i * 7 % 150) for i in range(200)]
    s = Spill(0)
    s.extend(iter(items))
    assert s.spilled == 200 and list(s) == items
