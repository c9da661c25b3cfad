# cython: boundscheck=False, wraparound=False
"""decode_kernel: decode's per-frame loop for the common case (compiled).

:func:`ipv4_tcp` walks a batch's frames once and settles every frame that is
plain IPv4 on Ethernet (no VLAN tag, no PPPoE), Linux cooked SLL/SLL2 or raw
IP: a TCP row, or a count (not IP, not TCP, a non-first fragment). Anything
else (IPv6, tags, BSD loopback, GRE and UDP to a tunnel port
(:data:`pcapreset.capture.tunnels.TUNNEL_PORTS`), anything cut short or malformed) is left to
the numpy code in :mod:`pcapreset.decode`, which knows every case; the two
agree on every frame the kernel settles (tests/test_decode_kernel.py).

Compiled (setup.py; decode_kernel.pxd types the loop) it costs a few tens of
nanoseconds per frame instead of ~40 numpy passes per chunk; decode.py uses
it only then (as plain Python the numpy code is faster), but the source runs
uncompiled too, with the same results. Compiled without index checks (first
line): every read is inside a frame whose length the loop checked first, and
the caller checks that every frame lies inside ``buf``.
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled

#: rows of the ``out`` block, in this order (decode._INT_COLS minus bufidx, frame)
ROWS = ("src", "dst", "seq", "ack", "flags", "win", "plen", "ttl", "ipid", "optlen", "poff", "pcap")
#: slots of ``counts``
C_ROWS, C_SLOW, C_NON_IP, C_NON_TCP, C_FRAGMENTS, C_SNAP = range(6)


def ipv4_tcp(buf, off, cap, wirelen, lts, sel, out, slow, counts) -> int:  # noqa: PLR0915
    """Settle the frames of one batch that are plain IPv4.

    ``buf``: the chunk's bytes; ``off``, ``cap``, ``wirelen`` (int64) and
    ``lts`` (int32): the frames' columns; every frame must lie inside ``buf``
    (``0 <= off``, ``0 <= cap``, ``off + cap <= len(buf)``). Writes the TCP rows in frame order:
    ``sel[j]`` is the frame of row ``j`` and ``out[k, j]`` its field
    :data:`ROWS` ``[k]``; appends the frames left to the numpy code to
    ``slow``; adds to ``counts`` (see ``C_*``). Returns the number of rows.
    """
    v = buf
    n = len(off)
    m = 0
    ns = 0
    non_ip = 0
    non_tcp = 0
    frags = 0
    snap = 0
    for i in range(n):
        o = off[i]
        c = cap[i]
        lt = lts[i]
        # ---- link header: where IPv4 starts, or not IP, or leave it
        if lt == 1:
            if c < 14:
                slow[ns] = i
                ns += 1
                continue
            et = v[o + 12] << 8 | v[o + 13]
            l3 = o + 14
        elif lt == 276:
            if c < 20:
                slow[ns] = i
                ns += 1
                continue
            et = v[o] << 8 | v[o + 1]
            l3 = o + 20
        elif lt == 113:
            if c < 16:
                slow[ns] = i
                ns += 1
                continue
            et = v[o + 14] << 8 | v[o + 15]
            l3 = o + 16
        elif lt == 12 or lt == 14 or lt == 101 or lt == 228:
            if c < 1 or (lt != 228 and v[o] >> 4 != 4):
                slow[ns] = i
                ns += 1
                continue
            et = 0x0800
            l3 = o
        else:
            slow[ns] = i
            ns += 1
            continue
        if et != 0x0800:
            if (lt == 1 and (et == 0x8100 or et == 0x88A8 or et == 0x9100 or et == 0x8864)) or (
                et == 0x86DD
            ):
                slow[ns] = i
                ns += 1
            else:
                non_ip += 1
            continue
        # ---- IPv4
        e = o + c
        if e - l3 < 20:
            slow[ns] = i
            ns += 1
            continue
        b0 = v[l3]
        ihl = (b0 & 15) * 4
        if b0 >> 4 != 4 or ihl < 20 or e - l3 < ihl:
            slow[ns] = i
            ns += 1
            continue
        tot = v[l3 + 2] << 8 | v[l3 + 3]
        if tot == 0:  # TSO/GSO captures write 0
            tot = wirelen[i] - (l3 - o)
        if tot < ihl:
            slow[ns] = i
            ns += 1
            continue
        pr = v[l3 + 9]
        if pr != 6:
            # GRE, and UDP to a tunnel port (decode.tunnels), are left to numpy
            if pr == 47:
                slow[ns] = i
                ns += 1
                continue
            if pr == 17 and e - l3 >= ihl + 4:
                dp = v[l3 + ihl + 2] << 8 | v[l3 + ihl + 3]
                if dp == 4789 or dp == 8472 or dp == 6081:
                    slow[ns] = i
                    ns += 1
                    continue
            non_tcp += 1
            continue
        if (v[l3 + 6] & 0x1F) or v[l3 + 7]:  # fragment offset
            frags += 1
            continue
        # ---- TCP
        l4 = l3 + ihl
        if e - l4 < 20:
            slow[ns] = i
            ns += 1
            continue
        b12 = v[l4 + 12]
        doff = (b12 >> 4) * 4
        plen = tot - ihl - doff
        if doff < 20 or plen < 0:
            slow[ns] = i
            ns += 1
            continue
        poff = l4 + doff
        if poff > e:
            poff = e
        pc = e - poff
        if pc > plen:
            pc = plen
        if pc < plen:
            snap += 1
        # (w is 64 bits wide when compiled: every shift is on w, none on a C int)
        w = v[l3 + 12]
        w = ((w << 8 | v[l3 + 13]) << 8 | v[l3 + 14]) << 8 | v[l3 + 15]
        out[0, m] = w << 16 | v[l4] << 8 | v[l4 + 1]
        w = v[l3 + 16]
        w = ((w << 8 | v[l3 + 17]) << 8 | v[l3 + 18]) << 8 | v[l3 + 19]
        out[1, m] = w << 16 | v[l4 + 2] << 8 | v[l4 + 3]
        w = v[l4 + 4]
        out[2, m] = ((w << 8 | v[l4 + 5]) << 8 | v[l4 + 6]) << 8 | v[l4 + 7]
        w = v[l4 + 8]
        out[3, m] = ((w << 8 | v[l4 + 9]) << 8 | v[l4 + 10]) << 8 | v[l4 + 11]
        out[4, m] = (b12 & 1) << 8 | v[l4 + 13]
        out[5, m] = v[l4 + 14] << 8 | v[l4 + 15]
        out[6, m] = plen
        out[7, m] = v[l3 + 8]
        out[8, m] = v[l3 + 4] << 8 | v[l3 + 5]
        out[9, m] = poff - l4 - 20
        out[10, m] = poff
        out[11, m] = pc
        sel[m] = i
        m += 1
    counts[C_ROWS] += m
    counts[C_SLOW] += ns
    counts[C_NON_IP] += non_ip
    counts[C_NON_TCP] += non_tcp
    counts[C_FRAGMENTS] += frags
    counts[C_SNAP] += snap
    return m
