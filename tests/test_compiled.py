"""The compiled modules equal their plain-Python source, field by field.

setup.py compiles pcapreset/track/flows.py, pcapreset/capture/sources.py and
the other modules of ``_build.MODULES`` with Cython
(declarations in their .pxd files); the same sources also run as plain
Python. Both flow trackers are fed the same decoded batches of every sample
and public corpus capture, and every connection must come out identical:
counters, history, exchanges, RST events and the packets in them. Both
readers must yield the same frames and warnings on every capture, the
malformed ones included.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPUS, MALFORMED, bench_capture, rollup_fields, sample_captures

import pcapreset.capture
from pcapreset import _build
from pcapreset.capture import decode_kernel, pcap, pcapng, ring, sources
from pcapreset.capture.decode import Decoder
from pcapreset.capture.tcp import AddressBook
from pcapreset.capture.timeline import decoded_timeline, open_readers
from pcapreset.engine import fold, rollup
from pcapreset.errors import PcapResetError
from pcapreset.interpret import findings, hosts
from pcapreset.track import conn, connstate, flows, http, httphead, rst

CORPUS_FILES = sorted(p for p in CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []
MALFORMED_FILES = (
    sorted(p for p in MALFORMED.iterdir() if p.is_file()) if MALFORMED.is_dir() else []
)
FRAME_COLS = ("off", "caplen", "wirelen", "ts", "linktype", "frame_no")
_PLAIN: dict = {}


def plain(module: str):
    """pcapreset/<package>/<module>.py loaded from source under another name
    in its package (uncompiled); ``module`` as in :data:`_build.MODULES`."""
    if module not in _PLAIN:
        pkg, _, name = module.rpartition(".")
        _PLAIN[module] = _build.load_source(f"pcapreset.{pkg}._{name}_source", module)
    return _PLAIN[module]


def plain_flows():
    """The plain flow tracker, with the plain model, HTTP exchanges, control
    packets, RST events, Zeek state machine and protocol dispatch under it."""
    mod = plain("track.flows")
    conn, http, rst = plain("track.conn"), plain("track.http"), plain("track.rst")
    http.Exchange = conn.Exchange
    rst.RstEvent, rst.RstPacket = conn.RstEvent, conn.RstPacket
    mod.Conn = conn.Conn
    mod.http_client, mod.http_server = http.http_client, http.http_server
    mod.data_after_rst = rst.data_after_rst
    mod.zeek = zeek = plain("track.connstate")
    mod.zeek_update, mod.is_reuse, mod.ZeekTcp = zeek.update, zeek.is_reuse, zeek.ZeekTcp
    ctl = plain("track.control")
    ctl.rst_event, ctl.zeek = rst.rst_event, zeek
    ctl.control_history, ctl.update = zeek.control_history, zeek.update
    mod.control, mod.roles = ctl.control, ctl.roles
    # the protocol dispatch (never compiled) over the plain model and HTTP
    if "track.dispatch" not in _PLAIN:
        _PLAIN["track.dispatch"] = _build.load_source(
            "pcapreset.track._dispatch_source", "track.dispatch"
        )
    disp = _PLAIN["track.dispatch"]
    disp.Exchange, disp.http_server = conn.Exchange, http.http_server
    mod.detect_proto, mod.proto_payload, mod.upgraded = disp.detect, disp.payload, disp.upgraded
    return mod


def snap(obj, seen: frozenset = frozenset()):
    """Every slot of a tracker object, recursively (back-references by id)."""
    if isinstance(obj, (list, tuple)):
        return [snap(x, seen) for x in obj]
    if isinstance(obj, dict):
        return {k: snap(v, seen) for k, v in obj.items()}
    if isinstance(obj, float) and obj != obj:
        return "NaN"  # (an unset time: equal to itself here)
    slots = getattr(type(obj), "__slots__", None)
    if slots is None or isinstance(obj, (str, bytes)):
        return obj
    if id(obj) in seen:
        return ("<ref>", type(obj).__name__)
    inner = seen | {id(obj)}
    return (type(obj).__name__, {s: snap(getattr(obj, s), inner) for s in slots})


def tracked(mod, path: str) -> list:
    """The connections of a capture, from ``mod``'s FlowTracker."""
    readers = open_readers([path])
    ft = mod.FlowTracker()
    for b in decoded_timeline(readers, Decoder(AddressBook())):
        ft.feed(b)
    for r in readers:
        r.close()
    return ft.finish()


def conns_of(mod, path: str) -> list:
    return [snap(c) for c in tracked(mod, path)]


@pytest.mark.skipif(
    not os.environ.get("CI"), reason="a developer checkout may run uncompiled (no compiler)"
)
def test_ci_runs_the_compiled_tracker():
    """make test builds the extension: CI must test (and bench) the compiled code."""
    for mod in (
        conn,
        http,
        rst,
        flows,
        connstate,
        sources,
        pcap,
        pcapng,
        ring,
        decode_kernel,
        httphead,
        findings,
        fold,
    ):
        assert mod.COMPILED, f"{mod.__name__} is not compiled ({mod.__file__})"
    # every module of the build list, the declaration-free ones (PARSE_ONLY) included,
    # is loaded from its extension, not from its .py
    for name in _build.MODULES:
        origin = importlib.util.find_spec(f"pcapreset.{name}").origin or ""
        assert origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (name, origin)
    assert not any(_build.stale(m) for m in _build.MODULES)


def test_a_build_is_stale_only_for_another_text_of_its_sources(tmp_path, monkeypatch):
    """A source newer than its build (touched, stashed and back, a branch
    switched and back) keeps the build when its text is the one setup.py
    recorded; another text, or no record, makes it stale."""
    import importlib.machinery

    pkg = tmp_path / "pcapreset"
    (pkg / "track").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    monkeypatch.setattr(_build, "HERE", str(pkg))
    so = pkg / "track" / ("flows" + importlib.machinery.EXTENSION_SUFFIXES[0])
    (pkg / "track" / "flows.py").write_text("x = 1\n")
    (pkg / "track" / "flows.pxd").write_text("cdef int x\n")
    so.write_bytes(b"")
    _build.record_build()
    built = so.stat().st_mtime

    def at(t: float) -> None:  # the sources' modification time
        for p in (pkg / "track" / "flows.py", pkg / "track" / "flows.pxd"):
            os.utime(p, (t, t))

    at(built - 100)
    assert not _build.stale("track.flows")  # older sources: the build stands
    at(built + 100)  # touched: newer, the same text
    assert not _build.stale("track.flows")
    (pkg / "track" / "flows.pxd").write_text("cdef long x\n")
    at(built + 100)
    assert _build.stale("track.flows")
    (pkg / "track" / "flows.pxd").write_text("cdef int x\n")  # back to the built text
    at(built + 100)
    assert not _build.stale("track.flows")
    (pkg / _build.BUILT).unlink()
    assert _build.stale("track.flows")  # (built before builds were recorded)
    (pkg / _build.BUILT).write_text("not json")
    assert _build.stale("track.flows")
    (tmp_path / ".git").rmdir()
    assert not _build.stale("track.flows")  # not a checkout: what was installed runs


def test_plain_source_is_uncompiled():
    assert plain("track.flows").COMPILED is False
    f = plain_flows()
    assert f.zeek.__file__.endswith("connstate.py")
    assert f.Conn.__module__ == "pcapreset.track._conn_source"
    assert not any(
        m.COMPILED for m in (plain("track.conn"), plain("track.http"), plain("track.rst"))
    )
    assert plain("capture.sources").COMPILED is False
    assert plain("capture.pcap").COMPILED is False
    assert plain("capture.pcapng").COMPILED is False
    assert plain("capture.ring").COMPILED is False
    assert plain("interpret.findings").COMPILED is False
    assert plain("engine.fold").COMPILED is False
    assert plain("interpret.hosts").COMPILED is False


def _compare(path: Path) -> None:
    if not flows.COMPILED:
        pytest.skip("pcapreset.track.flows is not compiled here: nothing to compare")
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


def frames_of(mod, path: str) -> tuple[list, dict, list]:
    """Every FrameBatch column (and the packet bytes) and the reader's warnings
    (``mod``: the capture.sources module whose CaptureReader reads)."""
    try:
        r = mod.CaptureReader(path)
    except PcapResetError as e:
        return [], {}, [str(e)]
    out = []
    for fb in r.batches():
        cols = {
            f: np.asarray(getattr(fb, f)).tolist()
            for f in ("off", "caplen", "wirelen", "ts", "linktype", "frame_no")
        }
        cols["bytes"] = [
            bytes(fb.buf[o : o + c]) for o, c in zip(cols["off"], cols["caplen"], strict=True)
        ]
        out.append(cols)
    return out, dict(r.info.warnings), [r.info.frames]


@pytest.mark.parametrize(
    "path",
    [*sample_captures(), *CORPUS_FILES, *MALFORMED_FILES],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_compiled_reader_equals_plain(path, monkeypatch):
    if not (pcap.COMPILED and pcapng.COMPILED):
        pytest.skip("pcapreset.capture.pcap / pcapng are not compiled here: nothing to compare")
    fast = frames_of(sources, str(path))
    # the plain reader walks records with the plain pcap and pcapng modules
    # (CaptureReader imports them when it opens a file)
    monkeypatch.setitem(sys.modules, "pcapreset.capture.pcap", plain("capture.pcap"))
    monkeypatch.setitem(sys.modules, "pcapreset.capture.pcapng", plain("capture.pcapng"))
    monkeypatch.setattr(pcapreset.capture, "pcap", plain("capture.pcap"), raising=False)
    monkeypatch.setattr(pcapreset.capture, "pcapng", plain("capture.pcapng"), raising=False)
    slow = frames_of(plain("capture.sources"), str(path))
    assert fast == slow


def _ring_block(rng: np.random.Generator, n: int, ethernet: bool) -> tuple[bytearray, int]:
    """A TPACKET_V3 block as the kernel fills one (block header, then per
    packet a tpacket3_hdr, its sockaddr_ll and the packet at tp_mac/tp_net,
    each at the previous one's tp_next_offset); (the ring, where the first
    packet's header is)."""
    import struct

    buf = bytearray(ring.BLOCK_BYTES)
    o = first = 48
    for k in range(n):
        snap = int(rng.integers(0, 1600))
        mac = 96 if ethernet else 80
        net = mac if not ethernet else mac + 14
        nxt = (mac + snap + 7) // 8 * 8 if k < n - 1 else 0
        struct.pack_into("<IIIIIIHH", buf, o, nxt, k, 1000 * k, snap, snap + 4, 1, mac, net)
        buf[o + ring.SLL_AT : o + ring.SLL_AT + 20] = rng.integers(0, 256, 20, np.uint8).tobytes()
        buf[o + mac : o + mac + snap] = rng.integers(0, 256, snap, np.uint8).tobytes()
        o += nxt
    return buf, first


@pytest.mark.parametrize("ethernet", [False, True], ids=["cooked", "ethernet"])
def test_compiled_ring_walk_equals_plain(ethernet):
    """The ring's block walk, compiled (ring.pxd: memcpy per packet) and from
    source, copies the same packets to the same places."""
    if not ring.COMPILED:
        pytest.skip("pcapreset.capture.ring is not compiled here: nothing to compare")
    rng = np.random.default_rng(21)
    hl = ring.REC_HDR if ethernet else ring.HDR
    field = 12 if ethernet else 13
    for n in (0, 1, 7, 150):
        block, first = _ring_block(rng, n, ethernet)
        mv = memoryview(block)
        got = []
        for mod in (ring, plain("capture.ring")):
            out = bytearray(ring.BLOCK_BYTES + 4096)
            heads: list[int] = []
            starts: list[int] = []
            end = mod._walk(mv.cast("I"), mv.cast("H"), mv, memoryview(out), first, n, 10, hl,
                            field, heads, starts)  # fmt: skip
            got.append((end, heads, starts, bytes(out)))
        assert got[0] == got[1]
        assert len(got[0][1]) == n


# ----------------------------------------------------------- eviction's work
def _compare_eviction(path: Path) -> None:
    """findings.no_finding / conn_findings, fold.split and Rollup.add give
    the same answers compiled and from source, on every connection."""
    if not (findings.COMPILED and fold.COMPILED):
        pytest.skip("findings / fold are not compiled here: nothing to compare")
    try:
        conns = tracked(flows, str(path))
    except PcapResetError as e:
        pytest.skip(f"unreadable: {e}")
    pf, pr, pfold = plain("interpret.findings"), plain("engine.rollup"), plain("engine.fold")
    pr.fold_rows = pfold.fold_rows  # (the plain Rollup folds with the plain fold)
    for c in conns:
        assert findings.no_finding(c) == pf.no_finding(c)
        assert findings.conn_findings(c) == pf.conn_findings(c)
    inf = float("inf")
    keep, out, frozen = fold.split(list(conns), inf)
    assert (keep, out, frozen) == pfold.split(list(conns), inf)
    assert fold.split(list(conns), -inf) == pfold.split(list(conns), -inf)
    fast, slow = rollup.Rollup(), pr.Rollup()
    for c in out:
        fast.add(c)
        slow.add(c)
    assert rollup_fields(fast, list) == rollup_fields(slow, list)
    # the host baselines (compiled: C structs) over every connection, reset ones included
    if hosts.COMPILED:
        got: dict = {}
        want: dict = {}
        hosts.add_host_bases(list(conns), got)
        plain("interpret.hosts").add_host_bases(list(conns), want)
        assert list(got) == list(want)
        assert [repr(h) for h in got.values()] == [repr(h) for h in want.values()]


@pytest.mark.parametrize(
    "path", [*sample_captures(), *CORPUS_FILES], ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_compiled_eviction_equals_plain(path):
    _compare_eviction(path)


def test_compiled_eviction_equals_plain_on_generated(tmp_path_factory):
    """A generated capture: hundreds of foldable connections (not vacuous)."""
    path = bench_capture(tmp_path_factory, 400, 11)
    _compare_eviction(path)
    assert len(fold.split(tracked(flows, str(path)), float("inf"))[1]) > 200


def _top_imports(module: str) -> set[str]:
    """The modules of _build.MODULES that ``module`` imports as it loads (its
    top-level imports, not those under TYPE_CHECKING or inside functions)."""
    import ast

    tree = ast.parse(Path(_build._path(module + ".py")).read_text())
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        for n in ast.walk(node) if isinstance(node, (ast.Try, ast.If)) else [node]:
            if not isinstance(n, ast.ImportFrom):
                continue
            if n.level:
                base = ".".join(module.split(".")[: -n.level] + ([n.module] if n.module else []))
            elif (n.module or "").startswith("pcapreset."):
                base = (n.module or "").removeprefix("pcapreset.")
            else:
                continue
            named = (base, *(f"{base}.{a.name}" for a in n.names))
            out |= {m for m in named if m in _build.MODULES}
    return out - {module}


def test_modules_load_after_the_ones_they_import():
    """prefer_fresh_source loads stale modules from source in MODULES order: a
    module must come after every compiled module it imports as it loads, or a
    stale one would be imported compiled before its turn."""
    for i, m in enumerate(_build.MODULES):
        later = _top_imports(m) - set(_build.MODULES[:i])
        assert not later, f"{m} imports {sorted(later)}, listed after it"
    assert _build.PARSE_ONLY <= set(_build.MODULES)


def test_modules_that_cimport_a_stale_one_run_from_source(monkeypatch):
    """A stale (or unbuilt) conn takes every module that cimports its C types
    to source too (directly or through another: flows through http), and
    they load after the modules they import."""
    monkeypatch.setattr(_build, "compiled_path", lambda m: f"/x/{m}.so")
    monkeypatch.setattr(_build, "_runs_compiled", lambda m: True)
    for m in _build.MODULES:
        monkeypatch.delitem(sys.modules, f"pcapreset.{m}", raising=False)
    monkeypatch.setattr(_build, "stale", lambda m: m == "track.conn")
    order = _build.run_from_source()
    assert set(order) == {"track.conn", *_build.CIMPORTS}
    assert order.index("track.conn") < order.index("track.http") < order.index("track.flows")
    assert order.index("track.connstate") < order.index("track.flows")  # flows imports it
    monkeypatch.setattr(_build, "stale", lambda m: m == "track.http")
    assert _build.run_from_source() == ["track.http", "track.flows"]  # flows cimports http
    monkeypatch.setattr(_build, "stale", lambda m: m == "track.connstate")
    # control and flows call its functions as C functions (cimport): they run from source too
    assert _build.run_from_source() == ["track.connstate", "track.control", "track.flows"]
    monkeypatch.setattr(_build, "stale", lambda m: False)
    assert _build.run_from_source() == []
    # a module the CIMPORTS name is compiled from other declarations: not built
    monkeypatch.setattr(_build, "_runs_compiled", lambda m: m != "track.conn")
    assert "engine.fold" in _build.run_from_source()
