# Declarations for the compiled build of connstate.py (Cython, pure Python
# mode): the per-packet state machine reads the tracker's Conn / Dir structs
# directly (cimport of conn.pxd; pcapreset/_build.py runs this module from
# source whenever conn runs from source).
import cython

from pcapreset.track.conn cimport Conn, Dir

# module constants as C values
cdef long long INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET
cdef long long _SYN, _FIN, _RST, _ACK, M32


cdef class ZeekTcp:
    cdef public long long orig
    cdef public object prev, closed, last_syn, last_fin, last_rst, flags_seen
    cdef public double delete_at, pclose_at


cdef inline _set(Dir d, ZeekTcp zk, Py_ssize_t i, long long state)

@cython.locals(zk=ZeekTcp, i=Py_ssize_t, is_orig=bint, st="long long", do_close=bint)
cpdef update(Conn conn, Dir d, Dir o, bint from_client, long long flags, long long seq,
             long long plen, double ts)

@cython.locals(do_close=bint, orig_st="long long")
cdef bint _inactive(Conn conn, ZeekTcp zk, Dir d, Dir o, Py_ssize_t i, bint is_orig,
                    long long flags, long long plen) except? -1

cdef _closed(ZeekTcp zk, Dir d, Dir o, Py_ssize_t i, double ts)

@cython.locals(zk=ZeekTcp)
cpdef double next_expiry(Conn conn) except? -1

@cython.locals(zk=ZeekTcp, orig="long long", ref="long long")
cpdef bint is_reuse(Conn conn, bint from_client, long long flags, long long seq) except -1

@cython.locals(zk=ZeekTcp, i=Py_ssize_t, seen="long long", n="long long", bit="long long")
cpdef control_history(Conn conn, bint from_client, long long flags, long long seq,
                      long long plen)
