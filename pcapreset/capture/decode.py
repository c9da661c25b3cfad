"""decode: raw frames -> columns of TCP packet fields.

With :mod:`.linklayer`, the only module that knows link types. Works on a
whole :class:`FrameBatch` at once with numpy gathers (one fancy-index per
header field for every frame in the chunk) instead of one Python object per
layer per packet.

Supported link types: Ethernet (1) with 802.1Q / QinQ tags and PPPoE, Linux
cooked SLL (113) and SLL2 (276), raw IP (12, 14, 101), raw IPv4 (228), raw IPv6
(229), BSD null (0) and loop (108), 802.11 data frames (105). IPv4 with options
(non-first fragments are counted, not reassembled), IPv6 with extension headers.
Tunnels (GRE, ERSPAN, VXLAN, Geneve; :mod:`pcapreset.capture.tunnels`) are opened and
their inner frames decoded the same way, up to :data:`MAX_NESTING` deep.

Every frame ends up either as a TCP row or in one of the counters of
:class:`DecodeStats`; nothing is dropped silently.
"""

from __future__ import annotations

import numpy as np

from . import decode_kernel
from .dedup import CopyFilter
from .linklayer import be16, be32, link_layer
from .sources import FrameBatch
from .tcp import (
    _COLS,
    _INT_COLS,
    SUPPORTED_LINKTYPES,
    AddressBook,
    DecodeStats,
    TcpBatch,
    _empty,
    _i64,
)

_IPV6_EXT = (0, 43, 44, 51, 60, 135, 139, 140)
#: tunnels inside tunnels are opened this deep; deeper ones are counted undecodable
MAX_NESTING = 4


def _inside(fb: FrameBatch) -> bool:
    """Every frame lies inside the batch's buffer (the kernel reads unchecked)."""
    return (
        int(fb.off.min()) >= 0
        and int(fb.caplen.min()) >= 0
        and int((fb.off + fb.caplen).max()) <= len(fb.buf)
    )


class Decoder:
    """Turns FrameBatches into TcpBatches; keeps counts in ``stats``.

    ``kernel``: settle plain IPv4 frames with :mod:`pcapreset.decode_kernel`
    first (default: when it is compiled); the rest always goes through the
    numpy code below. Same rows, same counts either way. ``dedup``: drop
    packets captured twice (:mod:`pcapreset.capture.dedup`; counted in ``stats``).
    """

    def __init__(
        self, book: AddressBook | None = None, kernel: bool | None = None, dedup: bool = True
    ) -> None:
        self.book = book or AddressBook()
        self.stats = DecodeStats()
        self.kernel = decode_kernel.COMPILED if kernel is None else kernel
        #: drops packets captured twice (``dedup``): one filter per input file, since
        #: its state spans the file's batches (several files' batches interleave)
        self.dedup = dedup
        self._copies: dict[int, CopyFilter] = {}

    def decode(self, fb: FrameBatch) -> TcpBatch:
        if self.kernel and len(fb.off) and _inside(fb):
            b = self._decode_kernel(fb)
        else:
            b = self._decode_numpy(fb)
        if not self.dedup:
            return b
        f = self._copies.get(fb.file_index)
        if f is None:
            f = self._copies[fb.file_index] = CopyFilter(self.stats)
        return f.filter(b)

    def _decode_kernel(self, fb: FrameBatch) -> TcpBatch:
        """One compiled pass over the frames; what it leaves goes to numpy."""
        st = self.stats
        n = len(fb.off)
        lts = np.ascontiguousarray(fb.linktype, dtype=np.int32)
        blk = np.empty((len(_COLS) - 1, n), dtype=np.int64)  # the int columns, in order
        sel = np.empty(n, dtype=np.int64)
        slow = np.empty(n, dtype=np.int64)
        counts = np.zeros(6, dtype=np.int64)
        m = decode_kernel.ipv4_tcp(
            fb.buf, _i64(fb.off), _i64(fb.caplen), _i64(fb.wirelen), lts, sel, blk, slow, counts
        )
        ns = int(counts[decode_kernel.C_SLOW])
        settled = n - ns
        st.frames += settled
        st.tcp += m
        st.non_ip += int(counts[decode_kernel.C_NON_IP])
        st.non_tcp += int(counts[decode_kernel.C_NON_TCP])
        st.ip_fragments += int(counts[decode_kernel.C_FRAGMENTS])
        st.snap_truncated += int(counts[decode_kernel.C_SNAP])
        if settled:
            lt0 = int(lts[0])
            if ns == 0 and (lts == lt0).all():
                st.linktypes[lt0] = st.linktypes.get(lt0, 0) + n
            else:
                done = np.ones(n, dtype=bool)
                done[slow[:ns]] = False
                vals, cnts = np.unique(lts[done], return_counts=True)
                for lt, cnt in zip(vals.tolist(), cnts.tolist(), strict=True):
                    st.linktypes[lt] = st.linktypes.get(lt, 0) + cnt
        s = sel[:m]
        blk[-2, :m] = 0  # bufidx
        blk[-1, :m] = (np.int64(fb.file_index) << 40) | fb.frame_no[s]
        cols = {f: blk[k, :m] for k, f in enumerate(_INT_COLS)}
        b = TcpBatch(ts=fb.ts[s], **cols, bufs=[fb.buf])  # type: ignore[arg-type]
        if not ns:
            return b
        si = slow[:ns]
        rest = self._decode_numpy(
            FrameBatch(
                buf=fb.buf,
                off=fb.off[si],
                caplen=fb.caplen[si],
                wirelen=fb.wirelen[si],
                ts=fb.ts[si],
                linktype=fb.linktype[si],
                frame_no=fb.frame_no[si],
                file_index=fb.file_index,
            )
        )
        if not m:
            return rest
        if not len(rest):
            return b
        # both parts point into fb.buf (bufidx 0): back to frame order
        cols = {f: np.concatenate([getattr(b, f), getattr(rest, f)]) for f in _INT_COLS}
        ts = np.concatenate([b.ts, rest.ts])
        both = TcpBatch(ts=ts, **cols, bufs=[fb.buf])  # type: ignore[arg-type]
        return both.take(np.argsort(both.frame, kind="stable"))

    def _decode_numpy(self, fb: FrameBatch, depth: int = 0) -> TcpBatch:
        """``depth`` > 0: ``fb`` holds the inner frames of tunnels at that
        depth (counted already as frames of their outer link type)."""
        st = self.stats
        n = len(fb.off)
        if not depth:
            st.frames += n
        u8 = np.frombuffer(fb.buf, dtype=np.uint8)
        off, cap, lt_col = fb.off, fb.caplen, fb.linktype
        l3 = np.zeros(n, dtype=np.int64)
        ver = np.zeros(n, dtype=np.int64)
        ok = np.zeros(n, dtype=bool)
        lts = np.unique(lt_col) if n else ()
        for lt in lts:
            lt = int(lt)
            m = lt_col == lt if len(lts) > 1 else slice(None)
            cnt = int(np.count_nonzero(lt_col == lt)) if len(lts) > 1 else n
            if not depth:
                st.linktypes[lt] = st.linktypes.get(lt, 0) + cnt
            if lt not in SUPPORTED_LINKTYPES:
                st.unsupported[lt] = st.unsupported.get(lt, 0) + cnt
                continue
            a, v, k = link_layer(u8, lt, off[m], cap[m])
            l3[m], ver[m], ok[m] = a, v, k
        supported = np.isin(lt_col, list(SUPPORTED_LINKTYPES)) if n else np.zeros(0, bool)
        st.bad("link header cut short", np.count_nonzero(supported & ~ok))
        st.non_ip += int(np.count_nonzero(supported & ok & (ver == 0)))
        end = off + cap
        is4 = ok & (ver == 4)
        is6 = ok & (ver == 6)

        # ---------------------------------------------------------- IPv4
        i4 = np.nonzero(is4)[0]
        r4 = self._ipv4(u8, i4, l3[i4], end[i4], fb.wirelen[i4] - (l3[i4] - off[i4]))
        # ---------------------------------------------------------- IPv6
        i6 = np.nonzero(is6)[0]
        r6 = self._ipv6(u8, i6, l3[i6], end[i6], fb.wirelen[i6] - (l3[i6] - off[i6]))
        inner = self._tunnels(u8, fb, end, r4[7], r6[7], depth)

        idx = np.concatenate([r4[0], r6[0]])
        if len(idx) == 0:
            return inner if inner is not None else _empty(fb.buf)
        l4 = np.concatenate([r4[1], r6[1]])
        l4len = np.concatenate([r4[2], r6[2]])
        ttl = np.concatenate([r4[3], r6[3]])
        ipid = np.concatenate([r4[4], r6[4]])
        saddr = np.concatenate([r4[5], r6[5]])
        daddr = np.concatenate([r4[6], r6[6]])
        e = end[idx]

        # ----------------------------------------------------------- TCP
        full = (e - l4) >= 20
        st.bad("TCP header cut short", np.count_nonzero(~full))
        if not full.all():
            keep = np.nonzero(full)[0]
            idx, l4, l4len, ttl, ipid, saddr, daddr, e = (
                x[keep] for x in (idx, l4, l4len, ttl, ipid, saddr, daddr, e)
            )
        sport = be16(u8, l4)
        dport = be16(u8, l4 + 2)
        seq = be32(u8, l4 + 4)
        ack = be32(u8, l4 + 8)
        b12 = u8[l4 + 12].astype(np.int64)
        doff = (b12 >> 4) * 4
        flags = ((b12 & 1) << 8) | u8[l4 + 13]
        win = be16(u8, l4 + 14)
        plen = l4len - doff
        good = (doff >= 20) & (plen >= 0)
        st.bad("bad TCP header length", np.count_nonzero(~good))
        if not good.all():
            keep = np.nonzero(good)[0]
            cols = [idx, l4, ttl, ipid, saddr, daddr, e, sport, dport, seq, ack, doff, flags, win]
            idx, l4, ttl, ipid, saddr, daddr, e, sport, dport, seq, ack, doff, flags, win = (
                x[keep] for x in cols
            )
            plen = plen[keep]
        # a snaplen that cuts into the TCP options: keep only the captured option
        # bytes (poff - optlen must never reach past the frame into the next one)
        poff = np.minimum(l4 + doff, e)
        pcap = np.clip(e - poff, 0, plen)
        st.snap_truncated += int(np.count_nonzero(pcap < plen))
        m = len(idx)
        st.tcp += m
        src = (saddr << 16) | sport
        dst = (daddr << 16) | dport
        frame = (np.int64(fb.file_index) << 40) | fb.frame_no[idx]
        b = TcpBatch(
            ts=fb.ts[idx],
            src=src,
            dst=dst,
            seq=seq,
            ack=ack,
            flags=flags,
            win=win,
            plen=plen,
            ttl=ttl,
            ipid=ipid,
            optlen=poff - l4 - 20,
            poff=poff,
            pcap=pcap,
            bufidx=np.zeros(m, dtype=np.int64),
            frame=frame,
            bufs=[fb.buf],
        )
        if inner is not None and len(inner):
            # inner frames of tunnels: the same buffer, back to frame order
            both = {f: np.concatenate([getattr(b, f), getattr(inner, f)]) for f in _INT_COLS}
            ts = np.concatenate([b.ts, inner.ts])
            b = TcpBatch(ts=ts, **both, bufs=[fb.buf])  # type: ignore[arg-type]
            b = b.take(np.argsort(b.frame, kind="stable"))
        elif len(r4[0]) and len(r6[0]):
            # IPv4 rows come first, then IPv6: back to file order
            b = b.take(np.argsort(idx, kind="stable"))
        return b

    def _tunnels(self, u8, fb: FrameBatch, end, t4, t6, depth: int) -> TcpBatch | None:
        """The TCP rows inside the tunnel candidates ``t4``, ``t6`` (frame
        index, transport header offset, IP packet end, protocol), or None."""
        idx = np.concatenate([t4[0], t6[0]])
        if not len(idx):
            return None
        from . import tunnels  # (only for a capture with tunnel candidates)

        st = self.stats
        l4 = np.concatenate([t4[1], t6[1]])
        ipend = np.concatenate([t4[2], t6[2]])
        cend = np.minimum(end[idx], ipend)
        inner, bad, non_tcp = tunnels.decapsulate(u8, l4, cend, np.concatenate([t4[3], t6[3]]))
        st.non_tcp += non_tcp
        for reason, cnt in bad.items():
            st.bad(reason, cnt)
        if not len(inner.sel):
            return None
        if depth >= MAX_NESTING:
            st.bad(f"tunnels nested more than {MAX_NESTING} deep", len(inner.sel))
            return None
        for k, cnt in zip(*np.unique(inner.kind, return_counts=True), strict=True):
            name = tunnels.NAMES[int(k)]
            st.tunnels[name] = st.tunnels.get(name, 0) + int(cnt)
        order = np.argsort(idx[inner.sel], kind="stable")  # IPv4 and IPv6: frame order
        sel, ioff = inner.sel[order], inner.off[order]
        fi = idx[sel]
        sub = FrameBatch(
            buf=fb.buf,
            off=ioff,
            caplen=np.maximum(cend[sel] - ioff, 0),
            wirelen=np.maximum(ipend[sel] - ioff, 0),
            ts=fb.ts[fi],
            linktype=inner.lt[order].astype(np.int32),
            frame_no=fb.frame_no[fi],
            file_index=fb.file_index,
        )
        return self._decode_numpy(sub, depth + 1)

    def _ipv4(self, u8, idx, l3, end, wire_l3):
        st = self.stats
        hdr = (end - l3) >= 20
        st.bad("IPv4 header cut short", np.count_nonzero(~hdr))
        idx, l3, end, wire_l3 = idx[hdr], l3[hdr], end[hdr], wire_l3[hdr]
        b0 = u8[l3].astype(np.int64)
        ihl = (b0 & 15) * 4
        good = ((b0 >> 4) == 4) & (ihl >= 20) & ((end - l3) >= ihl)
        st.bad("bad IPv4 header", np.count_nonzero(~good))
        idx, l3, end, wire_l3, ihl = idx[good], l3[good], end[good], wire_l3[good], ihl[good]
        tot = be16(u8, l3 + 2)
        tot = np.where(tot == 0, wire_l3, tot)  # TSO/GSO captures write 0
        lenok = tot >= ihl
        st.bad("bad IPv4 total length", np.count_nonzero(~lenok))
        proto = u8[l3 + 9]
        frag = be16(u8, l3 + 6) & 0x1FFF
        tcp = lenok & (proto == 6)
        nonfirst = tcp & (frag != 0)
        tun = lenok & ((proto == 47) | (proto == 17))
        gre_frag = tun & (proto == 47) & (frag != 0)  # a piece of a tunnelled packet
        tun &= frag == 0
        st.ip_fragments += int(np.count_nonzero(nonfirst | gre_frag))
        st.non_tcp += int(np.count_nonzero(lenok & (proto != 6) & ~tun & ~gre_frag))
        ti = np.nonzero(tun)[0]
        t = (idx[ti], l3[ti] + ihl[ti], l3[ti] + tot[ti], proto[ti].astype(np.int64))
        sel = np.nonzero(tcp & ~nonfirst)[0]
        l3s = l3[sel]
        return (
            idx[sel],
            l3s + ihl[sel],
            tot[sel] - ihl[sel],
            u8[l3s + 8].astype(np.int64),
            be16(u8, l3s + 4),
            be32(u8, l3s + 12),
            be32(u8, l3s + 16),
            t,
        )

    def _ipv6(self, u8, idx, l3, end, wire_l3):
        st = self.stats
        hdr = ((end - l3) >= 40) & ((u8[np.where((end - l3) >= 1, l3, 0)] >> 4) == 6)
        st.bad("IPv6 header cut short or bad version", np.count_nonzero(~hdr))
        idx, l3, end, wire_l3 = idx[hdr], l3[hdr], end[hdr], wire_l3[hdr]
        plen = be16(u8, l3 + 4)
        plen = np.where(plen == 0, wire_l3 - 40, plen)  # jumbo / GSO
        nh = u8[l3 + 6].astype(np.int64)
        l4 = l3 + 40
        rest = plen.copy()
        alive = np.ones(len(idx), dtype=bool)
        frag = np.zeros(len(idx), dtype=bool)
        for _ in range(8):
            ext = alive & np.isin(nh, _IPV6_EXT)
            if not ext.any():
                break
            fits = ext & ((end - l4) >= 8)
            st.bad("IPv6 extension header cut short", np.count_nonzero(ext & ~fits))
            alive &= ~(ext & ~fits)
            p = np.where(fits, l4, 0)
            elen = np.where(
                nh == 44,
                8,
                np.where(
                    nh == 51,
                    (u8[p + 1].astype(np.int64) + 2) * 4,
                    (u8[p + 1].astype(np.int64) + 1) * 8,
                ),
            )
            isfrag = fits & (nh == 44) & ((be16(u8, p + 2) >> 3) != 0)
            frag |= isfrag
            new_nh = u8[p].astype(np.int64)
            nh = np.where(fits, new_nh, nh)
            l4 = np.where(fits, l4 + elen, l4)
            rest = np.where(fits, rest - elen, rest)
        tcp = alive & (nh == 6) & (rest >= 0)
        nonfirst = tcp & frag
        tun = alive & ((nh == 47) | (nh == 17)) & (rest >= 0)
        gre_frag = tun & (nh == 47) & frag
        tun &= ~frag
        st.ip_fragments += int(np.count_nonzero(nonfirst | gre_frag))
        st.non_tcp += int(np.count_nonzero(alive & (nh != 6) & ~tun & ~gre_frag))
        ti = np.nonzero(tun)[0]
        t = (idx[ti], l4[ti], l4[ti] + rest[ti], nh[ti])
        st.bad("bad IPv6 payload length", np.count_nonzero(alive & (nh == 6) & (rest < 0)))
        sel = np.nonzero(tcp & ~nonfirst)[0]
        l3s = l3[sel]
        srcraw = u8[(l3s + 8)[:, None] + np.arange(16)]
        dstraw = u8[(l3s + 24)[:, None] + np.arange(16)]
        return (
            idx[sel],
            l4[sel],
            rest[sel],
            u8[l3s + 7].astype(np.int64),
            np.full(len(sel), -1, dtype=np.int64),
            self.book.v6_ids(srcraw),
            self.book.v6_ids(dstraw),
            t,
        )
