"""bpf: the kernel filter of a live capture's packet socket.

The port filter is compiled by libpcap through scapy
(:func:`scapy.arch.common.compile_filter`) for raw IP, because a
``SOCK_DGRAM`` packet socket hands the filter the packet from its network
header on. Loopback devices show every packet twice to a packet socket (once
outgoing, once incoming); like libpcap we keep only the incoming copy, with a
few instructions in front of the libpcap filter (``SKF_AD_PKTTYPE`` /
``SKF_AD_HATYPE``, see the kernel's Documentation/networking/filter.rst).
"""

from __future__ import annotations

import ctypes
import socket

from ..errors import CaptureSourceError

DLT_RAW = 12  # libpcap's DLT for raw IP (LINKTYPE_RAW 101 in files)
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4
SKF_AD_HATYPE = 28


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def port_filter(port: int | None) -> str:
    return f"tcp port {port}" if port else "tcp"


def compile_bpf(expr: str, dlt: int = DLT_RAW) -> list[tuple[int, int, int, int]]:
    """libpcap-compile ``expr`` for raw IP packets (or link type ``dlt``, e.g.
    1 for Ethernet frames) -> (code, jt, jf, k) list."""
    try:
        from scapy.arch.common import compile_filter
    except ImportError:
        raise CaptureSourceError(
            "live capture needs scapy to compile its filter: pip install 'pcapreset[live]'"
        ) from None
    try:
        bp = compile_filter(expr, linktype=dlt)
    except Exception as e:  # scapy raises Scapy_Exception / ImportError / OSError
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CaptureSourceError(f"bad capture filter {expr!r}: {msg}") from None
    ins = bp.bf_insns
    return [(ins[i].code, ins[i].jt, ins[i].jf, ins[i].k) for i in range(bp.bf_len)]


def skip_loopback_outgoing(
    prog: list[tuple[int, int, int, int]],
) -> list[tuple[int, int, int, int]]:
    """Prefix ``prog`` with: drop outgoing packets of loopback devices."""
    ld_abs_w, jeq_k, ret_k = 0x20, 0x15, 0x06
    pre = [
        (ld_abs_w, 0, 0, (SKF_AD_OFF + SKF_AD_PKTTYPE) & 0xFFFFFFFF),
        (jeq_k, 0, 3, PACKET_OUTGOING),
        (ld_abs_w, 0, 0, (SKF_AD_OFF + SKF_AD_HATYPE) & 0xFFFFFFFF),
        (jeq_k, 0, 1, ARPHRD_LOOPBACK),
        (ret_k, 0, 0, 0),
    ]
    return pre + prog


def attach_bpf(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    arr = (_SockFilter * len(prog))(*[_SockFilter(*i) for i in prog])
    fprog = _SockFprog(len(prog), arr)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
    except OSError as e:
        raise CaptureSourceError(f"kernel refused the capture filter: {e.strerror}") from None
