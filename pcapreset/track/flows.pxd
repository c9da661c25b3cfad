# Declarations for the optional compiled build of flows.py (Cython, pure
# Python mode): the same source runs uncompiled; compiled, the hot classes
# are C structs and FlowTracker.feed runs over typed columns.
import cython

# module constants as C values (no Python int arithmetic in the loop)
cdef long long M32, HALF, ACK, FIN, RST, SYN, HEAD_BYTES, IPID_STEP_MAX


cdef class Dir:
    cdef public long long pkts, bytes, data_pkts, retrans, dupacks, zero_win
    cdef public long long mss_segs, mss_retrans, small_segs, small_retrans
    cdef public long long syn, synack, syn_retrans, fin, rst
    cdef public object fin_ts, fin_end, isn, base, last_ack, first_ts, last_data_ts
    cdef public long long max_end, last_win, ttl_last, ipid_last, zst, hA, hD
    cdef public long long ipid_zero, ipid_steps, ipid_jumps, last_plen
    cdef public object head, head_ts, late, late_ts
    cdef public bint acked, ack_seen, sack_perm, ts_opt
    cdef public dict ttls
    cdef public object mss, wscale, opt_kinds, cA, cD


cdef class Exchange:
    cdef public object req_ts, method, target, req_len, resp_ts, status, resp_len
    cdef public object resp_end_ts, last_resp_ts
    cdef public long long req_bytes, req_start, resp_bytes, resp_start, interim
    cdef public bint chunked


cdef class Conn:
    cdef public long long id, client, server, hbits
    cdef public object role_rule, hs_ts, last_data_ts, _cur_req, _cur_resp, syn_ts, zk
    cdef public double start, end, expires_at
    cdef public Dir c, s
    cdef public list hist, rst_events, exchanges
    cdef public dict resp_headers
    cdef public bint _rst_open, state_closed, hs_done, last_pkt_from_client
    cdef public bint first_from_client


cdef class FlowTracker:
    cdef public object port, server_ports, last_ts, on_rst
    cdef public dict active, collided
    cdef public list conns
    cdef public long long packets

    @cython.locals(table=dict, dst="long long")
    cdef Conn _resolve(self, Conn conn, unsigned long long key, long long src, object b,
                       Py_ssize_t i, long long seq, long long flags, double ts)
    @cython.locals(cur=Exchange, prev=Exchange, ex=Exchange)
    cdef _http_client(self, Conn conn, double ts, long long rel, long long plen, Py_ssize_t poff,
                      long long pcap, object buf, object pre)
    @cython.locals(ex=Exchange, target=Exchange, e=Exchange, status="long long")
    cdef _http_server(self, Conn conn, double ts, long long plen, Py_ssize_t poff,
                      long long pcap, object buf, object pre)
    cdef _control(self, Conn conn, Dir d, Dir o, bint up, double ts, long long seq,
                  long long ack, long long flags, long long win, long long plen, long long ttl,
                  long long ipid, long long optlen, object b, Py_ssize_t i, Py_ssize_t poff,
                  object buf)
    @cython.locals(poff=Py_ssize_t)
    cdef _rst(self, Conn conn, Dir d, Dir o, bint up, double ts, long long seq, long long ack,
              long long flags, long long win, long long plen, long long ttl, long long ipid,
              long long optlen, object b, Py_ssize_t i)

    @cython.locals(
        active=dict, n=Py_ssize_t, i=Py_ssize_t, conn=Conn, d=Dir, o=Dir, ex=Exchange,
        keys="const unsigned long long[:]", tss="const double[:]",
        srcs="const long long[:]", seqs="const long long[:]", acks="const long long[:]",
        flagss="const long long[:]", wins="const long long[:]", plens="const long long[:]",
        ttls="const long long[:]", ipids="const long long[:]", optlens="const long long[:]",
        key="unsigned long long", ts=double, src="long long", seq="long long",
        ack="long long", flags="long long", win="long long", plen="long long",
        ttl="long long", ipid="long long", optlen="long long", from_client=bint,
        base="long long", end="long long", diff="long long", una="long long",
        la="long long", mss="long long", rl="long long",
        cached=bint, cached_key="unsigned long long", cached_conn=Conn,
        poffs="const long long[:]", pcaps="const long long[:]", heads=dict,
    )
    cpdef feed(self, b)


@cython.locals(v="const unsigned char[:]")
cdef _syn_options(Dir d, object buf, Py_ssize_t at, Py_ssize_t n)
