"""Resolver discovery from real resolv.conf files written to a temp directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.discovery.resolvers import (
    ResolverConfigError,
    is_amazon_provided,
    resolvers_from_specs,
    system_resolvers,
)
from agent.results import Resolver

VPC = ("10.120.0.0/16",)


def _conf(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_plain_resolv_conf(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        "resolv.conf",
        "# generated\nsearch ec2.internal\nnameserver 10.120.0.2\n; comment\n"
        "nameserver 1.1.1.1\noptions timeout:2\n",
    )
    found = system_resolvers(conf, VPC, systemd_resolv_conf=str(tmp_path / "absent"))
    assert found == (
        Resolver("10.120.0.2", 53, True, "resolv.conf"),
        Resolver("1.1.1.1", 53, False, "resolv.conf"),
    )


def test_ipv6_with_scope_is_stripped(tmp_path: Path) -> None:
    conf = _conf(tmp_path, "resolv.conf", "nameserver fe80::1%eth0\nnameserver fd00:ec2::253\n")
    found = system_resolvers(conf)
    assert [r.address for r in found] == ["fe80::1", "fd00:ec2::253"]
    assert [r.amazon_provided for r in found] == [False, True]


def test_junk_nameserver_lines_are_ignored_like_glibc(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path, "resolv.conf", "nameserver\nnameserver dns.example\nnameserver 9.9.9.9\n"
    )
    assert [r.address for r in system_resolvers(conf)] == ["9.9.9.9"]


def test_only_three_nameservers_count(tmp_path: Path) -> None:
    conf = _conf(tmp_path, "resolv.conf", "".join(f"nameserver 10.0.0.{i}\n" for i in range(5)))
    assert [r.address for r in system_resolvers(conf)] == ["10.0.0.0", "10.0.0.1", "10.0.0.2"]


def test_systemd_stub_is_followed_to_upstreams(tmp_path: Path) -> None:
    stub = _conf(tmp_path, "resolv.conf", "nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    upstream = _conf(tmp_path, "upstream.conf", "nameserver 10.120.0.2\nnameserver 8.8.8.8\n")
    found = system_resolvers(stub, VPC, systemd_resolv_conf=upstream)
    assert found == (
        Resolver("10.120.0.2", 53, True, "systemd-resolved"),
        Resolver("8.8.8.8", 53, False, "systemd-resolved"),
    )


def test_systemd_stub_without_upstream_file_is_kept(tmp_path: Path) -> None:
    stub = _conf(tmp_path, "resolv.conf", "nameserver 127.0.0.54\n")
    found = system_resolvers(stub, VPC, systemd_resolv_conf=str(tmp_path / "missing.conf"))
    assert found == (Resolver("127.0.0.54", 53, False, "resolv.conf"),)


def test_stub_among_other_servers_is_not_followed(tmp_path: Path) -> None:
    conf = _conf(tmp_path, "resolv.conf", "nameserver 127.0.0.53\nnameserver 10.120.0.2\n")
    upstream = _conf(tmp_path, "upstream.conf", "nameserver 8.8.8.8\n")
    found = system_resolvers(conf, VPC, systemd_resolv_conf=upstream)
    assert [r.address for r in found] == ["127.0.0.53", "10.120.0.2"]


def test_missing_resolv_conf_names_the_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(ResolverConfigError, match=r"nope\.conf") as err:
        system_resolvers(missing)
    assert "\n" not in str(err.value)


def test_directory_instead_of_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ResolverConfigError, match="is a directory"):
        system_resolvers(str(tmp_path))


@pytest.mark.parametrize(
    ("address", "cidrs", "expected"),
    [
        ("169.254.169.253", (), True),
        ("fd00:ec2::253", (), True),
        ("10.120.0.2", VPC, True),
        ("10.120.0.2", (), False),
        ("172.31.0.2", ("10.120.0.0/16", "172.31.0.0/16"), True),
        ("10.120.0.3", VPC, False),
        ("10.120.1.2", VPC, False),
        ("1.1.1.1", VPC, False),
        ("not-an-ip", VPC, False),
    ],
)
def test_amazon_provided_detection(address: str, cidrs: tuple[str, ...], expected: bool) -> None:
    assert is_amazon_provided(address, cidrs) is expected


def test_amazon_provided_rejects_a_bad_cidr_by_value() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/99"):
        is_amazon_provided("10.0.0.2", ("10.0.0.0/99",))


def test_specs_mix_system_and_explicit_servers(tmp_path: Path) -> None:
    conf = _conf(tmp_path, "resolv.conf", "nameserver 10.120.0.2\n")
    found = resolvers_from_specs(
        ["system", "127.0.0.1:5353", "[::1]:5300", "169.254.169.253", "10.120.0.2"],
        conf,
        VPC,
        systemd_resolv_conf=str(tmp_path / "absent"),
    )
    assert found == (
        Resolver("10.120.0.2", 53, True, "resolv.conf"),
        Resolver("127.0.0.1", 5353, False, "config"),
        Resolver("::1", 5300, False, "config"),
        Resolver("169.254.169.253", 53, True, "config"),
    )


def test_bad_spec_names_the_value(tmp_path: Path) -> None:
    with pytest.raises(ResolverConfigError, match=r"resolvers.*'dns\.example'"):
        resolvers_from_specs(["dns.example"], str(tmp_path / "unused"))
