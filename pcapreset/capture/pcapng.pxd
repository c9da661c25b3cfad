# Declarations for the optional compiled build of pcapng.py (Cython, pure
# Python mode): only the Enhanced Packet Block walk is typed; everything else
# is Python.
import cython


@cython.locals(a="unsigned long long", b="unsigned long long", c="unsigned long long",
               d="unsigned long long")
cdef inline unsigned long long _u32(const unsigned char *v, Py_ssize_t p, bint big)


@cython.locals(v="const unsigned char[:]", q="const unsigned char *", blen="unsigned long long")
cpdef Py_ssize_t _ng_walk(object buf, Py_ssize_t pos, Py_ssize_t n, bint big, list pk_pos,
                          list pk_if, list pk_kind) except? -1
