"""flowid: the Community ID of a flow (v1), as Zeek and Suricata write it.

``community_id`` in the connection tables lets a connection be joined with
Zeek's conn.log (``community-id`` package) and Suricata's EVE records. The
algorithm (https://github.com/corelight/community-id-spec): SHA-1 over the
seed (2 bytes), both addresses and both ports, ordered so that the smaller
(address, port) comes first, the protocol and a zero pad byte; base64, with
the version prefix ``1:``. A dozen lines here instead of the ``communityid``
package, because ``pcapreset conns`` (the core, numpy and click only) writes
the column too; tests check both agree.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct

TCP = 6


def _packed(ip: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)


def community_id(
    saddr: str, daddr: str, sport: int, dport: int, proto: int = TCP, seed: int = 0
) -> str:
    """Community ID v1 of a flow (either direction gives the same one)."""
    a, b = _packed(saddr), _packed(daddr)
    if (a, sport) > (b, dport):
        a, b, sport, dport = b, a, dport, sport
    data = struct.pack("!H", seed) + a + b + struct.pack("!BBHH", proto, 0, sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
