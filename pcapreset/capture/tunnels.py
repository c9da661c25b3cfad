"""tunnels: where the inner frame of a tunnelled packet starts, and its link type.

:mod:`pcapreset.capture.decode` hands over the transport payload of every IP packet
that may carry a tunnel (GRE, and UDP to a tunnel port); :func:`decapsulate`
reads the tunnel headers, all packets at once with numpy gathers like the rest
of the decoder, and returns each inner frame's offset and link type. The
decoder then decodes those inner frames like any other frame (nesting is
bounded there).

Tunnels, as traffic mirroring and overlays deliver them:

* GRE (IP protocol 47, RFC 2784/2890: checksum, key and sequence fields)
  carrying IPv4 (0x0800), IPv6 (0x86DD), Ethernet (transparent Ethernet
  bridging, 0x6558), ERSPAN type I and II (0x88BE: type I without the GRE
  sequence field and without an ERSPAN header, type II with its 8-byte header),
  ERSPAN type III (0x22EB: 12-byte header, plus the 8-byte platform-specific
  subheader when its O bit is set; frame type Ethernet or IP) and Aruba's
  802.11 frames (0x8200, what Aruba access points send to their controller).
* VXLAN (UDP 4789, and 8472, the Linux kernel's historical default): 8-byte
  header with the VNI flag, then Ethernet.
* Geneve (UDP 6081): 8-byte header plus its options, then Ethernet, IPv4 or
  IPv6 by its protocol type.

Anything else on these protocols and ports is counted, by reason, in
``DecodeStats.undecodable`` (GRE with routing, PPTP's GRE version 1, unknown
GRE protocols, headers cut short); UDP to other ports counts as non-TCP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: inner link types: the decoder's own link-type codes
LT_ETHERNET, LT_RAW, LT_IPV4, LT_IPV6, LT_802_11 = 1, 12, 228, 229, 105

VXLAN_PORTS = (4789, 8472)
GENEVE_PORT = 6081
#: UDP destination ports that may carry a tunnel (decode_kernel leaves these to numpy)
TUNNEL_PORTS = (*VXLAN_PORTS, GENEVE_PORT)

#: names used in DecodeStats.tunnels, by code
NAMES = ("GRE", "ERSPAN I", "ERSPAN II", "ERSPAN III", "VXLAN", "Geneve", "GRE (Aruba 802.11)")
GRE, ERSPAN1, ERSPAN2, ERSPAN3, VXLAN, GENEVE, ARUBA = range(len(NAMES))

_GRE_PAYLOAD = {0x0800: LT_IPV4, 0x86DD: LT_IPV6, 0x6558: LT_ETHERNET}
_GENEVE_PAYLOAD = {0x6558: LT_ETHERNET, 0x0800: LT_IPV4, 0x86DD: LT_IPV6}


@dataclass
class Inner:
    """The candidates that carry an inner frame: ``sel`` indexes the
    candidates given to :func:`decapsulate`; ``off`` (absolute) and ``lt``
    the inner frame's start and link type; ``kind`` a code of :data:`NAMES`."""

    sel: np.ndarray
    off: np.ndarray
    lt: np.ndarray
    kind: np.ndarray


def _be16(u8: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (u8[i].astype(np.int64) << 8) | u8[i + 1]


class _Out:
    """Collects inner frames and counts what is left."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.bad: dict[str, int] = {}
        self.non_tcp = 0

    def add(self, sel: np.ndarray, off: np.ndarray, lt: np.ndarray | int, kind: int) -> None:
        if len(sel):
            lts = np.broadcast_to(np.asarray(lt, dtype=np.int64), sel.shape)
            self.parts.append((sel, off, lts, np.full(len(sel), kind, dtype=np.int64)))

    def count(self, reason: str, n: int | np.integer) -> None:
        if n:
            self.bad[reason] = self.bad.get(reason, 0) + int(n)


def decapsulate(
    u8: np.ndarray, l4: np.ndarray, end: np.ndarray, proto: np.ndarray
) -> tuple[Inner, dict[str, int], int]:
    """Inner frames of candidate packets.

    ``l4``: where each candidate's GRE or UDP header starts; ``end``: where its
    captured bytes end (never past the IP packet); ``proto``: 47 or 17.
    Returns the inner frames, undecodable reason -> count, and how many
    candidates are plain UDP (not a tunnel port: non-TCP).
    """
    out = _Out()
    g = np.nonzero(proto == 47)[0]
    if len(g):
        _gre(u8, g, l4[g], end[g], out)
    u = np.nonzero(proto == 17)[0]
    if len(u):
        _udp(u8, u, l4[u], end[u], out)
    if out.parts:
        sel, off, lt, kind = (np.concatenate(c) for c in zip(*out.parts, strict=True))
        order = np.argsort(sel, kind="stable")
        inner = Inner(sel[order], off[order], lt[order], kind[order])
    else:
        z = np.zeros(0, dtype=np.int64)
        inner = Inner(z, z, z, z)
    return inner, out.bad, out.non_tcp


def _gre(u8: np.ndarray, sel: np.ndarray, p: np.ndarray, end: np.ndarray, out: _Out) -> None:
    room = end - p
    fits = room >= 4
    out.count("GRE header cut short", np.count_nonzero(~fits))
    sel, p, room = sel[fits], p[fits], room[fits]
    b0 = u8[p].astype(np.int64)
    ver = u8[p + 1] & 7
    v1 = ver == 1
    out.count("GRE version 1 (PPTP) not decoded", np.count_nonzero(v1))
    other = (ver != 0) & ~v1
    out.count("GRE with an unknown version", np.count_nonzero(other))
    routed = (ver == 0) & ((b0 & 0x40) != 0)
    out.count("GRE with source routing not decoded", np.count_nonzero(routed))
    keep = (ver == 0) & ~routed
    sel, p, room, b0 = sel[keep], p[keep], room[keep], b0[keep]
    has_seq = (b0 & 0x10) != 0
    hl = 4 + 4 * ((b0 & 0x80) != 0) + 4 * ((b0 & 0x20) != 0) + 4 * has_seq
    fits = room >= hl
    out.count("GRE header cut short", np.count_nonzero(~fits))
    sel, p, room, hl, has_seq = sel[fits], p[fits], room[fits], hl[fits], has_seq[fits]
    ptype = _be16(u8, p + 2)
    body = p + hl
    left = room - hl
    done = np.zeros(len(sel), dtype=bool)
    for pt, lt in _GRE_PAYLOAD.items():
        m = ptype == pt
        out.add(sel[m], body[m], lt, GRE)
        done |= m
    m = ptype == 0x8200
    out.add(sel[m], body[m], LT_802_11, ARUBA)
    done |= m
    # ERSPAN type I: no sequence field, no ERSPAN header
    er = ptype == 0x88BE
    m = er & ~has_seq
    out.add(sel[m], body[m], LT_ETHERNET, ERSPAN1)
    # ERSPAN type II (version field 1) normally; a type III header (version 2) is read too
    er &= has_seq
    er3 = ptype == 0x22EB
    done |= er | er3 | m
    hdr = er | er3
    fits = hdr & (left >= 12)
    cut = hdr & ~fits & ~(er & (left >= 8))
    out.count("ERSPAN header cut short", np.count_nonzero(cut))
    q = np.where(hdr & ~cut, body, 0)
    ev = u8[q] >> 4
    m = er & ~cut & (ev == 1)
    out.add(sel[m], body[m] + 8, LT_ETHERNET, ERSPAN2)
    three = fits & (ev == 2)
    out.count(
        "ERSPAN header with an unknown version",
        np.count_nonzero(hdr & ~cut & ~(er & (ev == 1)) & ~three),
    )
    sub = three & ((u8[np.where(three, q + 11, 0)] & 1) != 0)  # O bit: 8-byte subheader
    ehl = np.where(sub, 20, 12)
    room3 = three & (left >= ehl)
    out.count("ERSPAN header cut short", np.count_nonzero(three & ~room3))
    ft = (u8[np.where(room3, q + 10, 0)] >> 2) & 0x1F
    m = room3 & (ft == 0)
    out.add(sel[m], body[m] + ehl[m], LT_ETHERNET, ERSPAN3)
    m = room3 & (ft == 2)
    out.add(sel[m], body[m] + ehl[m], LT_RAW, ERSPAN3)
    out.count("ERSPAN III frame type not decoded", np.count_nonzero(room3 & (ft != 0) & (ft != 2)))
    rest = ptype[~done]
    for pt in np.unique(rest).tolist():
        out.count(f"GRE protocol 0x{pt:04x} not decoded", np.count_nonzero(rest == pt))


def _udp(u8: np.ndarray, sel: np.ndarray, p: np.ndarray, end: np.ndarray, out: _Out) -> None:
    room = end - p
    has_port = room >= 4
    dport = np.where(has_port, _be16(u8, np.where(has_port, p + 2, 0)), -1)
    vx = np.isin(dport, VXLAN_PORTS)
    gn = dport == GENEVE_PORT
    out.non_tcp += int(np.count_nonzero(~vx & ~gn))
    # VXLAN: UDP header, then flags (I = 0x08: the VNI is valid), 3 reserved, VNI, 1 reserved
    fits = vx & (room >= 16)
    out.count("VXLAN header cut short", np.count_nonzero(vx & ~fits))
    flag = u8[np.where(fits, p + 8, 0)] & 0x08
    m = fits & (flag != 0)
    out.add(sel[m], p[m] + 16, LT_ETHERNET, VXLAN)
    out.count("VXLAN header without the VNI flag", np.count_nonzero(fits & (flag == 0)))
    # Geneve: ver(2) optlen(6, in 4-byte words), flags, protocol type, VNI, reserved, options
    fits = gn & (room >= 16)
    out.count("Geneve header cut short", np.count_nonzero(gn & ~fits))
    q = np.where(fits, p + 8, 0)
    ver = u8[q] >> 6
    out.count("Geneve header with an unknown version", np.count_nonzero(fits & (ver != 0)))
    fits &= ver == 0
    hl = 16 + (u8[q] & 0x3F).astype(np.int64) * 4
    whole = fits & (room >= hl)
    out.count("Geneve header cut short", np.count_nonzero(fits & ~whole))
    ptype = np.where(whole, _be16(u8, q + 2), -1)
    done = ~whole
    for pt, lt in _GENEVE_PAYLOAD.items():
        m = whole & (ptype == pt)
        out.add(sel[m], p[m] + hl[m], lt, GENEVE)
        done |= m
    rest = ptype[~done]
    for pt in np.unique(rest).tolist():
        out.count(f"Geneve protocol 0x{pt:04x} not decoded", np.count_nonzero(rest == pt))
