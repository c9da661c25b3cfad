# Declarations for the compiled build of control.py (Cython, pure Python mode):
# the tracker (flows.pxd) calls these for new connections and control packets.
import cython

from pcapreset.track.conn cimport Conn, Dir
from pcapreset.track.connstate cimport control_history, update
from pcapreset.track.rst cimport rst_event

cdef long long M32, WELL_KNOWN_MAX, ACK, FIN, RST, SYN


@cython.locals(sp="long long", dp="long long")
cpdef tuple roles(long long src, long long dst, long long flags, object port,
                  object server_ports)

cpdef object control(Conn conn, Dir d, Dir o, bint up, double ts, long long seq,
                     long long ack, long long flags, long long win, long long plen,
                     long long ttl, long long ipid, long long optlen, object b,
                     Py_ssize_t i, Py_ssize_t poff, object buf)

@cython.locals(v="const unsigned char[:]")
cpdef syn_options(Dir d, object buf, Py_ssize_t at, Py_ssize_t n)
