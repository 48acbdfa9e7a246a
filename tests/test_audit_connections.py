"""Connection audit against real loopback TCP connections.

A real listener and a real client stand in for an STS address; the audit reads
the kernel's socket table through psutil.  The unprivileged case runs the
audit as `nobody` in a forked child, against a connection this process owns.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import psutil
import pytest

from agent.audit import connections, sockdiag
from agent.audit.connections import PacedCounter, count_connections, normalise_ip
from testbed.require import missing
from tests.support.privileges import run_as_nobody

VPCE = ("regional", "vpce")
PUBLIC = ("global", "public")


@contextmanager
def connection(
    server_ip: str = "127.0.0.1", client_family: socket.AddressFamily = socket.AF_INET
) -> Iterator[int]:
    """One established connection to a fresh listener; yields the listener's port.

    An IPv6 client to an IPv4 listener dials the IPv4-mapped form of its address.
    """
    v6_server = ":" in server_ip
    server = socket.socket(socket.AF_INET6 if v6_server else socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.bind((server_ip, 0))
    except OSError:
        server.close()
        missing(f"a listener on {server_ip}")
    server.listen(1)
    port = server.getsockname()[1]
    client = socket.socket(client_family, socket.SOCK_STREAM)
    mapped = client_family == socket.AF_INET6 and not v6_server
    client.connect((f"::ffff:{server_ip}" if mapped else server_ip, port))
    accepted, _ = server.accept()
    try:
        yield port
    finally:
        client.close()
        accepted.close()
        server.close()


def test_counts_an_established_connection_and_forgets_it_when_closed() -> None:
    with connection() as port:
        audit = count_connections({"127.0.0.1": VPCE}, ports=(port,))
        assert audit.error is None
        assert audit.counts == {VPCE: 1}
        if os.geteuid() == 0:
            assert audit.owners[VPCE] == (psutil.Process().name(),)
    after = count_connections({"127.0.0.1": VPCE}, ports=(port,))
    assert after.counts == {VPCE: 0}
    assert after.owners == {}


def test_only_listed_ports_count() -> None:
    with connection() as port:
        assert count_connections({"127.0.0.1": VPCE}, ports=(443,)).counts == {VPCE: 0}
        assert count_connections({"127.0.0.1": VPCE}, ports=(443, port)).counts == {VPCE: 1}


def test_groups_are_kept_apart() -> None:
    with connection("127.0.0.1") as p1, connection("127.0.0.2") as p2:
        known = {"127.0.0.1": VPCE, "127.0.0.2": PUBLIC, "127.0.0.3": PUBLIC}
        audit = count_connections(known, ports=(p1, p2))
        assert audit.counts == {VPCE: 1, PUBLIC: 1}


def test_unknown_addresses_do_not_count() -> None:
    with connection() as port:
        assert count_connections({"127.0.0.9": VPCE}, ports=(port,)).counts == {VPCE: 0}


def test_ipv4_mapped_ipv6_peer_matches_the_ipv4_address() -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.close()
    except OSError:
        missing("IPv6 sockets")
    with connection(client_family=socket.AF_INET6) as port:
        assert count_connections({"127.0.0.1": VPCE}, ports=(port,)).counts == {VPCE: 1}
        # The map may itself hold the mapped form.
        assert count_connections({"::ffff:127.0.0.1": VPCE}, ports=(port,)).counts == {VPCE: 1}


def test_normalise_ip() -> None:
    assert normalise_ip("::ffff:10.1.2.3") == "10.1.2.3"
    assert normalise_ip("2001:DB8:0:0::1") == "2001:db8::1"
    assert normalise_ip("10.1.2.3") == "10.1.2.3"


def test_bad_address_in_known_names_it() -> None:
    with pytest.raises(ValueError, match=r"known: 'sts\.amazonaws\.com'"):
        count_connections({"sts.amazonaws.com": PUBLIC})


CHILD = """
import socket, sys, time
open("/proc/self/comm", "w").write(sys.argv[1])
c = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
print("ready", flush=True)
time.sleep(30)
"""


def test_owner_names_are_bounded_per_group() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(32)
    port = server.getsockname()[1]
    names = [f"stsclient{i:02d}" for i in range(12)]
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, n, str(port)], stdout=subprocess.PIPE)
        for n in names
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        audit = count_connections({"127.0.0.1": VPCE}, ports=(port,))
        assert audit.counts == {VPCE: 12}
        assert audit.owners[VPCE] == tuple(names[:10])
    finally:
        for child in children:
            child.kill()
            child.communicate()
        server.close()


def test_counts_work_without_privileges() -> None:
    """As nobody the socket table is still visible; only the owner names are not."""
    known = {"127.0.0.1": VPCE}
    with connection() as port:
        # As root first: the same call proves the connection is there and warms
        # psutil before the forked child loses access to files it might load.
        assert count_connections(known, ports=(port,)).counts == {VPCE: 1}
        audit = run_as_nobody(lambda: count_connections(known, ports=(port,)))
    assert (audit.counts, audit.owners, audit.error) == ({VPCE: 1}, {}, None)


@pytest.mark.parametrize(
    ("opened", "known"),
    [
        (lambda: connection(), "127.0.0.1"),
        (lambda: connection(client_family=socket.AF_INET6), "127.0.0.1"),  # mapped, in tcp6
        (lambda: connection("::1", socket.AF_INET6), "::1"),
    ],
    ids=["ipv4", "ipv4-mapped", "ipv6"],
)
def test_counts_without_owners_read_proc_net_and_agree_with_psutil(
    opened: Callable[[], AbstractContextManager[int]], known: str
) -> None:
    """The daemon's per-round path asks the kernel (sock_diag) or decodes /proc/net/tcp{,6}
    itself; both must count what psutil counts."""
    with opened() as port:
        slow = count_connections({known: VPCE}, ports=(port,), with_owners=True)
        assert slow.counts == {VPCE: 1}
        for reader, source in (("auto", "netlink"), ("proc", "proc")):
            fast = count_connections({known: VPCE}, ports=(port,), with_owners=False, reader=reader)
            assert (fast.error, fast.owners, fast.source) == (None, {}, source)
            assert fast.counts == slow.counts
            other_port = count_connections(
                {known: VPCE}, ports=(port + 1,), with_owners=False, reader=reader
            )
            assert other_port.counts == {VPCE: 0}


def test_netlink_filter_holds_more_addresses_than_one_request() -> None:
    """Past MAX_CONDITIONS the addresses go in several requests; the kernel checks each one."""
    others = [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(sockdiag.MAX_CONDITIONS + 500)]
    known = dict.fromkeys(others, PUBLIC) | {"::1": PUBLIC, "127.0.0.1": VPCE}
    with connection() as port:
        audit = count_connections(known, ports=(port, 443), with_owners=False)
    assert (audit.source, audit.error) == ("netlink", None)
    assert audit.counts == {VPCE: 1, PUBLIC: 0}


def test_kernels_without_the_one_walk_request_are_asked_per_family(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message type the kernel does not know stands for one that dropped TCPDIAG_GETSOCK."""
    monkeypatch.setattr(sockdiag, "TCPDIAG_GETSOCK", 17)  # sock_diag answers EINVAL
    with (
        connection(client_family=socket.AF_INET6) as mapped,
        connection("::1", socket.AF_INET6) as v6,
    ):
        known = {"127.0.0.1": VPCE, "::1": PUBLIC}
        audit = count_connections(known, ports=(mapped, v6), with_owners=False)
    assert (audit.source, audit.error, audit.counts) == ("netlink", None, {VPCE: 1, PUBLIC: 1})


def test_refused_netlink_falls_back_to_proc_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sandbox that refuses sock_diag: the kernel really refuses the socket here."""
    monkeypatch.setattr(sockdiag, "NETLINK_SOCK_DIAG", 31)  # no such netlink family
    monkeypatch.setattr(connections, "_refused", [])
    with connection() as port, caplog.at_level(logging.WARNING, "agent.audit"):
        audit = count_connections({"127.0.0.1": VPCE}, ports=(port,), with_owners=False)
        again = count_connections({"127.0.0.1": VPCE}, ports=(port,), with_owners=False)
    assert (audit.source, audit.error, audit.counts) == ("proc", None, {VPCE: 1})
    assert again.source == "proc"
    warnings = [r.getMessage() for r in caplog.records if "sock_diag refused" in r.getMessage()]
    assert len(warnings) == 1, warnings  # said once, not every round


def test_paced_counter_reuses_an_audit_within_its_cpu_share_and_not_past_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = {"127.0.0.1": VPCE}
    with connection() as port:
        counter = PacedCounter()
        monkeypatch.setattr(connections, "DUTY", 1e-12)  # any audit is worth reusing for ages
        assert counter.count(known, (port,)).counts == {VPCE: 1}
        assert counter.age == 0.0
        with socket.create_connection(("127.0.0.1", port)):  # a second one, not yet counted
            assert counter.count(known, (port,)).counts == {VPCE: 1}  # reused
            assert counter.age > 0
            assert counter.count({"127.0.0.1": PUBLIC}, (port,)).counts == {PUBLIC: 2}
            assert counter.age == 0.0  # the groups changed: counted again at once
            monkeypatch.setattr(connections, "DUTY", 1e9)  # nothing is worth reusing
            assert counter.count(known, (port,)).counts == {VPCE: 2}
            assert counter.age == 0.0
