"""Packet times on loopback, stamped by the kernel, as a clock neither tool owns.

A tool's TLS phase includes its own handshake work.  Whether that work is
really slower, or only timed differently, shows on the wire: how long after
the server's handshake flight left did the client's next bytes (its Finished)
leave.  An AF_PACKET socket on `lo` gets each segment twice (leaving and
arriving); the leaving copy is kept, with the kernel's stamp.  A classic BPF
filter keeps everything but the server port's segments in the kernel, so the
capture costs the tools under measurement next to nothing.  It needs root
(CAP_NET_RAW); without it the capture is empty and says so.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from agent.probes.wire import SO_TIMESTAMPNS, STAMP_SPACE, kernel_stamp

_ETH_P_ALL = 0x0003
_ETH_P_IP = 0x0800
_PACKET_OUTGOING = 4
_SOL_PACKET = 263
_PACKET_STATISTICS = 6  # struct tpacket_stats: packets, drops
_SO_ATTACH_FILTER = 26
_ETH_HEADER = 14  # lo carries a zeroed Ethernet header
_LIMIT = 200_000  # segments kept: a benchmark's worth of one port, bounded
_SNAP = 128  # bytes of each frame copied: the headers are enough

Connection = tuple[int, int, int]  # client address (IPv4 as an int), client port, server address


@dataclass(frozen=True, slots=True)
class Segment:
    at: float  # time.time() seconds, the kernel's stamp
    src: tuple[int, int]  # (IPv4 address as an int, TCP port)
    dst: tuple[int, int]
    payload: int  # bytes of TCP payload
    syn: bool


@dataclass
class Capture:
    port: int  # the server port whose connections are kept
    segments: list[Segment] = field(default_factory=list)
    available: bool = False
    over_limit: int = 0  # segments not kept once _LIMIT was reached
    dropped: int = 0  # frames the kernel could not queue to the capture

    def handshakes(self, start: float, end: float) -> list[tuple[float, float]]:
        """(server's time, client's time) per TLS handshake whose SYN fell in [start, end].

        Server: from its SYN-ACK (about when it accepted) to its first handshake
        bytes, any injected hold included.  Client: from the server's last
        handshake segment to the client's next payload, its Finished.
        """
        conns: dict[Connection, list[Segment]] = {}
        for s in self.segments:
            if start <= s.at <= end:
                client, server = (s.dst, s.src) if s.src[1] == self.port else (s.src, s.dst)
                conns.setdefault((client[0], client[1], server[0]), []).append(s)
        out: list[tuple[float, float]] = []
        for segs in conns.values():
            accepted = next((s.at for s in segs if s.syn and s.src[1] == self.port), None)
            data = [s for s in segs if s.payload]
            if accepted is None or len(data) < 3 or data[0].dst[1] != self.port:
                continue
            flight: list[Segment] = []
            for s in data[1:]:
                if s.src[1] == self.port:
                    flight.append(s)
                elif flight:
                    out.append((flight[0].at - accepted, s.at - flight[-1].at))
                    break
        return out


def _port_filter(port: int) -> bytes:
    """Classic BPF for `ip and tcp and (src port P or dst port P)` on an Ethernet frame."""
    ops = (
        (0x28, 0, 0, 12),  # ldh [12]: EtherType
        (0x15, 0, 8, _ETH_P_IP),  # jeq IPv4, else drop
        (0x30, 0, 0, 23),  # ldb [23]: IP protocol
        (0x15, 0, 6, socket.IPPROTO_TCP),  # jeq TCP, else drop
        (0xB1, 0, 0, _ETH_HEADER),  # ldxb 4*([14]&0xf): IP header length
        (0x48, 0, 0, _ETH_HEADER),  # ldh [x+14]: source port
        (0x15, 2, 0, port),  # jeq P: keep
        (0x48, 0, 0, _ETH_HEADER + 2),  # ldh [x+16]: destination port
        (0x15, 0, 1, port),  # jeq P: keep, else drop
        (0x06, 0, 0, _SNAP),  # ret: keep the headers
        (0x06, 0, 0, 0),  # ret 0: drop
    )
    return b"".join(struct.pack("HBBI", *op) for op in ops)


def _parse(frame: bytes) -> tuple[tuple[int, int], tuple[int, int], int, bool] | None:
    ip = frame[_ETH_HEADER:]
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_TCP:
        return None
    ihl = (ip[0] & 0x0F) * 4
    (total,) = struct.unpack_from("!H", ip, 2)
    src_ip, dst_ip = struct.unpack_from("!II", ip, 12)
    tcp = ip[ihl:]
    if len(tcp) < 20:
        return None
    src, dst = struct.unpack_from("!HH", tcp)
    offset = (tcp[12] >> 4) * 4
    return (src_ip, src), (dst_ip, dst), total - ihl - offset, bool(tcp[13] & 0x02)


def _open(port: int) -> socket.socket | None:
    """A filtered, stamped packet socket on lo; None without the privilege (or off Linux)."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except (OSError, AttributeError):
        return None
    try:
        prog = _port_filter(port)
        code = ctypes.create_string_buffer(prog, len(prog))  # the kernel copies it on attach
        fprog = struct.pack("HL", len(prog) // 8, ctypes.addressof(code))
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # Bound to a protocol only now, filtered: nothing from elsewhere was queued before.
        sock.bind(("lo", _ETH_P_ALL))
        sock.settimeout(0.1)
    except OSError:
        sock.close()
        return None
    return sock


@contextmanager
def loopback(port: int) -> Iterator[Capture]:
    """Record the server port's outgoing IPv4 TCP segments on lo while the block runs."""
    cap = Capture(port)
    sock = _open(port)
    if sock is None:
        yield cap  # not root, or not Linux: nothing to compare
        return
    cap.available = True
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                frame, ancillary, _, addr = sock.recvmsg(_SNAP, STAMP_SPACE)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] != _PACKET_OUTGOING:
                continue
            if len(cap.segments) >= _LIMIT:
                cap.over_limit += 1
                continue
            parsed, stamp = _parse(frame), kernel_stamp(ancillary)
            if parsed is not None and stamp is not None:
                cap.segments.append(Segment(stamp / 1e9, *parsed))

    reader = threading.Thread(target=read, name="loopback-capture", daemon=True)
    reader.start()
    try:
        yield cap
    finally:
        stop.set()
        reader.join(timeout=1)
        with suppress(OSError):
            stats = sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
            _, cap.dropped = struct.unpack("II", stats)
        sock.close()
