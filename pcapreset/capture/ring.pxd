# Declarations for the optional compiled build of ring.py (Cython, pure Python
# mode): only the block walk is typed; everything else is Python.
import cython
from libc.string cimport memcpy


@cython.locals(snap=Py_ssize_t, data=Py_ssize_t, d=Py_ssize_t)
cpdef Py_ssize_t _walk(const unsigned int[::1] u32, const unsigned short[::1] u16,
                       const unsigned char[::1] u8, unsigned char[::1] out, Py_ssize_t o,
                       Py_ssize_t n, Py_ssize_t pos, Py_ssize_t hl, Py_ssize_t field,
                       list heads, list starts) except? -1
