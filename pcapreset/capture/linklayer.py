"""linklayer: a batch of frames' link-layer headers -> where their IP header starts.

Link types as :mod:`pcapreset.capture.decode` supports them, decoded for every
frame of a batch at once with numpy gathers, and the big-endian field readers
the decoder uses.
"""

from __future__ import annotations

import numpy as np


def be16(u8: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (u8[i].astype(np.int64) << 8) | u8[i + 1]


def be32(u8: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (
        (u8[i].astype(np.int64) << 24)
        | (u8[i + 1].astype(np.int64) << 16)
        | (u8[i + 2].astype(np.int64) << 8)
        | u8[i + 3]
    )


def link_layer(u8: np.ndarray, lt: int, off: np.ndarray, cap: np.ndarray):
    """Per link type: (l3 absolute offset, ip version 4/6/0, ok mask).

    ``ok`` False means the frame is too short for its link header (undecodable);
    version 0 with ok True means "not IP" (ARP and friends).
    """
    n = len(off)
    ver = np.zeros(n, dtype=np.int64)
    if lt == 1:
        ok = cap >= 14
        o = np.where(ok, off, 0)
        et = np.where(ok, be16(u8, o + 12), 0)
        l3 = off + 14
        for _ in range(3):  # 802.1Q, QinQ (802.1ad), old QinQ 0x9100
            tagged = ok & ((et == 0x8100) | (et == 0x88A8) | (et == 0x9100))
            if not tagged.any():
                break
            fits = tagged & (cap >= (l3 - off) + 4)
            ok &= ~(tagged & ~fits)
            et = np.where(fits, be16(u8, np.where(fits, l3 + 2, 0)), et)
            l3 = np.where(fits, l3 + 4, l3)
        pppoe = ok & (et == 0x8864)
        if pppoe.any():
            fits = pppoe & (cap >= (l3 - off) + 8)
            ok &= ~(pppoe & ~fits)
            proto = np.where(fits, be16(u8, np.where(fits, l3 + 6, 0)), 0)
            et = np.where(fits & (proto == 0x0021), 0x0800, et)
            et = np.where(fits & (proto == 0x0057), 0x86DD, et)
            l3 = np.where(fits, l3 + 8, l3)
        ver[et == 0x0800] = 4
        ver[et == 0x86DD] = 6
    elif lt == 10:
        # FDDI: frame control + two MACs (13 bytes), then 802.2 LLC/SNAP
        # (AA AA 03, OUI, ethertype): the IP header starts at +21
        ok = cap >= 21
        o = np.where(ok, off, 0)
        snap = ok & (u8[o + 13] == 0xAA) & (u8[o + 14] == 0xAA) & (u8[o + 15] == 0x03)
        et = np.where(snap, be16(u8, o + 19), 0)
        l3 = off + 21
        ver[et == 0x0800] = 4
        ver[et == 0x86DD] = 6
    elif lt == 113 or lt == 276:
        hl, po = (16, 14) if lt == 113 else (20, 0)
        ok = cap >= hl
        et = np.where(ok, be16(u8, np.where(ok, off + po, 0)), 0)
        l3 = off + hl
        ver[et == 0x0800] = 4
        ver[et == 0x86DD] = 6
    elif lt in (12, 14, 101, 228, 229):
        ok = cap >= 1
        l3 = off.copy()
        if lt == 228:
            ver[:] = 4
        elif lt == 229:
            ver[:] = 6
        else:
            nib = np.where(ok, u8[np.where(ok, off, 0)] >> 4, 0)
            ver[nib == 4] = 4
            ver[nib == 6] = 6
            ok &= (nib == 4) | (nib == 6)
    elif lt == 105:
        # 802.11 (no radiotap): data frames only; MAC header of 24 bytes, +6 with
        # four addresses, +2 QoS control, +4 HT control; then LLC/SNAP. Other
        # frames (management, control, no body, encrypted) are not IP
        ok = cap >= 24
        o = np.where(ok, off, 0)
        fc0, fc1 = u8[o].astype(np.int64), u8[o + 1].astype(np.int64)
        data = ok & ((fc0 & 0x0F) == 0x08) & ((fc0 & 0x40) == 0) & ((fc1 & 0x40) == 0)
        qos = (fc0 & 0x80) != 0
        hl = 24 + 6 * ((fc1 & 3) == 3) + 2 * qos + 4 * (qos & ((fc1 & 0x80) != 0))
        ok &= ~(data & (cap < hl + 8))
        data &= ok
        p = np.where(data, off + hl, 0)
        snap = data & (u8[p] == 0xAA) & (u8[p + 1] == 0xAA) & (u8[p + 2] == 0x03)
        et = np.where(snap, be16(u8, p + 6), 0)
        l3 = off + hl + 8
        ver[et == 0x0800] = 4
        ver[et == 0x86DD] = 6
    else:  # 0 (NULL, host byte order) and 108 (LOOP, network byte order)
        ok = cap >= 4
        o = np.where(ok, off, 0)
        b0, b3 = u8[o].astype(np.int64), u8[o + 3].astype(np.int64)
        le = b0 if lt == 0 else np.full(n, -1)
        be = b3
        fam = np.where((le == 2) | (be == 2), 4, 0)
        is6 = np.isin(le, (10, 24, 28, 30)) | np.isin(be, (10, 24, 28, 30))
        fam = np.where(is6, 6, fam)
        ver[:] = fam
        l3 = off + 4
    return l3, ver, ok
