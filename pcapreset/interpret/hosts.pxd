# Declarations for the optional compiled build of hosts.py (Cython, pure
# Python mode): a HostBase is a C struct, and add_host_bases, which the
# engine runs on every connection it folds, reads the tracker's Conn / Dir
# structs directly; the rest is Python.
import cython

from pcapreset.track.conn cimport Conn, Dir


cdef class HostBase:
    cdef public dict ttls
    cdef public long long ipid_zero, ipid_steps, ipid_jumps, rst_zero, rst_nonzero, conns


@cython.locals(c=Conn, d=Dir, hb=HostBase, hb_a=HostBase, hb_b=HostBase, k=Py_ssize_t,
               side=int, host="long long", last_a="long long", last_b="long long",
               is_client=bint)
cpdef add_host_bases(list conns, dict into)

@cython.locals(ttls=dict)
cdef _add_dir(HostBase hb, Dir d)

cdef _add_rsts(HostBase hb, Conn c, bint is_client)
