# Declarations for the optional compiled build of flows.py (Cython, pure
# Python mode): the same source runs uncompiled; compiled, the hot classes
# are C structs and FlowTracker.feed runs over typed columns.
import cython

from pcapreset.track.conn cimport Conn, Dir, Exchange
from pcapreset.track.http cimport http_client, http_server
from pcapreset.track.rst cimport data_after_rst
from pcapreset.track.connstate cimport ZeekTcp, is_reuse
from pcapreset.track.connstate cimport update as zeek_update
from pcapreset.track.control cimport control, roles

# the first bytes of a side's stream (a C call, no Python frame)
cdef _head(Dir d, Dir o, double ts, Py_ssize_t poff, long long pcap, object buf, bint first)

# module constants as C values (no Python int arithmetic in the loop)
cdef long long M32, HALF, ACK, RST, SYN, HEAD_BYTES, IPID_STEP_MAX


cdef class FlowTracker:
    cdef public object port, server_ports, last_ts, on_rst
    cdef public dict active, collided
    cdef public list conns
    cdef public long long packets

    cdef Conn _new_conn(self, long long src, long long dst, long long flags, double ts)
    cdef bint _is_new_incarnation(self, Conn conn, long long src, long long seq,
                                  long long flags) except -1
    @cython.locals(table=dict, dst="long long")
    cdef Conn _resolve(self, Conn conn, unsigned long long key, long long src, object b,
                       Py_ssize_t i, long long seq, long long flags, double ts)
    @cython.locals(
        active=dict, n=Py_ssize_t, i=Py_ssize_t, conn=Conn, d=Dir, o=Dir,
        keys="const unsigned long long[:]", tss="const double[:]",
        srcs="const long long[:]", seqs="const long long[:]", acks="const long long[:]",
        flagss="const long long[:]", wins="const long long[:]", plens="const long long[:]",
        ttls="const long long[:]", ipids="const long long[:]", optlens="const long long[:]",
        key="unsigned long long", ts=double, src="long long", seq="long long",
        ack="long long", flags="long long", win="long long", plen="long long",
        ttl="long long", optlen="long long", from_client=bint, base="long long",
        cached=bint, cached_key="unsigned long long", cached_conn=Conn,
        poffs="const long long[:]", pcaps="const long long[:]", heads=dict,
    )
    cpdef feed(self, b)
    cdef inline _count(self, Conn conn, Dir d, Dir o, bint up, long long flags, long long seq,
                long long plen, double ts, long long ttl, long long ipid, long long win)
    @cython.locals(la="long long", una="long long")
    cdef inline bint _ack(self, Conn conn, Dir d, Dir o, bint up, long long flags, long long plen,
                   long long ack, long long win, double ts) except -1
    @cython.locals(end="long long", diff="long long", mss="long long", rl="long long",
                   ex=Exchange)
    cdef inline _payload(self, Conn conn, Dir d, Dir o, bint up, double ts, long long seq,
                  long long base, long long plen, long long optlen, long long flags,
                  Py_ssize_t i, Py_ssize_t poff, long long pcap, object bufs, object buf0,
                  object bufidx, dict heads)

