"""Hosts-file pins: parsed as the resolver reads them, and honoured only when files precede DNS."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.discovery.hosts_file import files_before_dns, parse_hosts, read_pins

REGIONAL = "sts.us-east-2.amazonaws.com"
GLOBAL = "sts.amazonaws.com"


def test_parse_keeps_only_watched_names_in_file_order() -> None:
    text = f"""
127.0.0.1   localhost
# 10.0.0.9 {REGIONAL}   (commented out)
10.120.138.148 {REGIONAL.upper()}.  sts   # canonical name, trailing dot, an alias
10.120.139.20  other.example {REGIONAL}
10.120.138.148 {REGIONAL}
not-an-ip      {REGIONAL}
fe80::1%eth0   {GLOBAL}
{REGIONAL}
"""
    assert parse_hosts(text, [REGIONAL, GLOBAL, "sts.eu-west-1.amazonaws.com"]) == {
        REGIONAL: ("10.120.138.148", "10.120.139.20"),
        GLOBAL: ("fe80::1",),
    }


@pytest.mark.parametrize(
    ("nsswitch", "first"),
    [
        (None, True),  # no file: musl and minimal images read /etc/hosts first
        ("passwd: files\n", True),  # no hosts line: glibc's default starts with files
        ("hosts: files dns\n", True),
        ("hosts:   files mdns4_minimal [NOTFOUND=return] dns myhostname\n", True),
        ("hosts: resolve [!UNAVAIL=return] dns\n", True),  # systemd-resolved reads it too
        ("hosts: dns files\n", False),
        ("hosts: dns [!UNAVAIL=return] files\n", False),
        ("hosts: dns\n", False),
        ("#hosts: files dns\nhosts: dns files\n", False),
    ],
)
def test_whether_files_precede_dns(nsswitch: str | None, first: bool) -> None:
    assert files_before_dns(nsswitch) is first


def test_pins_apply_only_when_consulted_first(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(f"10.120.138.148 {REGIONAL}\n")
    nss = tmp_path / "nsswitch.conf"
    nss.write_text("hosts: files dns\n")
    pins = read_pins(str(hosts), str(nss), [REGIONAL, GLOBAL])
    assert pins.pinned(REGIONAL) == ("10.120.138.148",) and pins.pinned(GLOBAL) == ()
    nss.write_text("hosts: dns files\n")
    assert read_pins(str(hosts), str(nss), [REGIONAL]).pinned(REGIONAL) == ()


def test_missing_or_unreadable_files_are_not_fatal(tmp_path: Path) -> None:
    missing = read_pins(str(tmp_path / "none"), str(tmp_path / "none"), [REGIONAL])
    assert missing.pinned(REGIONAL) == () and missing.error is None
    unreadable = read_pins(str(tmp_path), str(tmp_path / "none"), [REGIONAL])  # a directory
    assert unreadable.pinned(REGIONAL) == () and "IsADirectoryError" in (unreadable.error or "")
