"""Sockets for one probe, each read stamped with the moment the kernel queued it.

A thread blocked in recv() must be woken and take the interpreter back before
it can read the clock; on a loaded host, or while other probes run Python,
that wait (tens of microseconds to milliseconds) lands in whatever phase is
being timed.  With SO_TIMESTAMPNS every read also says when its bytes
arrived, so a phase can end at that moment plus the work the probe then did
on them (its CPU time), and the probe's own wake-up and waits for the
interpreter are left out.  The TLS handshake runs over memory BIOs so that
every read is one of ours and carries its stamp; DNS hands dnspython a UDP
socket that keeps the stamp of the reply it accepted.
Times are time.perf_counter() seconds unless they say otherwise.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import struct
import time
from typing import Any

log = logging.getLogger(__name__)

# Linux's value (asm-generic and x86); the socket module does not export it.
SO_TIMESTAMPNS = int(getattr(socket, "SO_TIMESTAMPNS", 35))
_TIMESPEC = struct.Struct("@ll")
#: recvmsg()'s ancillary buffer size for one receive stamp.
STAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
# One TLS record at most (16 KiB and its overhead): a probe's answer is under 1 KiB, and
# every read allocates its whole size before shrinking, which the heap keeps.
_RECORD = 16384 + 1024


_keeper: list[socket.socket] = []
_refused: list[OSError] = []  # why the kernel would not stamp, once it has said so
# A kernel or sandbox without the option says so with these; EMFILE or ENOMEM pass.
_REFUSALS = frozenset({errno.ENOPROTOOPT, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM})


def _keep_stamping() -> None:
    """Hold one stamping socket open for the life of the process.

    The kernel switches receive stamping on with the first socket that asks and
    off with the last one closed, each time by patching its code on every CPU
    (deferred to a work queue, so a probe's first packets could go unstamped).
    One idle socket keeps it on instead of every probe toggling it.
    """
    if not _keeper:
        keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            keeper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            keeper.close()
            raise
        _keeper.append(keeper)


def _stamp_reads(sock: socket.socket) -> None:
    """Ask for receive stamps on `sock`; where the kernel refuses, reads count as
    arriving when they are read, as before, and once it has refused, later sockets
    no longer ask.  A passing error (no file descriptors) only costs this socket its stamps."""
    if _refused:
        return
    try:
        _keep_stamping()
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError as e:
        if e.errno in _REFUSALS:
            _refused.append(e)
            log.warning(
                "the kernel refuses receive timestamps (%s): phases now end when the probe "
                "reads its bytes, its own wake-up included",
                e.strerror or e,
            )


def kernel_stamp(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """When the kernel received a recvmsg()'s data (SO_TIMESTAMPNS), in wall-clock ns."""
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(raw)
            return int(sec) * 1_000_000_000 + int(nsec)
    return None


def _remaining(deadline: float) -> float:
    left = deadline - time.perf_counter()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


class StampedSocket:
    """A TCP socket whose reads report when their bytes arrived."""

    def __init__(self, address: str, port: int) -> None:
        v6 = ":" in address
        self.peer: tuple[str, int] | tuple[str, int, int, int] = (
            (address, port, 0, 0) if v6 else (address, port)
        )
        self.sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
        _stamp_reads(self.sock)
        self.lag = 0.0  # how long after its bytes arrived the latest read returned
        self.arrived = 0.0  # when the latest read's bytes arrived
        self._cpu_at_read = 0.0  # this thread's CPU clock when that read returned

    def connect(self, deadline: float) -> None:
        self.sock.settimeout(_remaining(deadline))
        self.sock.connect(self.peer)

    def send(self, data: bytes, deadline: float) -> None:
        self.sock.settimeout(_remaining(deadline))
        self.sock.sendall(data)

    def recv(self, deadline: float) -> tuple[bytes, float]:
        """(bytes, when the latest of them arrived); b"" once the peer has closed."""
        self.sock.settimeout(_remaining(deadline))
        data, ancillary, _, _ = self.sock.recvmsg(_RECORD, STAMP_SPACE)
        now = time.perf_counter()
        wall = time.time_ns()
        self._cpu_at_read = time.thread_time()
        stamp = kernel_stamp(ancillary)
        # A wall clock stepped back would make this negative: then trust the read.
        self.lag = 0.0 if stamp is None else max(0.0, (wall - stamp) / 1e9)
        self.arrived = now - self.lag
        return data, self.arrived

    def settled(self) -> float:
        """When the latest read's bytes arrived, plus the CPU this thread has used since.

        CPU, not wall time: waiting for a core or for the interpreter while
        working on the bytes is the probe's own delay, not the server's.
        """
        return self.arrived + (time.thread_time() - self._cpu_at_read)

    def close(self) -> None:
        self.sock.close()


class TlsChannel:
    """TLS over memory BIOs on a StampedSocket, so each read keeps its kernel stamp."""

    def __init__(self, sock: StampedSocket, context: ssl.SSLContext, hostname: str) -> None:
        self.sock = sock
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_hostname=hostname)

    def _flush(self, deadline: float) -> None:
        data = self._out.read()
        if data:
            self.sock.send(data, deadline)

    def handshake(self, deadline: float) -> float:
        """Complete the handshake; returns when it did, less the probe's own waits.

        Raises the ssl module's errors; ConnectionResetError if the peer closes.
        """
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush(deadline)
                data, _ = self.sock.recv(deadline)
                if not data:
                    raise ConnectionResetError("closed during the TLS handshake") from None
                self._in.write(data)
                continue
            self._flush(deadline)
            return self.settled()

    def write(self, data: bytes, deadline: float) -> None:
        self.tls.write(data)
        self._flush(deadline)

    def read(self, deadline: float) -> tuple[bytes, float]:
        """(plaintext, when the read that brought it arrived); b"" at the end of the stream.

        A close without close_notify also ends the stream, as SSLSocket's
        suppress_ragged_eofs does: the response's own framing decides whether
        it was complete.
        """
        arrived = time.perf_counter()
        while True:
            try:
                return self.tls.read(_RECORD), arrived
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b"", arrived
            data, arrived = self.sock.recv(deadline)
            if data:
                self._in.write(data)
            else:
                self._in.write_eof()

    def settled(self) -> float:
        """When the probe would be done with the latest read, had it never waited for a CPU."""
        return self.sock.settled()


class StampedDatagram(socket.socket):
    """A non-blocking UDP socket for dnspython's own query code, timing the exchange
    from the latest send to when the kernel queued the latest datagram read.

    dnspython reads its clock once the reply has been read; that read waits for
    the thread to wake and take the interpreter back, as TCP's do.  dnspython
    reads until it accepts a reply, so the latest datagram is the accepted one.
    """

    def __init__(self, family: int) -> None:
        super().__init__(family, socket.SOCK_DGRAM)
        self.setblocking(False)  # dnspython waits for readiness itself
        _stamp_reads(self)
        self._sent_ns: int | None = None
        self._arrived_ns: int | None = None

    def sendto(self, data: Any, *flags_and_address: Any) -> int:  # type: ignore[override]
        self._sent_ns = time.time_ns()
        return super().sendto(data, *flags_and_address)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        data, ancillary, _, address = self.recvmsg(bufsize, STAMP_SPACE, flags)
        self._arrived_ns = kernel_stamp(ancillary)
        return data, address

    def round_trip(self) -> float | None:
        """Seconds from the latest send to the latest read's arrival; None when either is
        unknown or the wall clock stepped back between them."""
        if self._sent_ns is None or self._arrived_ns is None:
            return None
        took = (self._arrived_ns - self._sent_ns) / 1e9
        return took if took >= 0 else None
