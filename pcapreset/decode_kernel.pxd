# Declarations for the compiled build of decode_kernel.py (Cython, pure
# Python mode): the frame loop runs over typed buffers.
import cython


cdef inline long long _be16(const unsigned char[:] v, Py_ssize_t p)
@cython.locals(a="long long")
cdef inline long long _be32(const unsigned char[:] v, Py_ssize_t p)


@cython.locals(
    v="const unsigned char[:]", n=Py_ssize_t, i=Py_ssize_t, m=Py_ssize_t, ns=Py_ssize_t,
    non_ip="long long", non_tcp="long long", frags="long long", snap="long long",
    o=Py_ssize_t, c=Py_ssize_t, lt=int, et="long long", l3=Py_ssize_t, e=Py_ssize_t,
    b0="long long", ihl="long long", tot="long long", l4=Py_ssize_t, b12="long long",
    doff="long long", plen="long long", poff=Py_ssize_t, pc="long long",
)
cpdef Py_ssize_t ipv4_tcp(object buf, const long long[:] off, const long long[:] cap,
                          const long long[:] wirelen, const int[:] lts, long long[:] sel,
                          long long[:, :] out, long long[:] slow, long long[:] counts) except -1
