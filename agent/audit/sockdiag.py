"""Established TCP connections to given addresses, asked of the kernel (sock_diag).

Reading /proc/net/tcp means formatting and parsing the whole socket table
every round: a proxy or a database host holds tens of thousands of sockets
for the handful that go to STS.  NETLINK_SOCK_DIAG takes a filter (inet_diag
bytecode, what `ss dst ADDR` sends) that the kernel runs on each socket, so
only the matching connections are copied out.  The kernel still walks its
whole connection hash for each request, so one request covers both address
families (the compat TCPDIAG_GETSOCK, which dumps AF_UNSPEC) where the
kernel takes it, and one per family where it does not.  A hand-made request
of a few structs: pyroute2 would cost the daemon several MiB of imports for it.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Collection, Iterator

NETLINK_SOCK_DIAG = 4
TCPDIAG_GETSOCK = 18  # inet_diag_req (v1): both address families in one walk
SOCK_DIAG_BY_FAMILY = 20  # inet_diag_req_v2: one family per request
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP, INET_DIAG_BC_D_COND = 1, 8
TCP_ESTABLISHED = 1
# Conditions per request: keeps the bytecode's 16-bit jump offsets in range.
MAX_CONDITIONS = 1000
TIMEOUT = 2.0

_HEADER = struct.Struct("=IHHII")  # nlmsghdr
# inet_diag_req_v2 and inet_diag_req; of the inet_diag_sockid only dport (network order) is set.
_REQUEST_V2 = struct.Struct("=BBBBI2sH44x")
_REQUEST_V1 = struct.Struct("=BBBB2sH44xII")
_ATTR = struct.Struct("=HH")  # nlattr
_OP = struct.Struct("=BBH")  # inet_diag_bc_op: code, yes, no
_HOSTCOND = struct.Struct("=BBxxi")  # inet_diag_hostcond: family, prefix_len, port
_MESSAGE = struct.Struct("=BBBB2sH16s16s")  # inet_diag_msg up to idiag_dst
_ERRNO = struct.Struct("=i")

Condition = tuple[int, bytes, int]  # (family, packed address, port)
Plan = list[tuple[int, int, list[Condition]]]  # (message type, family, conditions)


def _bytecode(conditions: list[Condition]) -> bytes:
    """`dst A:port or dst B:port or …`, laid out as ss compiles an `or`.

    Each condition falls through (yes) to a jump to the end (accept) and
    otherwise skips past that jump to the next condition; the last one's
    "no" leads past the end, which rejects.  The kernel checks the layout.
    """
    sizes = [_OP.size + _HOSTCOND.size + len(raw) for _, raw, _ in conditions]
    total = sum(sizes) + _OP.size * (len(conditions) - 1)
    out = bytearray()
    for i, ((family, raw, port), size) in enumerate(zip(conditions, sizes, strict=True)):
        out += _OP.pack(INET_DIAG_BC_D_COND, size, size + _OP.size)
        out += _HOSTCOND.pack(family, len(raw) * 8, port) + raw
        if i < len(conditions) - 1:
            out += _OP.pack(INET_DIAG_BC_JMP, _OP.size, total - len(out))
    return bytes(out)


def _request(kind: int, family: int, conditions: list[Condition], seq: int) -> bytes:
    ports = {port for _, _, port in conditions}
    dport = socket.htons(ports.pop()) if len(ports) == 1 else 0  # skips the bytecode for others
    states = 1 << TCP_ESTABLISHED
    if kind == TCPDIAG_GETSOCK:
        body = _REQUEST_V1.pack(family, 0, 0, 0, b"", dport, states, 0)
    else:
        body = _REQUEST_V2.pack(family, socket.IPPROTO_TCP, 0, 0, states, b"", dport)
    bytecode = _bytecode(conditions)
    body += _ATTR.pack(_ATTR.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, seq, 0) + body


def _replies(sock: socket.socket, kind: int, seq: int) -> Iterator[tuple[int, bytes]]:
    """(family, packed remote address) of each socket in the dump answering `seq`."""
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise OSError(errno.ECONNRESET, "sock_diag closed the dump")
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, got_kind, _, got_seq, _ = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                raise OSError(errno.EBADMSG, "sock_diag sent a short message")
            payload = offset + _HEADER.size
            offset += (length + 3) & ~3
            if got_seq != seq:
                continue
            if got_kind == NLMSG_DONE:
                return
            if got_kind == NLMSG_ERROR:
                (code,) = _ERRNO.unpack_from(data, payload)
                raise OSError(-code, f"sock_diag refused the request: {errno.errorcode.get(-code)}")
            if got_kind == kind and length >= _HEADER.size + _MESSAGE.size:
                family, state, _, _, _, _, _, dst = _MESSAGE.unpack_from(data, payload)
                if state == TCP_ESTABLISHED:
                    yield family, dst


def established_remotes(remotes: Collection[str], ports: Collection[int]) -> Iterator[str]:
    """Remote address of each ESTABLISHED TCP socket to one of `remotes` on `ports`.

    Raises OSError when the kernel or a sandbox refuses sock_diag (the
    caller then reads /proc).  IPv4 addresses also match IPv6 sockets that
    dial their IPv4-mapped form; they come back in IPv4 text.
    """
    v4: list[Condition] = []
    v6: list[Condition] = []
    for text in remotes:
        addr = ipaddress.ip_address(text)
        for port in ports:
            if addr.version == 4:
                v4.append((socket.AF_INET, addr.packed, port))
            else:
                v6.append((socket.AF_INET6, addr.packed, port))
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(TIMEOUT)
        try:
            found = _dump(sock, [(TCPDIAG_GETSOCK, socket.AF_UNSPEC, v4 + v6)])
        except OSError:
            # One family a request; IPv4 conditions also go to the IPv6 dump, where the
            # kernel matches IPv4-mapped peers.
            plan: Plan = [(SOCK_DIAG_BY_FAMILY, socket.AF_INET, v4)]
            plan.append((SOCK_DIAG_BY_FAMILY, socket.AF_INET6, v4 + v6))
            found = _dump(sock, plan)
    for family, dst in found:
        if family == socket.AF_INET:
            yield str(ipaddress.IPv4Address(dst[:4]))
        else:
            v6addr = ipaddress.IPv6Address(dst)
            yield str(v6addr.ipv4_mapped or v6addr)


def _dump(sock: socket.socket, plan: Plan) -> list[tuple[int, bytes]]:
    """Every (family, remote) the requests in `plan` match, in chunks the bytecode can hold."""
    found: list[tuple[int, bytes]] = []
    seq = 0
    for kind, family, conditions in plan:
        for start in range(0, len(conditions), MAX_CONDITIONS):
            seq += 1
            chunk = conditions[start : start + MAX_CONDITIONS]
            sock.sendall(_request(kind, family, chunk, seq))
            found.extend(_replies(sock, kind, seq))
    return found
