"""The suite's own guard: this process sends to loopback only (tests/support/loopback_guard)."""

from __future__ import annotations

import socket

import pytest

from tests.support import loopback_guard


@pytest.mark.parametrize(
    ("family", "address"),
    [
        (socket.AF_INET, ("10.255.255.53", 53)),  # a VPC's resolver
        (socket.AF_INET, ("169.254.169.254", 80)),  # real IMDS
        (socket.AF_INET6, ("2001:db8::1", 53, 0, 0)),
    ],
)
def test_a_send_off_the_host_is_refused_and_remembered(
    family: socket.AddressFamily, address: tuple[object, ...]
) -> None:
    before = len(loopback_guard.refused)
    with socket.socket(family, socket.SOCK_DGRAM) as s, pytest.raises(PermissionError):
        s.sendto(b"x", address)
    assert loopback_guard.refused[before:] == [f"socket.sendto to {address[0]}"]
    del loopback_guard.refused[before:]  # the one refusal this test meant to cause


def test_a_name_lookup_is_refused_before_any_query_leaves() -> None:
    before = len(loopback_guard.refused)
    with pytest.raises(PermissionError):
        socket.getaddrinfo("sts.amazonaws.com", 443)
    assert loopback_guard.refused[before:] == ["socket.getaddrinfo to sts.amazonaws.com"]
    del loopback_guard.refused[before:]


def test_loopback_in_every_spelling_is_allowed() -> None:
    before = len(loopback_guard.refused)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", ("127.0.0.1", 9))  # discard port; nothing needs to listen
        s.sendto(b"x", ("127.200.1.2", 9))
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6:
        s6.sendto(b"x", ("::1", 9, 0, 0))
        s6.sendto(b"x", ("::ffff:127.0.0.1", 9, 0, 0))
    socket.getaddrinfo("localhost", 9)
    assert loopback_guard.refused[before:] == []


def test_a_reverse_lookup_of_an_outside_address_is_refused() -> None:
    before = len(loopback_guard.refused)
    with pytest.raises(PermissionError):
        socket.gethostbyaddr("10.255.255.53")
    with pytest.raises(PermissionError):
        socket.getnameinfo(("10.255.255.53", 53), 0)
    assert loopback_guard.refused[before:] == [
        "socket.gethostbyaddr to 10.255.255.53",
        "socket.getnameinfo to 10.255.255.53",
    ]
    del loopback_guard.refused[before:]
