# Declarations for the compiled build of rst.py (Cython, pure Python mode).
import cython

from pcapreset.track.conn cimport Conn, Dir

cdef long long M32, HALF, ACK


@cython.locals(poff=Py_ssize_t)
cpdef object rst_event(Conn conn, Dir d, Dir o, bint up, double ts, long long seq,
                       long long ack, long long flags, long long win, long long plen,
                       long long ttl, long long ipid, long long optlen, object b, Py_ssize_t i)

cpdef data_after_rst(Conn conn, bint up)
