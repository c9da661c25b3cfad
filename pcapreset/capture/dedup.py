"""dedup: packets captured twice are analysed once.

``tcpdump -i any`` on a host that forwards, bridges or translates traffic sees
each packet on every interface it crosses (a Docker host: the outside
interface, the bridge and the container's veth); a SPAN port or two mirror
sessions deliver the same packet twice. Left in, every connection would count
its packets two or three times, retransmission and duplicate-ACK counts would
be wrong, and with address translation (Docker's DNAT, the same packet seen
before and after it) each connection would appear twice, once per tuple.

A *copy* is a later packet, at most :data:`WINDOW_S` after the first, with the
same TCP sequence and acknowledgement numbers, flags, window, payload length,
IP ID, TCP option bytes and first payload bytes, a TTL at most one lower or
higher (a router decrements it), and either the same addresses and ports or
exactly one endpoint at another address (address translation rewrote it; two
connections of one host, whose packets can look alike in generated traffic,
differ in port only). What tells a
copy from a retransmission: a retransmission comes later than
:data:`WINDOW_S` (Linux's minimum RTO is 200 ms, its tail-loss probe 10 ms)
and, from stacks that number IPv4 packets, carries a new IP ID. Where the IP ID
cannot tell (IPv6; IP ID 0, as Linux sends its bare RSTs and SYN-ACKs), two
real packets can be identical: a closed socket answers a data segment and the
FIN after it with two equal RSTs. Such packets are taken for copies only once
the capture has shown a copy of a packet that nothing but a copy repeats within
:data:`WINDOW_S` (a nonzero IPv4 ID, or a SYN); then a retransmission within
:data:`WINDOW_S` of the original, with identical options and payload, would be
taken for a copy too.

Of a packet and its copies one row is kept. With address translation, it is
the one with the addresses seen outside the translation, for both directions
of a connection (so a connection keeps one tuple): when the destination
differs (the request direction of a DNAT, or the replies of an SNAT), the
first copy, which ``-i any`` sees before the translation; when the source
differs (the replies of a DNAT, or the requests of an SNAT), the last, seen
after it. So a Docker DNAT is analysed with the published address and port,
the upstream nginx connects to and names in its error.log (and that a capture
on nginx's host shows), an SNAT with the public source address.

Works on each decoded batch with numpy: every row is compared with the
:data:`LOOK_BACK` rows before it (copies seen by ``-i any`` follow the
original within microseconds, a few rows later; :data:`LOOK_BACK_SCAN` rows
until the capture has shown a copy), and the last rows of the previous batch
are kept for the next one. A copy whose original was in the previous batch
is dropped (the original already went on, whatever its tuple). Translations
whose source differs are learnt per flow, and the flow's later rows get the
outside source before they are compared; so only the first such packet of a
flow (usually its SYN-ACK or refusing RST) can keep the inside tuple, when its
outside copy falls into the next batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: the longest gap between a packet and its copy
WINDOW_S = 0.001
#: rows before each row that are compared with it: LOOK_BACK_SCAN until the
#: capture has shown a copy (most captures have none; this is their whole cost)
LOOK_BACK, LOOK_BACK_SCAN = 16, 4
#: TCP option and first payload bytes compared between a packet and its copy
_SIG = 56
#: address pairs (outside endpoint key, inside endpoint key) kept for the warning
MAX_PAIRS = 64
#: translated flows remembered (their later rows are rewritten to the outside source)
MAX_FLOWS = 1 << 16


class _Ctx:
    """The previous batch's last rows: their columns (views of arrays the
    batch owns) and, once the capture has shown copies, their option and
    payload bytes (copied: the batch's buffer may be reused for the next one)."""

    __slots__ = ("ts", "src", "src0", "dst", "ttl", "key", "sig", "cols")

    def __init__(
        self, b, rows: slice | np.ndarray, key: np.ndarray, with_sig: bool, src0: np.ndarray
    ) -> None:
        self.ts, self.src, self.dst, self.ttl = b.ts[rows], b.src[rows], b.dst[rows], b.ttl[rows]
        self.src0 = src0[rows]  # the sources as captured (``src``: after translation)
        self.key = key[rows]
        self.cols = [c[rows] for c in (b.seq, b.ack, b.flags, b.plen, b.ipid, b.win, b.optlen)]
        self.sig = None
        if with_sig:
            idx = np.arange(len(b))[rows]
            self.sig = _sig(b, idx)

    @property
    def exact(self) -> np.ndarray:
        return np.stack(self.cols, axis=1)


def _key(b) -> np.ndarray:
    """Sequence and acknowledgement numbers, IP ID and payload length folded
    into one int64: copies share it; the rows that share it are then compared
    field by field."""
    k = b.ack << 32
    k ^= b.seq
    k ^= b.ipid << 45
    k ^= b.plen << 14
    return k


def _pair_hash(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    return (src * 0x9E3779B1) ^ (dst * 0x85EBCA77 + 0x165667B1)


def _exact(b) -> np.ndarray:
    """(n, 7) of the fields a copy shares exactly."""
    return np.stack([b.seq, b.ack, b.flags, b.plen, b.ipid, b.win, b.optlen], axis=1)


def _sig(b, rows: np.ndarray) -> np.ndarray:
    """(len(rows), 56) uint8: the TCP option bytes and the payload bytes after
    them, the first 56 of them captured (0-padded). Rows compared with it have
    the same option and payload lengths (:func:`_exact`)."""
    out = np.zeros((len(rows), _SIG), dtype=np.uint8)
    j = np.arange(_SIG)
    for bi in np.unique(b.bufidx[rows]).tolist():
        sel = np.nonzero(b.bufidx[rows] == bi)[0]
        r = rows[sel]
        u8 = np.frombuffer(b.bufs[bi], dtype=np.uint8)
        start = b.poff[r] - b.optlen[r]
        n = np.minimum(b.optlen[r] + b.pcap[r], _SIG)
        idx = start[:, None] + j
        idx *= j < n[:, None]  # past the captured bytes: index 0, then zeroed
        got = u8[idx]
        got[idx == 0] = 0
        out[sel] = got
    return out


class CopyFilter:
    """Drops copies from a stream of decoded batches (state: the last rows seen)."""

    def __init__(self, stats: Any) -> None:
        """``stats``: the decoder's DecodeStats (``copies``, ``translated``,
        ``translated_pairs``: (endpoint outside the translation, inside) -> copies)."""
        self.stats = stats
        self._tail: _Ctx | None = None
        #: translations learnt from copies whose source differs, per flow (inside
        #: source, destination -> outside source): later rows of those flows are
        #: rewritten at once, so a flow keeps the outside tuple even where a copy
        #: falls into the next batch (at most MAX_FLOWS flows)
        #: (hash, inside source, destination, outside source), sorted by hash
        z = np.zeros(0, dtype=np.int64)
        self._nat: tuple[np.ndarray, ...] = (z, z, z, z, z)
        self._learnt = False
        #: copies seen of packets that only a copy repeats (see _resolve)
        self.evidence = 0

    def filter(self, b):  # TcpBatch -> TcpBatch (decode imports this module)
        n = len(b)
        if n == 0:
            return b
        src0 = b.src
        rewritten = self._rewrite(b) if len(self._nat[0]) else None
        self._learnt = False
        key = _key(b)
        t = self._tail
        nt = 0 if t is None else len(t.ts)
        allkey = key if t is None else np.concatenate([t.key, key])
        # row i against rows i+1 .. i+w
        w = LOOK_BACK if self.evidence else LOOK_BACK_SCAN
        pi, pj = [], []
        for d in range(1, min(w, len(allkey) - 1) + 1):
            m = allkey[d:] == allkey[:-d]
            if m.any():
                i = np.flatnonzero(m)
                pi.append(i)
                pj.append(i + d)
        keep = None
        if pi:
            ci, cj = np.concatenate(pi), np.concatenate(pj)
            ts = b.ts if t is None else np.concatenate([t.ts, b.ts])
            close = (np.abs(ts[cj] - ts[ci]) <= WINDOW_S) & (cj >= nt)
            if close.any():
                keep = self._resolve(b, t, nt, ci[close], cj[close], rewritten, src0)
        if self._learnt:
            # translations learnt from this batch apply to its other rows too (a
            # flow's later packet whose copy falls into the next batch)
            self._rewrite(b)
        lo = max(0, n - LOOK_BACK)
        # copies dropped are not originals for the next batch
        rows = slice(lo, n) if keep is None else np.nonzero(keep[lo:])[0] + lo
        self._tail = _Ctx(b, rows, key, with_sig=self.evidence > 0, src0=src0)
        if keep is None:
            return b
        return b.take(np.nonzero(keep)[0])

    def _rewrite(self, b) -> np.ndarray | None:
        """Rows of flows known to be translated get their outside source."""
        h0, s0, d0, o0, t0 = self._nat
        h = _pair_hash(b.src, b.dst)
        pos = np.minimum(np.searchsorted(h0, h), len(h0) - 1)
        m = (h0[pos] == h) & (s0[pos] == b.src) & (d0[pos] == b.dst)
        if not m.any():
            return None
        src = b.src.copy()
        src[m] = o0[pos[m]]
        b.src = src
        ttl = b.ttl.copy()  # and the TTL of the copy beyond the translating router
        ttl[m] += t0[pos[m]]
        b.ttl = ttl
        return m

    def _learn(
        self, inside: np.ndarray, dst: np.ndarray, outside: np.ndarray, dttl: np.ndarray
    ) -> None:
        room = MAX_FLOWS - len(self._nat[0])
        if room <= 0:
            return
        h = _pair_hash(inside, dst)
        h, first = np.unique(h, return_index=True)  # one entry per flow
        inside, dst, outside, dttl = inside[first], dst[first], outside[first], dttl[first]
        h0, s0, d0, _, _ = self._nat
        if len(h0):
            pos = np.minimum(np.searchsorted(h0, h), len(h0) - 1)
            new = ~((h0[pos] == h) & (s0[pos] == inside) & (d0[pos] == dst))
            h, inside, dst, outside, dttl = h[new], inside[new], dst[new], outside[new], dttl[new]
        if not len(h):
            return
        new_cols = (h[:room], inside[:room], dst[:room], outside[:room], dttl[:room])
        cols = [np.concatenate([a, b]) for a, b in zip(self._nat, new_cols, strict=True)]
        order = np.argsort(cols[0], kind="stable")
        self._nat = tuple(c[order] for c in cols)
        self._learnt = True

    def _resolve(self, b, t, nt, ci, cj, rewritten, src0):
        """Which rows of ``b`` to keep, given candidate pairs (indices over tail + batch)."""
        n = len(b)
        src = b.src if t is None else np.concatenate([t.src, b.src])
        dst = b.dst if t is None else np.concatenate([t.dst, b.dst])
        ttl = b.ttl if t is None else np.concatenate([t.ttl, b.ttl])
        ex = _exact(b) if t is None else np.concatenate([t.exact, _exact(b)])
        rows = np.unique(np.concatenate([ci, cj]))
        cur = rows[rows >= nt]
        sig = np.zeros((nt + n, _SIG), dtype=np.uint8)
        sig[cur] = _sig(b, cur - nt)
        # the previous batch's bytes are kept once the capture has shown copies;
        # before that only telling packets (below) are taken, bytes unchecked
        if t is not None and t.sig is not None:
            sig[:nt] = t.sig
        same_bytes = (sig[ci] == sig[cj]).all(axis=1)
        if t is not None and t.sig is None:
            same_bytes |= ci < nt
        # the same tuple, or one endpoint rewritten to another address (a NAT
        # changes the address; two connections of one host differ in port only)
        same_src, same_dst = src[ci] == src[cj], dst[ci] == dst[cj]
        other_addr = np.where(
            same_src, dst[ci] >> 16 != dst[cj] >> 16, src[ci] >> 16 != src[cj] >> 16
        )
        ok = (
            ((same_src & same_dst) | ((same_src | same_dst) & other_addr))
            & (np.abs(ttl[ci] - ttl[cj]) <= 1)
            & (ex[ci] == ex[cj]).all(axis=1)
            & same_bytes
        )
        # packets that only a copy repeats within WINDOW_S: an IPv4 ID other than 0,
        # or a SYN; the others (IPv6, ID 0: a bare RST answering two segments is
        # sent twice, identical) are copies only in a capture that has shown copies
        telling = ok & ((ex[cj, 4] > 0) | ((ex[cj, 2] & 0x02) != 0))
        self.evidence += int(np.count_nonzero(telling))
        if not self.evidence:
            ok = telling
        ci, cj = ci[ok], cj[ok]
        if not len(ci):
            return None
        # each copy's root: the earliest row it is a copy of (pairs with larger d come later)
        order = np.argsort(cj - ci, kind="stable")
        root = np.arange(nt + n)
        root[cj[order]] = ci[order]
        root = root[root]  # a copy of a copy belongs to the first's group
        copy = root != np.arange(nt + n)
        keep_all = ~copy
        # translated groups whose source differs: keep a copy with the last one's source
        grp = np.nonzero(copy)[0]
        r = root[grp]
        # a destination translated (DNAT requests) tells the replies' translation:
        # from the inside destination back to the source, the outside one
        dm = dst[grp] != dst[r]
        if dm.any():
            self._learn(dst[grp[dm]], src[grp[dm]], dst[r[dm]], ttl[grp[dm]] - ttl[r[dm]])
        moved = src[grp] != src[r]
        if moved.any():
            last = np.full(nt + n, -1)
            np.maximum.at(last, r[moved], grp[moved])
            roots = np.unique(r[moved])
            want = src[last[roots]]
            self._learn(src[roots], dst[roots], want, ttl[last[roots]] - ttl[roots])
            roots, want = roots[roots >= nt], want[roots >= nt]  # else it already went on
            if len(roots):
                # in each group, the first member with the last one's source
                wanted = np.full(nt + n, -1)
                wanted[roots] = want
                members = np.concatenate([roots, grp[np.isin(r, roots)]])
                mroot = root[members]
                hit = members[src[members] == wanted[mroot]]
                pick = np.full(nt + n, nt + n)
                np.minimum.at(pick, root[hit], hit)
                keep_all[roots] = False
                keep_all[pick[roots]] = True
        # a group whose kept row was given its outside source keeps, where the batch
        # has it, the copy captured with that source (the outside interface's view:
        # its TTL and timing match the flow's other direction)
        orig0 = src0 if t is None else np.concatenate([t.src0, src0])
        kr = np.flatnonzero(keep_all)
        kr = kr[(kr >= nt) & (orig0[kr] != src[kr]) & copy.any()]
        if len(kr):
            members = grp[np.isin(root[grp], kr) & (orig0[grp] == src[grp])]
            members = members[src[members] == src[root[members]]]
            if len(members):
                best = np.full(nt + n, nt + n)
                np.minimum.at(best, root[members], members)
                swap = kr[best[kr] < nt + n]
                keep_all[swap] = False
                keep_all[best[swap]] = True
        # count what is dropped (in this batch) and the address pairs
        st = self.stats
        kept_of = np.full(nt + n, -1)
        kept_rows = np.nonzero(keep_all)[0]
        kept_of[root[kept_rows]] = kept_rows
        dropped = np.nonzero(~keep_all[nt:])[0] + nt
        k = kept_of[root[dropped]]
        same = (src[dropped] == src[k]) & (dst[dropped] == dst[k])
        # compared with an outside source they were given: translated
        same &= (orig0[dropped] == src[dropped]) & (orig0[k] == src[k])
        st.copies += int(np.count_nonzero(same))
        st.translated += int(np.count_nonzero(~same))
        dr, kr = dropped[~same], k[~same]
        if len(dr):
            # (outside, inside) endpoint of each translated copy; the few distinct pairs
            by_dst = dst[dr] != dst[kr]
            by_src = ~by_dst & (src[dr] != src[kr])
            outside = np.where(by_dst, dst[kr], src[kr])
            inside = np.where(by_dst, dst[dr], src[dr])
            redo = ~by_dst & ~by_src  # rewritten to the outside source: the original one
            if redo.any():
                orig = src0 if t is None else np.concatenate([t.src0, src0])
                inside[redo] = np.where(
                    orig[dr[redo]] != src[dr[redo]], orig[dr[redo]], orig[kr[redo]]
                )
            uniq, cnt = np.unique(np.stack([outside, inside], 1), axis=0, return_counts=True)
            pairs = st.translated_pairs
            for (o, ins), c in zip(uniq.tolist(), cnt.tolist(), strict=True):
                if (o, ins) in pairs or len(pairs) < MAX_PAIRS:
                    pairs[(o, ins)] = pairs.get((o, ins), 0) + c
        return keep_all[nt:]
