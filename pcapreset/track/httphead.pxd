# Declarations for the compiled build of httphead.py (Cython, pure Python
# mode): the head scanner reads the packet bytes through a C pointer.
import cython


cdef object _entry(object buf, Py_ssize_t p0, Py_ssize_t n)

@cython.locals(bb=bytes, mv="const unsigned char[::1]", v="const unsigned char *",
               size=Py_ssize_t, j=Py_ssize_t, n=Py_ssize_t)
cdef void _entries(object buf, dict out, list idx, list poffs, list pcaps) except *

@cython.locals(hl=Py_ssize_t)
cdef object _entry_at(const unsigned char *v, Py_ssize_t size, Py_ssize_t p0, Py_ssize_t n)

cdef tuple _header(bytes k, bytes v, object clen, bint chunked, dict extra)

@cython.locals(k=Py_ssize_t, j=Py_ssize_t)
cdef bint _starts(const unsigned char *v, Py_ssize_t p0, Py_ssize_t n, bytes prefix)

@cython.locals(m=bytes)
cdef bint _is_request(const unsigned char *v, Py_ssize_t p0, Py_ssize_t n)

@cython.locals(eol=Py_ssize_t, j=Py_ssize_t, s1=Py_ssize_t, s2=Py_ssize_t)
cdef tuple _request_line_at(const unsigned char *v, Py_ssize_t p0, Py_ssize_t n)

@cython.locals(ln=Py_ssize_t, j=Py_ssize_t, ch=int)
cdef inline bint _name_at(const unsigned char *v, Py_ssize_t at, Py_ssize_t limit, bytes name)

@cython.locals(
    end=Py_ssize_t, j=Py_ssize_t, limit=Py_ssize_t, q=Py_ssize_t, r=Py_ssize_t, ch=int,
    s=Py_ssize_t, name=bytes,
)
cdef tuple _scan(const unsigned char *v, Py_ssize_t p0, Py_ssize_t n, dict extra)
