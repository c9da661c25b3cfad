# Declarations for the optional compiled build of pcap.py (Cython, pure
# Python mode): only the record walk and the header gather are typed;
# everything else is Python.
import cython


@cython.locals(a="unsigned long long", b="unsigned long long", c="unsigned long long",
               d="unsigned long long")
cdef inline unsigned long long _u32(const unsigned char *v, Py_ssize_t p, bint big)


@cython.locals(
    v="const unsigned char[:]", q="const unsigned char *", limit=Py_ssize_t, end=Py_ssize_t,
    cl="unsigned long long",
)
cpdef Py_ssize_t _walk(object buf, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t rec,
                       Py_ssize_t maxcap, bint big, list offs, object cap8_at) except? -1


@cython.locals(n=Py_ssize_t, j=Py_ssize_t, k=Py_ssize_t, p=Py_ssize_t, words=Py_ssize_t,
               v="const unsigned char[:]", q="const unsigned char *", ov="long long[:]",
               hv="long long[:, :]")
cpdef tuple _header_words(object buf, list offs, Py_ssize_t width, bint big, list kinds=*,
                          Py_ssize_t short=*)
