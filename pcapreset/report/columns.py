"""columns: the per-connection table's column names and how its values are written."""

from __future__ import annotations

import csv
import io
import time

#: the columns of a connection, in order: ``pcapreset conns`` (json, csv)
#: and the ``connections`` table of :func:`pcapreset.load` and ``--export``
#: use this one vocabulary (units in the names; times UTC)
CONN_COLUMNS = (
    "conn_id", "client", "client_ip", "client_port", "server", "server_ip", "server_port",
    "community_id", "start", "end", "duration_s", "client_bytes", "server_bytes", "client_packets",
    "server_packets", "packets", "conn_state", "history", "requests", "completed_requests",
    "resets", "reset_cause", "client_retrans", "server_retrans", "role_rule",
)  # fmt: skip
#: times are kept to the µs: pcap's resolution, and the finest a float64
#: epoch time carries (a ns capture's times are rounded to it too)
TIME_DECIMALS = 6
#: how CSV writes a time (``conns --format csv``, ``--export-format csv``)
CSV_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def split_endpoint(ep: str) -> tuple[str, int]:
    """``"ip:port"`` / ``"[v6]:port"`` -> (ip, port)."""
    ip, _, port = ep.rpartition(":")
    return ip.strip("[]"), int(port)


def csv_time(ts: float) -> str:
    """Epoch seconds as CSV writes them: ISO 8601 UTC to the µs, ``Z``
    (what pandas writes for the tables' datetime columns with :data:`CSV_TIME`)."""
    us = round(ts * 1e6)
    sec, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:06d}Z"


def render_conns_csv(rows: list[dict]) -> str:
    """``pcapreset conns --format csv``: the rows of :meth:`Report.conn_rows`
    in the columns and time format of ``--export-format csv``."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CONN_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r | {"start": csv_time(r["start"]), "end": csv_time(r["end"])})
    return buf.getvalue()
