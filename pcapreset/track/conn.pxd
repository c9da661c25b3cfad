# Declarations for the compiled build of conn.py (Cython, pure Python mode):
# the connection model as C structs, read and written by the tracker
# (flows.pxd), the RST events (rst.pxd), HTTP (http.pxd), Zeek's state
# machine (connstate.pxd), findings and the rollup.
import cython


cdef class Dir:
    cdef public long long pkts, bytes, data_pkts, retrans, dupacks, zero_win
    cdef public long long mss_segs, mss_retrans, small_segs, small_retrans
    cdef public long long syn, synack, syn_retrans, fin, rst
    cdef public object fin_ts, fin_end, isn, base, first_ts
    cdef public long long last_ack_no
    cdef public double last_data_at
    cdef public long long max_end, last_win, ttl_last, ipid_last, zst, hA, hD
    cdef public long long ipid_zero, ipid_steps, ipid_jumps, last_plen
    cdef public object head, head_ts, late, late_ts
    cdef public bint acked, ack_seen, sack_perm, ts_opt
    cdef public dict ttls
    cdef public object mss, wscale, opt_kinds, cA, cD


cdef class Exchange:
    cdef public object req_ts, method, target, req_len, resp_ts, status, resp_len
    cdef public object resp_end_ts
    cdef public double last_resp_at
    cdef public long long req_bytes, req_start, resp_bytes, resp_start, interim
    cdef public bint chunked


cdef class Conn:
    cdef public long long id, client, server, hbits, proto
    cdef public double last_data_at
    cdef public object role_rule, hs_ts, _cur_req, _cur_resp, syn_ts, zk, pstate
    cdef public double start, end, expires_at
    cdef public Dir c, s
    cdef public list hist, rst_events, exchanges
    cdef public dict resp_headers
    cdef public bint _rst_open, state_closed, hs_done, last_pkt_from_client
    cdef public bint first_from_client
