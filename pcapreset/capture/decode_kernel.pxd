# Declarations for the compiled build of decode_kernel.py (Cython, pure
# Python mode): the frame loop runs over typed buffers.
import cython


@cython.locals(
    v="const unsigned char[::1]", n=Py_ssize_t, i=Py_ssize_t, m=Py_ssize_t, ns=Py_ssize_t,
    non_ip="long long", non_tcp="long long", frags="long long", snap="long long",
    o=Py_ssize_t, c=Py_ssize_t, lt=int, et="long long", l3=Py_ssize_t, e=Py_ssize_t,
    b0="long long", ihl="long long", tot="long long", l4=Py_ssize_t, b12="long long",
    doff="long long", plen="long long", poff=Py_ssize_t, pc="long long", w="long long",
    pr="long long", dp="long long",
)
cpdef Py_ssize_t ipv4_tcp(object buf, const long long[::1] off, const long long[::1] cap,
                          const long long[::1] wirelen, const int[::1] lts, long long[::1] sel,
                          long long[:, ::1] out, long long[::1] slow,
                          long long[::1] counts) except -1
