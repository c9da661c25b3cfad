# Declarations for the optional compiled build of findings.py (Cython, pure
# Python mode): only no_finding, which eviction runs on every connection, is
# typed; the rules stay Python (they run on the few connections it cannot clear).
import cython

from pcapreset.track.conn cimport Conn, Dir, Exchange

cdef long long PROTO_WEBSOCKET


@cython.locals(cd=Dir, sd=Dir, ex=Exchange, exs=list)
cpdef bint no_finding(Conn c) except -1
