# Declarations for the optional compiled build of fold.py (Cython, pure
# Python mode): the per-connection work of eviction (split, and fold_rows for
# Rollup.add_many) reads the tracker's Conn / Dir / Exchange structs directly
# and writes the Rollup's rows through typed memoryviews; the rest is Python.
import cython

from pcapreset.track.conn cimport Conn, Dir, Exchange


@cython.locals(
    f="double[:, ::1]", i="long long[:, ::1]", k=Py_ssize_t, c=Conn, syn=double, rtt=double,
    ct=dict, st=dict, h=dict, ch="long long", sh="long long", chost="long long",
    shost="long long", have=bint, last_ch="long long", last_sh="long long",
    last_chost="long long", last_shost="long long", last_sid="long long",
)
cpdef fold_rows(object r, list conns, object fa, object ia, bint hostless=*)

@cython.locals(reusable=bint)
cdef tuple _sig(object r, long long ch, long long sh, long long chost, long long shost,
                dict h, tuple hk)

@cython.locals(ex=Exchange)
cdef object _idle_gap(Conn c, double rtt)

@cython.locals(most="long long", n="long long")
cpdef long long _mode(dict counts) except? -2

@cython.locals(c=Conn, keep=list, out=list, frozen=list)
cpdef tuple split(list watch, double horizon)
