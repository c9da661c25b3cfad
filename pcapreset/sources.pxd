# Declarations for the optional compiled build of sources.py (Cython, pure
# Python mode): only the record walk is typed; everything else is Python.
import cython


@cython.locals(
    v="const unsigned char[:]", limit=Py_ssize_t, p=Py_ssize_t, end=Py_ssize_t,
    b0="unsigned long long", b1="unsigned long long", b2="unsigned long long",
    b3="unsigned long long", cl="unsigned long long",
)
cpdef Py_ssize_t _walk(object buf, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t rec,
                       Py_ssize_t maxcap, bint big, list offs, object cap8_at) except? -1
