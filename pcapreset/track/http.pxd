# Declarations for the compiled build of http.py (Cython, pure Python mode).
import cython

from pcapreset.track.conn cimport Conn, Exchange

cdef long long PROTO_WEBSOCKET


@cython.locals(cur=Exchange, prev=Exchange, ex=Exchange)
cpdef http_client(Conn conn, double ts, long long rel, long long plen, Py_ssize_t poff,
                  long long pcap, object buf, object pre)

@cython.locals(ex=Exchange, target=Exchange, e=Exchange, status="long long")
cpdef http_server(Conn conn, double ts, long long plen, Py_ssize_t poff, long long pcap,
                  object buf, object pre)
