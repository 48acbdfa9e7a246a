"""The DNS probe against a real DNS server on loopback, one fault at a time.

Each DNS failure reason is a metric label and an alert input, so every one of
them is provoked here by a server that really misbehaves that way; nothing in
dnspython or the socket layer is replaced.
"""

from __future__ import annotations

import select
import socket
import sys
import threading
import time
from collections.abc import Iterator

import dns.message
import pytest

from agent.probes.dns import _wire_time, lookup
from agent.probes.wire import StampedDatagram
from agent.results import DnsLookup, Resolver
from agent.simulate.dns_server import DnsServer
from tests.support.dnsmasq import Dnsmasq
from tests.support.probe_faults import DNS_FAULTS, REGIONAL, at
from tests.support.probe_faults import DNS_TIMEOUT as TIMEOUT

VPCE = "vpce-0a1b2c3d4e5f60718-abcdefgh.sts.us-east-2.vpce.amazonaws.com"
HOG = 0.2  # seconds a thread may hold the interpreter before it must hand it over
HOG_ATTEMPTS = 5  # tries at the hogging scenario before it counts as not reproduced
ZONAL = "us-east-2a.vpce-0a1b2c3d4e5f60718-abcdefgh.sts.us-east-2.vpce.amazonaws.com"


@pytest.fixture
def server() -> Iterator[DnsServer]:
    with DnsServer("127.0.0.1", 0, ttl=42) as s:
        yield s


def test_a_and_aaaa_with_ttls(server: DnsServer) -> None:
    server.set_records(REGIONAL, ["127.10.138.148", "127.10.139.20", "fd00:ec2::10"])
    lk = lookup(REGIONAL, at(server), TIMEOUT)
    a, aaaa = lk.queries
    assert (a.rdtype, aaaa.rdtype) == ("A", "AAAA")
    assert {x.address for x in a.answers} == {"127.10.138.148", "127.10.139.20"}
    assert [x.address for x in aaaa.answers] == ["fd00:ec2::10"]
    assert {x.ttl for q in lk.queries for x in q.answers} == {42}
    assert (a.rcode, a.reason, a.tcp) == ("NOERROR", None, False)
    assert set(lk.addresses) == {"127.10.138.148", "127.10.139.20", "fd00:ec2::10"}
    assert lk.reason is None
    assert lk.min_ttl == 42
    assert lk.endpoint == REGIONAL and lk.resolver == at(server)
    assert all(q.duration > 0 for q in lk.queries)


def test_ttl_follows_the_server(server: DnsServer) -> None:
    server.ttl = 7
    server.set_records(REGIONAL, ["127.10.138.148"])
    assert lookup(REGIONAL, at(server), TIMEOUT).min_ttl == 7


def test_cname_chain_is_recorded_in_order(server: DnsServer) -> None:
    server.set_cname(REGIONAL, VPCE)
    server.set_cname(VPCE, ZONAL)
    server.set_records(ZONAL, ["127.10.138.148"])
    lk = lookup(REGIONAL, at(server), TIMEOUT)
    assert lk.cnames == (VPCE, ZONAL)
    assert lk.addresses == ("127.10.138.148",)
    assert lk.reason is None


def test_missing_aaaa_is_not_a_failure(server: DnsServer) -> None:
    """Most VPC endpoints are IPv4-only; an empty AAAA answer must not count against them."""
    server.set_records(REGIONAL, ["127.10.138.148"])
    lk = lookup(REGIONAL, at(server), TIMEOUT)
    a, aaaa = lk.queries
    assert a.reason is None
    assert (aaaa.reason, aaaa.rcode, aaaa.answers) == ("nodata", "NOERROR", ())
    assert lk.reason is None


def test_ipv6_only_name_resolves(server: DnsServer) -> None:
    server.set_records(REGIONAL, ["fd00:ec2::10"])
    lk = lookup(REGIONAL, at(server), TIMEOUT)
    assert lk.queries[0].reason == "nodata"
    assert lk.addresses == ("fd00:ec2::10",)
    assert lk.reason is None


def test_name_without_addresses_is_nodata(server: DnsServer) -> None:
    lk = DNS_FAULTS["no_addresses"].provoke(server)
    assert [q.reason for q in lk.queries] == ["nodata", "nodata"]
    assert lk.reason == "nodata"
    assert lk.addresses == ()


def test_unknown_name_is_nxdomain(server: DnsServer) -> None:
    lk = DNS_FAULTS["unknown_name"].provoke(server)
    assert lk.reason == "nxdomain"
    assert lk.queries[0].rcode == "NXDOMAIN"


def test_truncated_udp_answer_is_retried_over_tcp(server: DnsServer) -> None:
    server.set_records(REGIONAL, ["127.10.138.148"])
    server.fault = "truncate"  # every UDP reply has TC set and no answer; TCP answers fully
    lk = lookup(REGIONAL, at(server), TIMEOUT)
    a = lk.queries[0]
    assert a.tcp is True
    assert [x.address for x in a.answers] == ["127.10.138.148"]
    assert lk.reason is None


def test_answer_too_big_for_udp_falls_back_to_tcp(server: DnsServer) -> None:
    many = [f"127.10.{i // 250}.{i % 250 + 1}" for i in range(60)]
    server.set_records(REGIONAL, many)
    lk = lookup(REGIONAL, at(server), TIMEOUT)
    assert lk.queries[0].tcp is True
    assert set(lk.addresses) == set(many)


@pytest.mark.parametrize(
    ("fault", "reason", "rcode"),
    [
        ("servfail", "servfail", "SERVFAIL"),
        ("nxdomain", "nxdomain", "NXDOMAIN"),
        ("garbage", "malformed", None),
    ],
)
def test_answered_faults_ask_both_types(
    server: DnsServer, fault: str, reason: str, rcode: str | None
) -> None:
    lk = DNS_FAULTS[fault].provoke(server)
    assert [q.rdtype for q in lk.queries] == ["A", "AAAA"]
    assert all(q.reason == reason and q.rcode == rcode for q in lk.queries)
    assert lk.reason == reason
    assert lk.addresses == ()
    assert server.queries == 2


@pytest.mark.parametrize("fault", ["refused", "timeout"])
def test_unreachable_resolver_is_asked_once(server: DnsServer, fault: str) -> None:
    """When the A question cannot get through, an AAAA question would only double the wait."""
    lk = DNS_FAULTS[fault].provoke(server)
    assert len(lk.queries) == 1
    assert lk.reason == fault
    assert server.queries == 1


def test_timeout_detail_names_the_resolver(server: DnsServer) -> None:
    lk = DNS_FAULTS["timeout"].provoke(server)
    assert at(server).label in lk.queries[0].detail


def test_slow_server_within_the_timeout_still_answers(server: DnsServer) -> None:
    """Timed from the reply's arrival, yet never shorter than the server held it."""
    server.set_records(REGIONAL, ["127.10.138.148"])
    server.delay = 0.05
    lk = lookup(REGIONAL, at(server), 2.0)
    assert lk.addresses == ("127.10.138.148",)
    assert [q.rdtype for q in lk.queries] == ["A", "AAAA"]
    assert all(q.duration is not None and q.duration >= 0.05 for q in lk.queries)


def test_a_reply_read_late_is_timed_to_its_arrival() -> None:
    """The probe's own wait to read the reply is left out of the round trip."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        with StampedDatagram(socket.AF_INET) as sock:
            # The kernel turns stamping on from a work queue: the first reply may miss it,
            # so only the second, 50 ms after it, is judged.
            for late in (0.05, 0.05):
                sock.sendto(b"q", peer.getsockname())
                sent = time.perf_counter()
                data, client = peer.recvfrom(16)
                peer.sendto(b"r" + data, client)
                time.sleep(late)  # the reply is queued by now; the read comes `late` after
                select.select([sock], [], [], 5)
                reply, _ = sock.recvfrom(16)
                read = time.perf_counter()
    took = sock.round_trip()
    assert reply == b"rq"
    assert read - sent >= 0.05
    assert took is not None and 0.0 <= took < 0.025  # a loopback round trip, not the wait


def _lookup_while_hogging(resolver: Resolver) -> tuple[DnsLookup, float]:
    """One lookup on a thread while this one holds the interpreter; (it, wall seconds)."""
    found: list[DnsLookup] = []
    thread = threading.Thread(target=lambda: found.append(lookup(REGIONAL, resolver, 5.0)))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(HOG)
    try:
        started = time.perf_counter()
        thread.start()
        while thread.is_alive():
            pass
        wall = time.perf_counter() - started
    finally:
        sys.setswitchinterval(interval)
        thread.join(5)
    (lk,) = found
    return lk, wall


def test_waiting_for_the_interpreter_is_left_out() -> None:
    """A probe kept off the interpreter after each reply arrived is timed to the arrival.

    dnsmasq answers from its own process; this thread hogs the interpreter with a
    long switch interval, so the probe's thread gets it back only an interval after
    each blocking call, and a clock read after the reply would show that wait.
    """
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        pytest.skip("free-threaded Python: no interpreter lock to hog")
    with Dnsmasq({REGIONAL: ["127.10.138.148"]}) as dm:
        resolver = Resolver(dm.address, dm.port)
        # The OS decides who runs: on a busy machine this thread may not be on a CPU when
        # a reply lands, and the probe then gets the interpreter at once.  The scenario is
        # set up again then (the assertions below are made on the last attempt).
        for _ in range(HOG_ATTEMPTS):
            lk, wall = _lookup_while_hogging(resolver)
            if wall >= 2 * HOG:
                break
    assert lk.addresses == ("127.10.138.148",)
    assert wall >= 2 * HOG  # the probe really waited for the interpreter
    assert all(q.duration is not None and q.duration < HOG / 2 for q in lk.queries)


def test_wire_time_prefers_the_kernel_stamp_then_dnspythons_own() -> None:
    reply = dns.message.make_response(dns.message.make_query(REGIONAL, "A"))
    reply.time = 0.004
    assert _wire_time(reply, False, 0.001, 0.010) == 0.001
    assert _wire_time(reply, False, None, 0.010) == 0.004
    assert _wire_time(reply, False, 0.020, 0.010) == 0.004  # a stamp past the whole wait
    assert _wire_time(reply, True, 0.001, 0.010) == 0.010  # after TCP the whole exchange
    reply.time = -0.001  # the wall clock stepped back under dnspython's stamp
    assert _wire_time(reply, False, None, 0.010) == 0.010


def test_nobody_listening_is_a_timeout(server: DnsServer) -> None:
    lk = DNS_FAULTS["nobody_listening"].provoke(server)
    assert lk.reason == "timeout"
    assert server.queries == 0


def test_socket_error_is_network(server: DnsServer) -> None:
    """Nothing leaves: the kernel refuses the send itself."""
    lk = DNS_FAULTS["unsendable"].provoke(server)
    assert lk.reason == "network"
    assert len(lk.queries) == 1


def test_ipv6_resolver() -> None:
    try:
        server = DnsServer("::1", 0, ttl=5).start()
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        server.set_records(REGIONAL, ["127.10.138.148"])
        r = Resolver("::1", server.port)
        lk = lookup(REGIONAL, r, TIMEOUT)
        assert lk.addresses == ("127.10.138.148",)
        assert r.label == f"[::1]:{server.port}"
    finally:
        server.stop()


@pytest.mark.parametrize("fault", ["long_label", "empty_label", "long_name"])
def test_a_name_no_query_can_carry_is_malformed_not_raised(server: DnsServer, fault: str) -> None:
    """An over-long label, an empty label or an over-long name: a result, never an exception."""
    lk = DNS_FAULTS[fault].provoke(server)
    assert lk.reason == "malformed" and lk.addresses == ()
    assert all(q.reason == "malformed" and "cannot ask" in q.detail for q in lk.queries)
    # the server was never asked, and the same resolver still answers a good name
    assert server.queries == 0
    assert lookup(REGIONAL, at(server), TIMEOUT).addresses == ("127.10.138.148",)
