"""The listener against hostile clients on loopback: slow heads, floods, smuggling, bad logins.

Every test uses a real server and real sockets, bounded to seconds and a few
hundred connections.  Nothing asserts a duration: each test checks what was
answered, what was closed and what the server counted.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme

from agent.surfaces import basic_auth
from agent.surfaces.http_loop import MAX_HEAD_BYTES, head_end
from agent.surfaces.http_server import HttpServer, Request, Response
from agent.surfaces.webconfig import WebConfig
from agent.surfaces.webconfig_file import load_web_config
from testbed.require import missing
from tests.support import http_client
from tests.support.http_client import PASSWORD, basic, get, write

LOOPBACK = "127.0.0.1"
SLOW_CLIENTS = 300


def ok_route(_: Request) -> Response:
    return Response(200, "text/plain; charset=utf-8", b"ok\n")


@contextmanager
def running(config: WebConfig | None = None, **kwargs: Any) -> Iterator[HttpServer]:
    server = HttpServer(
        f"{LOOPBACK}:0", {"/metrics": ok_route, "/probe": ok_route}, config, **kwargs
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def slow_clients(stack: ExitStack, port: int, n: int, first: bytes = b"G") -> list[socket.socket]:
    """n connections that each sent the first byte of a request head and then stall."""
    socks = []
    for _ in range(n):
        s = stack.enter_context(socket.create_connection((LOOPBACK, port), timeout=10))
        s.sendall(first)
        socks.append(s)
    return socks


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=10) as s:
        s.sendall(data)
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    return reply


# --- slow clients and the connection cap --------------------------------------


def test_slow_clients_hold_no_threads_and_scrapes_still_answer() -> None:
    base_threads = threading.active_count()
    with running() as server, ExitStack() as stack:
        slow_clients(stack, server.port, SLOW_CLIENTS)
        status, _, body = get(server)
        assert (status, body) == (200, b"ok\n")
        # Before: one thread per connection (300+).  Now a loop thread and a fixed pool.
        assert threading.active_count() <= base_threads + 1 + server.workers
        assert server.connection_stats()[0] >= SLOW_CLIENTS


def test_one_deadline_covers_the_whole_head_however_slowly_it_trickles() -> None:
    # Before: the timeout was per read, so a byte every half second kept it open for ever.
    with running(connection_timeout=1.0) as server:
        with socket.create_connection((LOOPBACK, server.port), timeout=10) as s:
            sent = 0
            try:
                for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
                    s.sendall(bytes([byte]))
                    sent += 1
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert closed_by_server(s, 10)
        assert sent < 75  # cut while the head was still trickling in
        assert server.connection_stats()[1].get("deadline", 0) >= 1


def test_a_connection_that_never_sends_a_request_counts_as_deadline_not_idle() -> None:
    """Silent connections hold a slot like a slowloris; only keep-alive after an answer is idle.

    Before, all 20 silent ones counted as idle, hidden among routine keep-alive closes.
    """
    with running(connection_timeout=0.5) as server, ExitStack() as stack:
        silent = slow_clients(stack, server.port, 20, first=b"")
        kept = stack.enter_context(socket.create_connection((LOOPBACK, server.port), timeout=10))
        kept.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200 ")
        assert all(closed_by_server(s, 10) for s in [*silent, kept])
        dropped = server.connection_stats()[1]
    assert (dropped.get("deadline", 0), dropped.get("idle", 0)) == (20, 1)


def test_tls_handshake_and_head_share_the_deadline(tmp_path: Path) -> None:
    ca = trustme.CA()
    http_client.write_leaf(ca, tmp_path, "server", LOOPBACK)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with running(http_client.tls_config(tmp_path), connection_timeout=1.0) as server:
        raw = socket.create_connection((LOOPBACK, server.port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
            tls.sendall(b"GET /metrics HTTP/1.1\r\n")  # handshake done, head never finished
            assert closed_by_server(tls, 10)
        status, _, body = get(server, context=ctx)
        assert (status, body) == (200, b"ok\n")


def test_clients_that_never_read_their_answer_hold_no_worker() -> None:
    big = b"x" * (
        6 << 20
    )  # more than the kernel buffers (4 MiB autotuned) hold for a stalled reader

    def big_route(_: Request) -> Response:
        return Response(200, "text/plain; charset=utf-8", big)

    server = HttpServer(
        f"{LOOPBACK}:0", {"/metrics": ok_route, "/big": big_route}, connection_timeout=60
    )
    server.start()
    try:
        with ExitStack() as stack:
            for _ in range(server.workers + 1):
                s = stack.enter_context(socket.socket())
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                s.settimeout(10)
                s.connect((LOOPBACK, server.port))
                s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
            time.sleep(0.5)
            # Before: every worker sat in sendall for up to 60 s, so this timed out.
            conn = http.client.HTTPConnection(LOOPBACK, server.port, timeout=30)
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"ok\n")
            conn.close()
    finally:
        server.stop()


def test_at_the_cap_the_oldest_idle_connection_makes_room() -> None:
    with running(max_connections=20) as server, ExitStack() as stack:
        idle = slow_clients(stack, server.port, 30)
        status, _, _ = get(server)  # a normal client still gets in
        assert status == 200
        open_now, dropped = server.connection_stats()
        assert open_now <= 20
        assert dropped.get("limit", 0) >= 10
        assert closed_by_server(idle[0], 5)  # the oldest went first


def test_connection_cap_leaves_descriptors_for_probes() -> None:
    import resource

    from agent.surfaces.http_loop import FD_RESERVE, connection_cap

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_cap(10**6) <= soft - FD_RESERVE


def test_backlog_absorbs_a_burst_of_connects() -> None:
    ss = shutil.which("ss")
    if ss is None:
        missing("ss (iproute2) to read the listen backlog")
    with running() as server:
        out = subprocess.run(
            [ss, "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(out[2]) >= 128  # Send-Q of a listening socket is its backlog (was 5)
        with ExitStack() as stack:
            socks = [
                stack.enter_context(socket.create_connection((LOOPBACK, server.port), timeout=10))
                for _ in range(SLOW_CLIENTS)
            ]
            for s in socks:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answered = sum(s.recv(12).startswith(b"HTTP/1.1 200") for s in socks)
        assert answered == SLOW_CLIENTS


# --- framing ---------------------------------------------------------------------


def test_duplicate_content_length_cannot_smuggle_a_request() -> None:
    smuggled = b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n"
    request = (
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        + f"Content-Length: {len(smuggled)}\r\n\r\n".encode()
        + smuggled
    )
    with running() as server:
        reply = raw_exchange(server.port, request)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert reply.count(b"HTTP/1.1 ") == 1  # before: two 200s, the second the smuggled /probe


@pytest.mark.parametrize("value", ["chunked", "identity", "gzip, chunked"])
def test_any_transfer_encoding_is_refused(value: str) -> None:
    request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {value}\r\n\r\n0\r\n\r\n"
    with running() as server:
        reply = raw_exchange(server.port, request.encode())
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("value", ["+0", "-1", "0x10", "1 1", ""])
def test_a_content_length_that_is_not_digits_is_refused(value: str) -> None:
    request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n"
    with running() as server:
        reply = raw_exchange(server.port, request.encode())
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.count(b"HTTP/1.1 ") == 1


def test_pipelined_requests_still_answer_in_order() -> None:
    one = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with running() as server:
        reply = raw_exchange(server.port, one + one + last)
    assert reply.count(b"HTTP/1.1 200 ") == 2 and b"HTTP/1.1 404 " in reply


@pytest.mark.parametrize("before", [b"\r\n", b"\r\n\r\n", b"\n", b"\r\n" * 4])
def test_empty_lines_before_the_request_line_are_ignored(before: bytes) -> None:
    """RFC 9112 2.2: a server SHOULD ignore at least one; before, the connection just closed."""
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with running() as server:
        reply = raw_exchange(server.port, before + request)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nok\n")


def test_an_empty_line_between_keep_alive_requests_is_ignored() -> None:
    one = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with running() as server:
        reply = raw_exchange(server.port, one + b"\r\n" + last)
    assert reply.count(b"HTTP/1.1 200 ") == 2


def test_more_empty_lines_than_the_few_ignored_get_400() -> None:
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    with running() as server:
        reply = raw_exchange(server.port, b"\r\n" * 5 + request)
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("line", [b"GET /metrics\r\n", b"GET /metrics\n", b"GET /\r\n"])
def test_an_http_0_9_request_gets_400_not_a_bare_body(line: bytes) -> None:
    """Before, the answer was the body alone, with no status line a client could check."""
    with running() as server:
        reply = raw_exchange(server.port, line)
    assert reply.startswith(b"HTTP/1.1 400 ") and b"Connection: close\r\n" in reply
    assert b"ok\n" not in reply


def test_oversized_head_is_refused() -> None:
    with running() as server:
        head = b"GET /metrics HTTP/1.1\r\nX: "
        # Exactly one byte over: the server has read everything when it answers, so
        # closing does not turn into a reset that would hide the reply.
        reply = raw_exchange(server.port, head + b"a" * (MAX_HEAD_BYTES + 1 - len(head)))
    assert reply.startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize(
    ("data", "length"),
    [
        (b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest", 24),
        (b"GET /\r\n", 7),
        (b"GET / HTTP/1.1\r\n", 0),
        (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 22),  # empty lines first count in the head
        (b"\nGET / HTTP/1.1\n\n", 17),
        (b"\r\n", 0),  # an empty line alone: still waiting for the request line
        (b"\r\n" * 5 + b"GET / HTTP/1.1\r\n\r\n", 10),  # too many: the fifth ends a bad head
    ],
)
def test_head_end(data: bytes, length: int) -> None:
    assert head_end(data) == length


# --- basic auth under a flood ------------------------------------------------------


def counting_bcrypt(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The passwords bcrypt is asked to check, in order: each one a full, slow check."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return bool(real(password, hashed))

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    return calls


@pytest.fixture
def auth(tmp_path: Path) -> WebConfig:
    text = f"basic_auth_users:\n  prometheus: {http_client.hash_password(PASSWORD)}\n"
    return load_web_config(str(write(tmp_path / "web.yml", text)))


def test_a_repeated_wrong_password_is_refused_from_the_cache(
    auth: WebConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting_bcrypt(monkeypatch)
    for _ in range(20):
        assert not auth.check_basic_auth(basic("prometheus", "wrong"))
    assert len(calls) == 1  # before: 20 full bcrypt checks
    assert auth.check_basic_auth(basic("prometheus", PASSWORD))
    assert len(calls) == 2


def test_failure_cache_and_suspect_lane_stay_bounded_and_forget_the_oldest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A guesser with endless passwords and addresses cannot grow either cache past its cap."""
    monkeypatch.setattr(basic_auth, "FAILURE_CACHE_SIZE", 3)
    monkeypatch.setattr(basic_auth, "SUSPECT_PEERS", 3)
    calls = counting_bcrypt(monkeypatch)
    auth = basic_auth.BasicAuth({"prometheus": http_client.hash_password(PASSWORD).encode()})
    for i in range(10):
        assert not auth.check(basic("prometheus", f"g{i}"), peer=f"10.0.0.{i}")
    assert len(calls) == 10
    assert not auth.check(basic("prometheus", "g9"), peer="10.0.1.1")  # newest: from the cache
    assert len(calls) == 10
    assert not auth.check(basic("prometheus", "g0"), peer="10.0.1.2")  # oldest: forgotten
    assert len(calls) == 11
    assert len(auth._failed) == 3 and len(auth._suspects) == 3
    assert list(auth._suspects) == ["10.0.0.9", "10.0.1.1", "10.0.1.2"]


def get_from(server: HttpServer, source: str, headers: dict[str, str]) -> int:
    """Status of GET /metrics sent from the loopback address `source` (all of 127/8 is local)."""
    conn = http.client.HTTPConnection(LOOPBACK, server.port, timeout=20, source_address=(source, 0))
    try:
        conn.request("GET", "/metrics", headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


@contextmanager
def guessing(
    server: HttpServer,
    sources: list[str],
    monkeypatch: pytest.MonkeyPatch,
    wait: float = 60.0,
    lanes: int | None = None,
) -> Iterator[list[int]]:
    """One guesser per source; a guess's bcrypt hangs until the block ends, the right one's not.

    `lanes`: how many guesses can be admitted at once, when not one per source up to the caps.
    """
    release = threading.Event()
    real = bcrypt.checkpw

    checking: list[bytes] = []

    def stuck(password: bytes, hashed: bytes) -> bool:
        if password != PASSWORD.encode():
            checking.append(password)
            release.wait(60)
        return bool(real(password, hashed))

    monkeypatch.setattr(bcrypt, "checkpw", stuck)
    monkeypatch.setattr(basic_auth, "BCRYPT_WAIT", wait)
    statuses: list[int] = []

    def guess(i: int, source: str) -> None:
        statuses.append(get_from(server, source, {"Authorization": basic("prometheus", f"g{i}")}))

    threads = [threading.Thread(target=guess, args=(i, s)) for i, s in enumerate(sources)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        lanes = len(set(sources)) if lanes is None else lanes
        admitted = min(lanes, basic_auth.BCRYPT_SLOTS + basic_auth.BCRYPT_QUEUE)
        busy = min(lanes, basic_auth.BCRYPT_SLOTS)
        while time.monotonic() < deadline and (
            len(statuses) < len(sources) - admitted or len(checking) < busy
        ):
            time.sleep(0.05)
        yield statuses
    finally:
        release.set()
        for t in threads:
            t.join(30)


def test_guessers_cannot_hold_every_worker_from_a_logged_in_scraper(
    auth: WebConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = {"Authorization": basic("prometheus", PASSWORD)}
    with running(auth) as server:
        assert get(server, headers=good)[0] == 200  # logged in: cached from now on
        sources = [f"127.0.1.{i}" for i in range(1, 2 * server.workers + 1)]
        with guessing(server, sources, monkeypatch) as statuses:
            # Before: every worker sat waiting for a bcrypt slot, so this one queued too.
            assert get_from(server, "127.0.0.1", good) == 200
    slots, queue = basic_auth.BCRYPT_SLOTS, basic_auth.BCRYPT_QUEUE
    assert statuses.count(503) == len(sources) - slots - queue  # refused at once


def test_busy_bcrypt_slots_give_503_instead_of_an_unbounded_wait(
    auth: WebConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    holders = [f"127.0.3.{i}" for i in range(1, basic_auth.BCRYPT_SLOTS + 1)]
    with running(auth) as server, guessing(server, holders, monkeypatch, wait=0.2):
        late: list[int] = []
        t = threading.Thread(
            target=lambda: late.append(
                get_from(server, "127.0.3.99", {"Authorization": basic("prometheus", "late")})
            )
        )
        t.start()
        t.join(15)
        assert late == [503], "the late client was left waiting (before: one global bcrypt lock)"
    assert auth.auth_refusals() == {"busy": 1}


def test_a_guesser_on_one_address_cannot_keep_another_from_logging_in(
    auth: WebConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(auth) as server, guessing(server, ["127.0.2.1"] * 12, monkeypatch) as statuses:
        # Before: the one address's guesses took every admission, so this got 503.
        assert (
            get_from(server, "127.0.2.2", {"Authorization": basic("prometheus", PASSWORD)}) == 200
        )
    assert statuses.count(503) == 11  # one check at a time per address


def test_guessers_on_many_addresses_cannot_keep_a_first_login_out(
    auth: WebConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve addresses that have each guessed wrong once keep guessing; a scraper's first
    login (nothing cached, as after a restart) from another address still gets in."""
    sources = [f"127.0.4.{i}" for i in range(1, 13)]
    with running(auth) as server:
        for i, source in enumerate(sources):  # one failing bcrypt each: now they are suspects
            assert get_from(server, source, {"Authorization": basic("prometheus", f"x{i}")}) == 401
        with guessing(server, sources, monkeypatch, lanes=1) as statuses:
            # Before: their guesses took every admission and slot, so this got 503.
            good = {"Authorization": basic("prometheus", PASSWORD)}
            assert get_from(server, "127.0.4.200", good) == 200
    assert statuses.count(503) == len(sources) - 1  # one suspect check at a time


def test_tls_client_certificates_still_enforced_by_the_loop(tmp_path: Path) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    http_client.write_leaf(server_ca, tmp_path, "server", LOOPBACK)
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.crt"))
    extra = "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n"
    config = http_client.tls_config(tmp_path, extra)
    assert config.authenticates_clients
    ctx = ssl.create_default_context()
    server_ca.configure_trust(ctx)
    with running(config) as server:
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException, OSError)):
            get(server, context=ctx)
        client_ca.issue_cert("scraper.example").configure_cert(ctx)
        assert get(server, context=ctx)[0] == 200


# --- out of descriptors ----------------------------------------------------------

_FD_STARVED_SERVER = """
import json, os, resource, sys
from agent.surfaces.http_server import HttpServer, Response
server = HttpServer("127.0.0.1:0", {"/metrics": lambda r: Response(200, "text/plain", b"ok\\n")})
server.start()
used = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 8, used + 8))
fillers = []
try:
    while True:
        fillers.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print(server.port, flush=True)
for line in sys.stdin:
    if line.strip() == "free":
        for fd in fillers:
            os.close(fd)
        fillers = []
    print(json.dumps(server.connection_stats()[1]), flush=True)
"""


def test_accept_backs_off_when_out_of_descriptors_and_recovers() -> None:
    import json
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", _FD_STARVED_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline())
        with ExitStack() as stack:
            for _ in range(5):  # queued in the backlog; accept fails with EMFILE
                s = stack.enter_context(socket.create_connection((LOOPBACK, port), timeout=10))
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(3)
            child.stdin.write("stats\n")
            child.stdin.flush()
            starved = json.loads(child.stdout.readline())
            # Pauses of 0.1 s doubling to 2 s: a handful of attempts, not a spinning loop.
            assert 1 <= starved.get("accept_error", 0) <= 20, starved
            child.stdin.write("free\n")
            child.stdin.flush()
            child.stdout.readline()
            assert s.recv(12) == b"HTTP/1.1 200"  # the queued client is served once fds are back
    finally:
        child.kill()
        child.wait()
