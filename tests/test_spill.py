"""spill.Spill: the same items back, in memory, in the file or both."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapreset.engine import evictor, spill
from pcapreset.engine.spill import Spill

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


def test_a_forked_worker_spills_to_its_parents_file() -> None:
    """A worker writing to a shared file (spill.write_to) pickles its Spills
    as where their items are; the parent copies them into its own Spills."""
    import multiprocessing as mp

    items = [bytes([i]) * (i * 13 % 200) for i in range(120)]
    key = spill.shared_file()
    try:
        ctx = mp.get_context("fork")
        r, w = ctx.Pipe(duplex=False)

        def work() -> None:
            spill.write_to(key)
            a, b = Spill(0), Spill(50)  # two Spills interleaved in one file
            for i, x in enumerate(items):
                (a if i % 3 else b).append(x)
            w.send((a, b, a.__getstate__()[0]))

        p = ctx.Process(target=work)
        p.start()
        a, b, kind = r.recv()
        p.join(10)
        assert kind == "shared"
        assert list(a) == [x for i, x in enumerate(items) if i % 3]
        assert list(b) == [x for i, x in enumerate(items) if not i % 3]
        assert a._file is not None and a._file.key is None  # copied: its own file
    finally:
        spill.release(key)
    assert key not in spill._shared


def test_pipelined_and_sharded_runs_send_spills_by_place(generated, monkeypatch) -> None:
    """The reader child and the --jobs shards use the shared files."""
    import pcapreset.engine.pipeline as pl
    from pcapreset import analyze
    from pcapreset.engine import run as engine

    monkeypatch.setattr(pl, "CHILD_BUCKETS", 48)  # (the child sends its state)
    monkeypatch.setattr(spill, "SPILL_AFTER", 0)
    monkeypatch.setattr(evictor, "PACK_AFTER", 0)
    kinds: list[str] = []  # of the states that carried items
    setstate = Spill.__setstate__

    def counting(self: Spill, state: tuple) -> None:
        setstate(self, state)
        if len(self):
            kinds.append(state[0])

    monkeypatch.setattr(Spill, "__setstate__", counting)
    engine.run([str(generated)], pipelined=True, evict=True)
    assert "shared" in kinds and "inline" not in kinds
    kinds.clear()
    analyze(generated, evict=True, jobs=2)
    assert "shared" in kinds and "inline" not in kinds
    assert not spill._shared


def test_a_full_temporary_directory_is_a_library_error(monkeypatch) -> None:
    """No room for a spill file: PcapResetError (the CLI's one-line error)."""
    import errno

    from pcapreset.errors import PcapResetError

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    s = Spill(0)
    monkeypatch.setattr(spill.tempfile, "TemporaryFile", full)
    with pytest.raises(PcapResetError, match="No space left on device.*TMPDIR"):
        s.append(b"x")
    monkeypatch.undo()
    t = Spill(0)
    t.append(b"x")
    monkeypatch.setattr(spill.os, "pwrite", full)
    with pytest.raises(PcapResetError, match="No space left on device"):
        t.append(b"y")
