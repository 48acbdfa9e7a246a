"""Packet times on loopback, stamped by the kernel, as a clock neither tool owns.

A tool's TLS phase includes its own handshake work.  Whether that work is
really slower, or only timed differently, shows on the wire: how long after
the server's handshake flight left did the client's next bytes (its Finished)
leave.  An AF_PACKET socket on `lo` sees every outgoing segment once, with
the kernel's stamp; that needs root (CAP_NET_RAW), so without it the capture
is simply empty and the benchmark says so.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4
_SO_TIMESTAMPNS = int(getattr(socket, "SO_TIMESTAMPNS", 35))
_TIMESPEC = struct.Struct("@ll")
_ETH_HEADER = 14  # lo carries a zeroed Ethernet header
_LIMIT = 200_000  # packets kept: a benchmark's worth, bounded


@dataclass(frozen=True)
class Segment:
    at: float  # time.time() seconds, the kernel's stamp
    src: int  # TCP ports
    dst: int
    payload: int  # bytes of TCP payload
    syn: bool


@dataclass
class Capture:
    port: int  # the server port whose connections are kept
    segments: list[Segment] = field(default_factory=list)
    available: bool = False

    def handshakes(self, start: float, end: float) -> list[tuple[float, float]]:
        """(server's time, client's time) per TLS handshake whose SYN fell in [start, end].

        Server: from the ClientHello to the server's first handshake bytes, any
        injected hold included.  Client: from the server's last handshake
        segment to the client's next payload, its Finished.
        """
        conns: dict[int, list[Segment]] = {}
        for s in self.segments:
            if start <= s.at <= end and self.port in (s.src, s.dst):
                conns.setdefault(s.dst if s.src == self.port else s.src, []).append(s)
        out: list[tuple[float, float]] = []
        for segs in conns.values():
            if not any(s.syn and s.dst == self.port for s in segs):
                continue
            data = [s for s in segs if s.payload]
            if len(data) < 3 or data[0].dst != self.port:
                continue
            flight = []
            for s in data[1:]:
                if s.src == self.port:
                    flight.append(s)
                elif flight:
                    out.append((flight[0].at - data[0].at, s.at - flight[-1].at))
                    break
        return out


def _parse(frame: bytes) -> tuple[int, int, int, bool] | None:
    ip = frame[_ETH_HEADER:]
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_TCP:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    tcp = ip[ihl:]
    if len(tcp) < 20:
        return None
    src, dst = struct.unpack_from("!HH", tcp)
    offset = (tcp[12] >> 4) * 4
    return src, dst, total - ihl - offset, bool(tcp[13] & 0x02)


@contextmanager
def loopback(port: int) -> Iterator[Capture]:
    """Record outgoing IPv4 TCP segments on lo while the block runs."""
    cap = Capture(port)
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    except (OSError, AttributeError):
        yield cap  # not root, or not Linux: nothing to compare
        return
    sock.bind(("lo", 0))
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.settimeout(0.1)
    cap.available = True
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                frame, ancillary, _, addr = sock.recvmsg(256, socket.CMSG_SPACE(_TIMESPEC.size))
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] != _PACKET_OUTGOING or len(cap.segments) >= _LIMIT:
                continue
            parsed = _parse(frame)
            stamp = next(
                (
                    sec + nsec / 1e9
                    for level, kind, raw in ancillary
                    if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS
                    for sec, nsec in [_TIMESPEC.unpack_from(raw)]
                ),
                None,
            )
            if parsed is not None and stamp is not None:
                cap.segments.append(Segment(stamp, *parsed))

    reader = threading.Thread(target=read, name="loopback-capture", daemon=True)
    reader.start()
    try:
        yield cap
    finally:
        stop.set()
        reader.join(timeout=1)
        sock.close()
