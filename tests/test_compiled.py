"""The compiled flow tracker equals the plain-Python one, field by field.

setup.py compiles pcapreset/flows.py with Cython (declarations in flows.pxd);
the same source also runs as plain Python. Both trackers are fed the same
decoded batches of every sample and public corpus capture, and every
connection must come out identical: counters, history, exchanges, RST events
and the packets in them.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import pytest
from conftest import CORPUS, sample_captures

import pcapreset
from pcapreset import _build, flows
from pcapreset.decode import AddressBook, Decoder
from pcapreset.engine import decoded_timeline, open_readers
from pcapreset.errors import PcapResetError

CORPUS_FILES = sorted(p for p in CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []
PKG = Path(pcapreset.__file__).parent


def plain_flows():
    """pcapreset/flows.py loaded from source, under another name (uncompiled)."""
    name = "pcapreset._flows_source"
    if name in sys.modules:
        return sys.modules[name]
    loader = importlib.machinery.SourceFileLoader(name, str(PKG / "flows.py"))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    loader.exec_module(mod)
    return mod


def snap(obj, seen: frozenset = frozenset()):
    """Every slot of a tracker object, recursively (back-references by id)."""
    if isinstance(obj, (list, tuple)):
        return [snap(x, seen) for x in obj]
    if isinstance(obj, dict):
        return {k: snap(v, seen) for k, v in obj.items()}
    slots = getattr(type(obj), "__slots__", None)
    if slots is None or isinstance(obj, (str, bytes)):
        return obj
    if id(obj) in seen:
        return ("<ref>", type(obj).__name__)
    inner = seen | {id(obj)}
    return (type(obj).__name__, {s: snap(getattr(obj, s), inner) for s in slots})


def conns_of(mod, path: str) -> list:
    readers = open_readers([path])
    ft = mod.FlowTracker()
    for b in decoded_timeline(readers, Decoder(AddressBook())):
        ft.feed(b)
    for r in readers:
        r.close()
    return [snap(c) for c in ft.finish()]


@pytest.mark.skipif(
    not os.environ.get("CI"), reason="a developer checkout may run uncompiled (no compiler)"
)
def test_ci_runs_the_compiled_tracker():
    """make test builds the extension: CI must test (and bench) the compiled code."""
    assert flows.COMPILED, f"pcapreset.flows is not compiled ({flows.__file__})"
    assert not _build.stale()


def test_plain_source_is_uncompiled():
    assert plain_flows().COMPILED is False


def _compare(path: Path) -> None:
    if not flows.COMPILED:
        pytest.skip("pcapreset.flows is not compiled here: nothing to compare")
    try:
        fast = conns_of(flows, str(path))
    except PcapResetError as e:
        pytest.skip(f"unreadable: {e}")
    slow = conns_of(plain_flows(), str(path))
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert a == b


@pytest.mark.parametrize("path", sample_captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_compiled_equals_plain_on_samples(path):
    _compare(path)


@pytest.mark.skipif(not CORPUS_FILES, reason=f"public corpus not found at {CORPUS}")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_compiled_equals_plain_on_corpus(path):
    _compare(path)


def test_snapshot_sees_the_fields():
    """Guard against a vacuous comparison: snapshots hold the tracker's counters."""
    caps = sample_captures()
    if not caps:
        pytest.skip("no sample captures")
    conns = conns_of(flows, str(caps[0]))
    assert conns
    name, fields = conns[0]
    assert name == "Conn" and "hist" in fields and "rst_events" in fields
    assert fields["c"][1]["pkts"] > 0
