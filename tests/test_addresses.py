"""The one host:port grammar: every setting and URL reads and writes addresses through it."""

from __future__ import annotations

import pytest

from agent.addresses import (
    AddressError,
    bracketed,
    is_hostname,
    is_ip,
    join_host_port,
    parse_ip_port,
    parse_listen,
    parse_service,
    split_host_port,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("169.254.169.254", ("169.254.169.254", 80)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[fd00:ec2::254]:80", ("fd00:ec2::254", 80)),
        ("[fd00:ec2::254]", ("fd00:ec2::254", 80)),
        ("fd00:ec2::254", ("fd00:ec2::254", 80)),
        ("  metadata.example.com:1338 ", ("metadata.example.com", 1338)),
        ("[::1]:65535", ("::1", 65535)),
    ],
)
def test_split_with_a_default_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text, "imds.address", 80) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("127.0.0.1:http", "port"),
        ("127.0.0.1:0", "port"),
        ("127.0.0.1:65536", "port"),
        ("127.0.0.1:", "port"),
        ("127.0.0.1:+80", "port"),
        ("127.0.0.1:٨٠", "port"),  # Arabic-Indic digits pass str.isdigit()
        ("[::1]x", "must be"),
        ("[::1]:", "port"),
        ("[nope]:80", "brackets"),
        ("[127.0.0.1]:80", "brackets"),
        ("[::1", "brackets"),
        (":80", "host is empty"),
        ("", "host is empty"),
        (":::80", "brackets"),
        ("1:2:3", "brackets"),
        # Read as host "http", port "//169.254.169.254": "the port must be between 1 and 65535".
        ("http://169.254.169.254", "a URL was given where HOST, HOST:PORT or [v6]:PORT"),
        ("http://[fd00:ec2::254]:80/", "(write '[fd00:ec2::254]:80')"),
        ("udp://10.0.0.2", "(write '10.0.0.2')"),
    ],
)
def test_split_refuses_naming_field_and_value_on_one_line(text: str, problem: str) -> None:
    with pytest.raises(AddressError) as err:
        split_host_port(text, "imds.address", 80)
    message = str(err.value)
    assert message.startswith("imds.address: ") and message.endswith(f", got {text!r}")
    assert problem in err.value.problem and "\n" not in message


def test_without_a_default_the_port_is_required() -> None:
    for text in ("127.0.0.1", "[::1]", "::1"):
        with pytest.raises(AddressError):
            split_host_port(text, "web.listen_address")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.2", ("10.0.0.2", 53)),
        ("10.0.0.2:5353", ("10.0.0.2", 5353)),
        ("[fd00:ec2::253]:5353", ("fd00:ec2::253", 5353)),
        ("FD00:EC2:0::253", ("fd00:ec2::253", 53)),  # canonical form, one key per server
    ],
)
def test_ip_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_ip_port(text, "resolvers", 53) == expected


@pytest.mark.parametrize("text", ["dns.example.com", "dns.example.com:53", "10.0.0.2:99999"])
def test_ip_port_refuses_names_and_bad_ports(text: str) -> None:
    with pytest.raises(AddressError, match=r"^resolvers: "):
        parse_ip_port(text, "resolvers", 53)


def test_service_takes_ips_and_dns_names_only() -> None:
    assert parse_service("imds.internal.example:8080", "imds.address", 80) == (
        "imds.internal.example",
        8080,
    )
    with pytest.raises(AddressError, match="IP address or a DNS name"):
        parse_service("bad_name!:80", "imds.address", 80)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":9472", ("", 9472)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::]:9472", ("::", 9472)),
        ("[::1]:9472", ("::1", 9472)),
        ("localhost:9472", ("localhost", 9472)),
    ],
)
def test_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text, "web.listen_address") == expected


@pytest.mark.parametrize(
    "text",
    [":::9472", "::1:9472", "9472", "127.0.0.1", "metrics.example.com:9472", ":0", "[::1]"],
)
def test_listen_refuses(text: str) -> None:
    with pytest.raises(AddressError) as err:
        parse_listen(text, "web.listen_address")
    assert str(err.value).startswith("web.listen_address: ")


def test_listen_port_zero_only_when_asked() -> None:
    assert parse_listen("127.0.0.1:0", "web.listen_address", port_zero=True) == ("127.0.0.1", 0)


def test_formatting_brackets_ipv6_only() -> None:
    assert bracketed("fd00:ec2::254") == "[fd00:ec2::254]"
    assert bracketed("169.254.169.254") == "169.254.169.254"
    assert join_host_port("::1", 9472) == "[::1]:9472"
    assert join_host_port("sts.us-east-2.amazonaws.com", 8443) == "sts.us-east-2.amazonaws.com:8443"
    for host, port in (("::1", 53), ("10.0.0.2", 5353), ("fe80::1%eth0", 80)):
        assert split_host_port(join_host_port(host, port), "f") == (host, port)


def test_ip_and_hostname_predicates() -> None:
    assert is_ip("::1") and is_ip("10.0.0.2") and not is_ip("localhost")
    assert is_hostname("sts.us-east-2.amazonaws.com") and not is_hostname("localhost")
    assert not is_hostname("-bad.example.com") and not is_hostname("a..example.com")
