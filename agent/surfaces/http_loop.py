"""One thread that owns every connection while it is idle: accept, TLS handshake, request head.

A client that connects and then dribbles bytes costs a buffer here, not a
thread, and one deadline covers its whole handshake and request head; a
client that reads its answer slowly gets it from here too, under the same
deadline.  Only a
complete head goes to a worker, so a bounded pool serves any number of slow
clients.  Connections are capped well below the file-descriptor limit, so no
client can take the descriptors the probes need; at the cap the oldest idle
connection (a stalled or keep-alive one) makes room, and when every connection
is busy the newcomer is closed at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import selectors
import socket
import ssl
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("agent.http")

#: Descriptors kept free for probes, DNS, children and logs whatever clients do.
FD_RESERVE = 128
MAX_HEAD_BYTES = 64 * 1024 + 8 * 1024
#: Empty lines ignored before a request line (RFC 9112 2.2); they count in the head's size.
MAX_EMPTY_LINES = 4
_ACCEPT_BATCH = 64
_TICK = 0.25
_PAUSE_FIRST, _PAUSE_MAX = 0.1, 2.0
_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 32\r\nConnection: close\r\n\r\nRequest Header Fields Too Large\n"
)


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered so that FD_RESERVE descriptors stay free under RLIMIT_NOFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(4, min(wanted, soft - FD_RESERVE))


@dataclass(eq=False)
class Connection:
    """A client connection; `buf` holds bytes read but not yet handled (pipelined requests)."""

    sock: socket.socket
    peer: str
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    handshaking: bool = False
    out: bytes = b""  # response bytes the client has not taken yet
    sent: int = 0
    close_after: bool = False
    answered: bool = False  # once true, a quiet connection is keep-alive, not a held slot


Dispatch = Callable[[Connection, bytes], None]
CertCheck = Callable[[ssl.SSLSocket, str], bool]


def empty_lines(buf: bytes | bytearray) -> int:
    """Length of the (at most MAX_EMPTY_LINES) empty lines at the start of `buf`.

    Some clients send a CRLF after a request or before the first one; RFC 9112
    2.2 says to ignore at least one.  A few more are junk the handler refuses.
    """
    pos = 0
    for _ in range(MAX_EMPTY_LINES):
        if buf.startswith(b"\r\n", pos):
            pos += 2
        elif buf.startswith(b"\n", pos):
            pos += 1
        else:
            break
    return pos


def head_end(buf: bytes | bytearray) -> int:
    """Length of the request head (empty lines before it included) at the start of `buf`,
    or 0 while it is incomplete."""
    start = empty_lines(buf)
    line_end = buf.find(b"\n", start)
    if line_end < 0:
        return 0
    if len(bytes(buf[start:line_end]).split()) < 3:  # HTTP/0.9 or junk: no headers follow
        return line_end + 1
    ends = [
        i + n for i, n in ((buf.find(b"\n\r\n", start), 3), (buf.find(b"\n\n", start), 2)) if i >= 0
    ]
    return min(ends) if ends else 0


class ConnectionLoop:
    """Accepts and reads heads on one thread; `dispatch` runs on workers and calls `resume`."""

    def __init__(
        self,
        listener: socket.socket,
        dispatch: Dispatch,
        *,
        max_connections: int,
        head_timeout: float,
        tls: Callable[[], ssl.SSLContext] | None = None,
        cert_check: CertCheck | None = None,
    ) -> None:
        self._listener = listener
        self._dispatch = dispatch
        self.max_connections = connection_cap(max_connections)
        self._head_timeout = head_timeout
        self._tls = tls
        self._cert_check = cert_check
        self._sel = selectors.DefaultSelector()
        self._idle: OrderedDict[Connection, None] = OrderedDict()  # oldest first
        self._busy: set[Connection] = set()
        self._lock = threading.Lock()  # guards _busy, _resumed and the counters
        self._resumed: list[Connection] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._paused_until = 0.0
        self._pause = _PAUSE_FIRST
        self._last_expiry = 0.0
        self.dropped: Counter[str] = Counter()  # reason -> connections closed by us
        listener.setblocking(False)
        self._sel.register(listener, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)

    # -- called from other threads
    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._idle) + len(self._busy)

    def respond(self, conn: Connection, response: bytes, *, keep_alive: bool) -> None:
        """A worker hands back a connection with its answer; the loop writes what is left.

        One non-blocking send here usually takes it all; a client that reads
        slowly gets the rest from the loop under the connection deadline, so
        it holds a buffer rather than a worker.
        """
        conn.out, conn.sent, conn.close_after = response, 0, not keep_alive
        conn.answered = True
        self._send_some(conn)
        with self._lock:
            self._busy.discard(conn)
            if self._stop.is_set() or (conn.close_after and not self._pending(conn)):
                _close(conn)
                return
            self._resumed.append(conn)
        self._wake()

    def release(self, conn: Connection) -> None:
        """A worker is done with a connection that failed."""
        with self._lock:
            self._busy.discard(conn)
        _close(conn)

    @staticmethod
    def _pending(conn: Connection) -> bool:
        return conn.sent < len(conn.out)

    @staticmethod
    def _send_some(conn: Connection) -> bool:
        """Send what the socket takes now; False when the client is gone."""
        view = memoryview(conn.out)
        while conn.sent < len(conn.out):
            try:
                n = conn.sock.send(view[conn.sent :])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                return True
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return False
            conn.sent += n
        return True

    def stop(self) -> None:
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # -- the loop thread
    def run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._step()
                except Exception:  # the listener must outlive any one bad connection
                    log.exception("HTTP connection loop error; continuing")
                    time.sleep(_TICK)
        finally:
            self._shutdown()

    def _step(self) -> None:
        now = time.monotonic()
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            self._sel.register(self._listener, selectors.EVENT_READ, None)
        for key, _ in self._sel.select(_TICK):
            if key.fileobj is self._listener:
                self._accept()
            elif key.fileobj is self._wake_r:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            else:
                assert isinstance(key.data, Connection)
                self._advance(key.data)
        with self._lock:
            resumed, self._resumed = self._resumed, []
        for conn in resumed:
            self._adopt(conn)
        now = time.monotonic()
        if now - self._last_expiry >= _TICK / 2:
            self._last_expiry = now
            self._expire(now)

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                self._pause = _PAUSE_FIRST
                return
            except OSError as exc:
                if exc.errno in _FD_ERRORS:
                    self._back_off(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # the client gave up before we got to it
                raise
            peer = _peer(addr)
            if self.open_connections >= self.max_connections and not self._evict_oldest():
                self._count("limit")
                _close_sock(sock)
                continue
            conn = Connection(sock, peer, time.monotonic() + self._head_timeout)
            if not self._start(conn):
                continue
            self._adopt(conn)

    def _back_off(self, exc: OSError) -> None:
        """Out of descriptors: stop accepting for a while instead of spinning on accept."""
        log.warning("accept failed (%s); pausing new connections for %.1f s", exc, self._pause)
        self._count("accept_error")
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(self._listener)
        self._paused_until = time.monotonic() + self._pause
        self._pause = min(self._pause * 2, _PAUSE_MAX)

    def _evict_oldest(self) -> bool:
        if not self._idle:
            return False
        conn = next(iter(self._idle))
        self._count("limit")
        self._forget(conn)
        return True

    def _start(self, conn: Connection) -> bool:
        conn.sock.setblocking(False)
        if self._tls is None:
            return True
        try:
            conn.sock = self._tls().wrap_socket(
                conn.sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ValueError) as exc:
            log.debug("TLS setup for %s failed: %s", conn.peer, exc)
            _close(conn)
            return False
        conn.handshaking = True
        return True

    def _adopt(self, conn: Connection) -> None:
        """Own an idle connection: finish its answer, wait for its next head, or dispatch one."""
        if not conn.handshaking:
            conn.deadline = time.monotonic() + self._head_timeout
        if self._pending(conn):
            self._watch(conn, selectors.EVENT_WRITE)
            return
        if self._try_dispatch(conn):
            return
        if self._watch(conn, selectors.EVENT_READ):
            # TLS may hold decrypted bytes the selector cannot see: read once now.
            self._advance(conn)

    def _watch(self, conn: Connection, events: int) -> bool:
        """Register an idle connection for `events`; False (and closed) if that fails."""
        self._idle[conn] = None
        try:
            self._sel.register(conn.sock, events, conn)
        except (OSError, ValueError):
            self._forget(conn)
            return False
        return True

    def _advance(self, conn: Connection) -> None:
        if self._pending(conn):
            self._flush(conn)
            return
        if conn.handshaking and not self._handshake(conn):
            return
        while True:
            try:
                chunk = conn.sock.recv(16384)
            except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                break
            except ssl.SSLWantWriteError:
                self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
                return
            except (OSError, ValueError):
                self._forget(conn)
                return
            if not chunk:
                self._forget(conn)
                return
            conn.buf += chunk
            if len(conn.buf) > MAX_HEAD_BYTES or head_end(conn.buf):
                break
        if head_end(conn.buf[:MAX_HEAD_BYTES]):
            self._unregister(conn)
            self._idle.pop(conn, None)
            self._try_dispatch(conn)
        elif len(conn.buf) > MAX_HEAD_BYTES:
            with contextlib.suppress(OSError, ValueError):
                conn.sock.send(_TOO_LARGE)
            self._forget(conn)
        else:
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def _flush(self, conn: Connection) -> None:
        if not self._send_some(conn):
            self._forget(conn)
        elif self._pending(conn):
            return  # still registered for EVENT_WRITE
        elif conn.close_after:
            self._forget(conn)
        else:
            conn.out, conn.sent = b"", 0
            self._unregister(conn)
            self._idle.pop(conn, None)
            self._adopt(conn)

    def _handshake(self, conn: Connection) -> bool:
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
            return False
        except ssl.SSLWantWriteError:
            self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return False
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.debug("TLS handshake with %s failed: %s", conn.peer, exc)
            self._forget(conn)
            return False
        conn.handshaking = False
        if self._cert_check is not None and not self._cert_check(conn.sock, conn.peer):
            self._forget(conn)
            return False
        return True

    def _try_dispatch(self, conn: Connection) -> bool:
        n = head_end(conn.buf)
        if not n:
            return False
        head = bytes(conn.buf[:n])
        head = head[empty_lines(head) :]
        del conn.buf[:n]
        with self._lock:
            self._busy.add(conn)
        try:
            self._dispatch(conn, head)
        except RuntimeError:  # the worker pool is shut down: we are stopping
            self.release(conn)
        return True

    def _expire(self, now: float) -> None:
        for conn in list(self._idle):
            if conn.deadline <= now:
                idle = self._keep_alive(conn)
                log.debug("closing %s: %s", conn.peer, "idle" if idle else "head too slow")
                self._count("idle" if idle else "deadline")
                self._forget(conn)

    def _keep_alive(self, conn: Connection) -> bool:
        """Quiet since its last answer: routine.  A connection that never got a first
        request in, or cut a head, handshake or answer short, held a slot as a slowloris
        does, so it counts as "deadline" rather than hiding among keep-alive closes."""
        started = bool(conn.buf.strip(b"\r\n"))  # empty lines alone are no request yet
        return conn.answered and not started and not conn.handshaking and not self._pending(conn)

    def _count(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] += 1

    def _unregister(self, conn: Connection) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(conn.sock)

    def _forget(self, conn: Connection) -> None:
        self._unregister(conn)
        self._idle.pop(conn, None)
        _close(conn)

    def _shutdown(self) -> None:
        for conn in list(self._idle):
            self._forget(conn)
        with self._lock:
            busy, self._busy = list(self._busy), set()
            resumed, self._resumed = self._resumed, []
        for conn in resumed:
            _close(conn)
        for conn in busy:
            # The plain socket method: SSLSocket.shutdown would tear down TLS
            # state under the worker that is still writing to it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()


def _close(conn: Connection) -> None:
    _close_sock(conn.sock)


def _close_sock(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def _peer(client_address: object) -> str:
    if isinstance(client_address, tuple) and len(client_address) >= 2:
        return f"{client_address[0]}:{client_address[1]}"
    return str(client_address)
