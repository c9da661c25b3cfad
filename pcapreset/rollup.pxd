# Declarations for the optional compiled build of rollup.py (Cython, pure
# Python mode): the per-connection work of eviction (split, Rollup.add) reads
# the tracker's Conn / Dir / Exchange structs directly; the rest is Python.
import cython

from pcapreset.flows cimport Conn, Dir, Exchange


@cython.locals(rtt=double, srv="long long", key=tuple, sigs=dict, e=object)
cdef _fold(object r, Conn c)

@cython.locals(ct=dict, st=dict, h=dict)
cdef tuple _sig(object r, Conn c)

@cython.locals(ex=Exchange)
cdef object _idle_gap(Conn c, double rtt)

@cython.locals(most="long long", n="long long")
cpdef object _mode(dict counts)

@cython.locals(c=Conn, keep=list, out=list)
cpdef tuple split(list watch, double horizon)

@cython.locals(a=object)
cdef _append(dict d, long long srv, double x)
