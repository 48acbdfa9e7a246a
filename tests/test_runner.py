"""One probe round end to end in-process: real DNS, real TLS, real signing on loopback.

The runner decides which addresses get probed (every resolver's answer, plus
addresses still cached by clients until their TTL runs out, up to a cap) and
where the region comes from.  Those choices are checked here against real
servers; the CLI around them is covered by the check end-to-end tests.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import Settings
from agent.credentials import Credentials
from agent.discovery import discover
from agent.results import DnsAnswer, DnsLookup, DnsQuery, Report, Resolver
from agent.runner import Prober, run_round
from agent.simulate.ca import Authority
from agent.simulate.demo import start_sts_servers
from agent.simulate.dns_server import DnsServer
from agent.simulate.imds_server import ImdsServer
from agent.simulate.sts_server import StsServer
from agent.surfaces.metrics import Metrics
from agent.surfaces.report_json import to_json
from agent.targets import AddressBook

REGION = "us-east-2"
REGIONAL = f"sts.{REGION}.amazonaws.com"
GLOBAL = "sts.amazonaws.com"
VPC = "127.10.0.0/16"
ENIS = ("127.10.138.148", "127.10.139.20", "127.10.140.7")
PUBLIC = "127.20.0.20"
ENV = {"AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": "/dev/null"}


# -- AddressBook, with explicit clocks ----------------------------------------------
def answer(host: str, *addrs: tuple[str, int]) -> DnsLookup:
    q = DnsQuery("A", 0.001, "NOERROR", tuple(DnsAnswer(a, ttl) for a, ttl in addrs))
    return DnsLookup(host, Resolver("127.0.0.1"), (q,))


def test_rotated_out_address_is_kept_until_its_ttl_expires() -> None:
    book = AddressBook()
    assert book.update(REGIONAL, [answer(REGIONAL, ("10.0.0.1", 60), ("10.0.0.2", 30))], 0.0) == [
        "10.0.0.1",
        "10.0.0.2",
    ]
    # .2 rotated out of the answer, but clients may still hold it for its 30 s TTL.
    assert book.update(REGIONAL, [answer(REGIONAL, ("10.0.0.1", 60))], 10.0) == [
        "10.0.0.1",
        "10.0.0.2",
    ]
    assert book.update(REGIONAL, [answer(REGIONAL, ("10.0.0.1", 60))], 30.0) == [
        "10.0.0.1",
        "10.0.0.2",
    ]
    assert book.update(REGIONAL, [answer(REGIONAL, ("10.0.0.1", 60))], 30.5) == ["10.0.0.1"]
    assert "10.0.0.2" not in book.expiry[REGIONAL]


def test_a_longer_ttl_seen_later_extends_the_expiry() -> None:
    book = AddressBook()
    book.update(REGIONAL, [answer(REGIONAL, ("10.0.0.2", 5))], 0.0)
    book.update(REGIONAL, [answer(REGIONAL, ("10.0.0.2", 100))], 1.0)
    assert book.update(REGIONAL, [], 50.0) == ["10.0.0.2"]
    assert book.update(REGIONAL, [], 101.5) == []


def test_zero_ttl_is_held_for_one_second() -> None:
    book = AddressBook()
    book.update(REGIONAL, [answer(REGIONAL, ("10.0.0.3", 0))], 0.0)
    assert book.update(REGIONAL, [], 0.9) == ["10.0.0.3"]
    assert book.update(REGIONAL, [], 1.1) == []


def test_current_answers_come_first_and_endpoints_are_separate() -> None:
    book = AddressBook()
    book.update(REGIONAL, [answer(REGIONAL, ("10.0.0.9", 60), ("10.0.0.5", 60))], 0.0)
    got = book.update(
        REGIONAL,
        [answer(REGIONAL, ("10.0.0.7", 60)), answer(REGIONAL, ("10.0.0.7", 60), ("10.0.0.1", 60))],
        1.0,
    )
    assert got == ["10.0.0.7", "10.0.0.1", "10.0.0.5", "10.0.0.9"]
    assert book.update(GLOBAL, [answer(GLOBAL, ("127.20.0.10", 60))], 1.0) == ["127.20.0.10"]


def test_the_cap_keeps_enis_first_under_a_rotating_mixed_answer() -> None:
    """Before: the cap kept DNS order, so a rotating answer dropped ENIs in turn."""
    book = AddressBook()
    eni = ("10.0.0.5", "10.0.0.6")
    public = ("198.51.100.1", "198.51.100.2", "198.51.100.3")

    def is_eni(address: str) -> bool:
        return address in eni

    mixed = [*public, *eni]
    for turn in range(len(mixed)):
        rotated = mixed[turn:] + mixed[:turn]
        got = book.update(
            REGIONAL, [answer(REGIONAL, *((a, 60) for a in rotated))], float(turn), 2, is_eni
        )
        assert set(got[:2]) == set(eni), (turn, got)


def test_a_round_probes_the_eni_of_a_mixed_answer_under_the_cap(vpc: Vpc) -> None:
    for records in ((PUBLIC, ENIS[0]), ("127.0.0.9", ENIS[0]), (ENIS[0], "127.0.0.9")):
        vpc.dns.set_records(REGIONAL, records)
        assert probed(one_round(vpc.settings(max_addresses_per_endpoint=1))) == [ENIS[0]]


# -- real rounds --------------------------------------------------------------------
@dataclass
class Vpc:
    dns: DnsServer
    sts: dict[str, StsServer]
    port: int
    ca: Path

    def settings(self, **kw: object) -> Settings:
        base: dict[str, object] = {
            "regions": (REGION,),
            "endpoints_global": False,
            "port": self.port,
            "ca_bundle": str(self.ca),
            "resolvers": (f"{self.dns.address}:{self.dns.port}",),
            "vpc_cidrs": (VPC,),
            "imds_enabled": False,
            "credentials": "none",
            "timeout": 1.0,
            "expect": (("regional", "vpce"),),
        }
        base.update(kw)
        return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def vpc(authority: Authority) -> Iterator[Vpc]:
    cert, key = authority.issue([REGIONAL, GLOBAL], name="sts")
    with contextlib.ExitStack() as stack:
        servers, port = start_sts_servers((*ENIS, PUBLIC), cert, key)
        for s in servers.values():
            stack.callback(s.stop)
        dns = stack.enter_context(DnsServer("127.10.0.2", 0, ttl=30))
        dns.set_records(REGIONAL, ENIS[:2])
        yield Vpc(dns, servers, port, authority.ca_path)


def one_round(
    settings: Settings, prober: Prober | None = None, env: Mapping[str, str] = ENV
) -> Report:
    return run_round(settings, discover(settings, env), prober or Prober(settings))


def probed(r: Report, host: str = REGIONAL) -> list[str]:
    (ep,) = [e for e in r.endpoints if e.endpoint.hostname == host]
    return [p.address for p in ep.probes]


def test_healthy_round(vpc: Vpc) -> None:
    r = one_round(vpc.settings())
    (ep,) = r.endpoints
    assert ep.path == "vpce"
    assert ep.expectation_met is True
    assert sorted(probed(r)) == sorted(ENIS[:2])
    assert all(p.success for p in ep.probes)
    # IMDS is off on purpose (info); the DNS server sits at VPC base + 2: Amazon-provided.
    assert [f.code for f in r.findings] == ["IMDS_DISABLED"]
    assert r.resolvers[0].amazon_provided is True
    assert r.region == REGION and r.region_source == "config"


def test_rotated_out_address_is_probed_until_its_ttl_expires(vpc: Vpc) -> None:
    vpc.dns.ttl = 2
    settings = vpc.settings()
    prober = Prober(settings)
    assert sorted(probed(one_round(settings, prober))) == sorted(ENIS[:2])
    vpc.dns.set_records(REGIONAL, ENIS[:1])
    second = one_round(settings, prober)
    assert probed(second) == [ENIS[0], ENIS[1]]  # current answer first, then the cached one
    assert second.endpoints[0].lookups[0].addresses == ENIS[:1]
    time.sleep(2.3)
    assert probed(one_round(settings, prober)) == [ENIS[0]]


def test_cap_limits_probes_and_counts_the_rest(vpc: Vpc) -> None:
    vpc.dns.set_records(REGIONAL, ENIS)
    r = one_round(vpc.settings(max_addresses_per_endpoint=2))
    (ep,) = r.endpoints
    got = probed(r)
    assert len(got) == 2 and set(got) < set(ENIS)
    assert ep.dropped_addresses == 1
    assert [f.code for f in r.findings] == ["IMDS_DISABLED", "ADDRESSES_DROPPED"]
    assert to_json(r)["endpoints"][0]["dropped_addresses"] == 1
    untouched = [a for a in ENIS if not vpc.sts[a].requests]
    assert untouched == [a for a in ENIS if a not in got]  # the dropped ENI was left alone


def test_resolvers_that_disagree_give_mixed_and_every_address_is_probed(vpc: Vpc) -> None:
    with DnsServer("127.0.0.1", 0, ttl=30) as other:
        other.set_records(REGIONAL, [PUBLIC])
        settings = vpc.settings(resolvers=(f"127.10.0.2:{vpc.dns.port}", f"127.0.0.1:{other.port}"))
        r = one_round(settings)
    (ep,) = r.endpoints
    assert ep.path == "mixed"
    assert {v.path for v in ep.verdicts} == {"vpce", "public"}
    assert sorted(probed(r)) == sorted([*ENIS[:2], PUBLIC])
    found = {f.code: f for f in r.findings}
    # One finding for one cause: the disagreement, with the expectation it misses.
    assert "ENDPOINT_PATH_UNEXPECTED" not in found
    assert found["RESOLVERS_DISAGREE"].message.endswith("=public; expected vpce")
    assert ep.expectation_met is False


def test_signed_probes_use_the_credential_chain(vpc: Vpc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    r = one_round(vpc.settings(credentials="chain"))
    assert all(p.success and p.signed and p.account for p in r.endpoints[0].probes)
    assert all(s.requests[0]["had_authorization"] for s in list(vpc.sts.values())[:2])


def test_no_credentials_in_the_chain_still_probes_unsigned(
    vpc: Vpc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    r = one_round(vpc.settings(credentials="chain"))
    assert {p.reason for p in r.endpoints[0].probes} == {"credentials_missing"}
    assert "CREDENTIALS_MISSING" in {f.code for f in r.findings}


def test_credentials_none_never_reads_the_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert Credentials("none").frozen() is None
    chain = Credentials("chain").frozen()
    assert chain is not None and chain.access_key == "AKIAIOSFODNN7EXAMPLE"


def test_only_endpoint_limits_the_round(vpc: Vpc) -> None:
    vpc.dns.set_records(GLOBAL, [PUBLIC])
    settings = vpc.settings(endpoints_global=True)
    prober = Prober(settings)
    disc = discover(settings, ENV)
    assert [e.endpoint.hostname for e in run_round(settings, disc, prober).endpoints] == [
        REGIONAL,
        GLOBAL,
    ]
    only = run_round(settings, disc, prober, only_endpoint="global")
    assert [e.endpoint.hostname for e in only.endpoints] == [GLOBAL]


def test_endpoints_are_not_repeated_across_regions(vpc: Vpc) -> None:
    settings = vpc.settings(regions=(REGION, "us-west-2"), endpoints_global=True)
    r = one_round(settings)
    hosts = [e.endpoint.hostname for e in r.endpoints]
    assert hosts == [REGIONAL, "sts.us-west-2.amazonaws.com", GLOBAL]
    west = r.endpoints[1]
    assert west.path == "unresolved"  # the DNS server does not know it: NXDOMAIN
    assert west.lookups[0].reason == "nxdomain"
    assert west.probes == ()


# -- discovery ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("regions", "env", "region", "source"),
    [
        (
            ("eu-west-1",),
            {"AWS_DEFAULT_REGION": "us-west-2", "AWS_REGION": "ap-south-1"},
            "eu-west-1",
            "config",
        ),
        (
            (),
            {"AWS_DEFAULT_REGION": "us-west-2", "AWS_REGION": "ap-south-1"},
            "us-west-2",
            "AWS_DEFAULT_REGION",
        ),
        ((), {"AWS_REGION": "ap-south-1"}, "ap-south-1", "AWS_REGION"),
        ((), {}, None, "none"),
    ],
)
def test_region_precedence_without_imds(
    regions: tuple[str, ...], env: dict[str, str], region: str | None, source: str
) -> None:
    d = discover(Settings(regions=regions, imds_enabled=False, resolvers=("127.0.0.1",)), env)
    assert (d.regions[0] if d.regions else None, d.region_source) == (region, source)
    assert d.imds.reason == "disabled"


@pytest.mark.parametrize(
    ("regions", "env", "host"),
    [
        (("eu-west-1", "ap-south-1"), {}, None),  # before: eu-west-1, a watched region
        (("eu-west-1",), {}, "eu-west-1"),
        (("eu-west-1", "ap-south-1"), {"AWS_REGION": "ca-central-1"}, "ca-central-1"),
        ((), {"AWS_DEFAULT_REGION": "us-west-2"}, "us-west-2"),
    ],
)
def test_the_host_region_comes_from_a_source_that_speaks_for_the_host(
    regions: tuple[str, ...], env: dict[str, str], host: str | None
) -> None:
    settings = Settings(
        regions=regions, imds_enabled=False, resolvers=("127.10.0.2",), vpc_cidrs=(VPC,)
    )
    d = discover(settings, {"AWS_CONFIG_FILE": "/dev/null", **env})
    assert d.host_region == host
    assert d.sdk is not None and d.sdk.global_served_in == host
    assert d.sdk.global_served_why == ("amazon_dns" if host else "region_unknown")


def test_region_and_vpc_from_imds() -> None:
    with ImdsServer(region="ca-central-1", az="ca-central-1b", vpc_cidrs=(VPC,)) as imds:
        settings = Settings(imds_address=f"127.0.0.1:{imds.port}", resolvers=("127.10.0.2",))
        d = discover(settings, {"AWS_CONFIG_FILE": "/dev/null"})
        assert imds.token_requests >= 1
    assert (d.regions, d.region_source) == (("ca-central-1",), "imds")
    assert d.vpc_cidrs == (VPC,)
    assert d.resolvers[0].amazon_provided is True  # base + 2 of the VPC IMDS reported


def test_configured_vpc_cidrs_win_over_imds() -> None:
    with ImdsServer(vpc_cidrs=(VPC,)) as imds:
        settings = Settings(
            imds_address=f"127.0.0.1:{imds.port}",
            vpc_cidrs=("10.99.0.0/16",),
            resolvers=("127.0.0.1",),
        )
        d = discover(settings, {})
    assert d.vpc_cidrs == ("10.99.0.0/16",)
    assert d.imds.vpc_cidrs == (VPC,)


def test_unreadable_resolver_source_is_reported_not_raised(tmp_path: Path) -> None:
    missing = tmp_path / "resolv.conf"
    d = discover(Settings(imds_enabled=False, resolv_conf=str(missing)), ENV)
    assert d.resolvers == ()
    assert d.resolver_error is not None and str(missing) in d.resolver_error


def test_a_stale_hosts_pin_is_probed_first_and_named(vpc: Vpc, tmp_path: Path) -> None:
    """A pin left behind after the endpoint moved: DNS is right, every program is not."""
    gone = "127.10.141.99"  # in the VPC, but no ENI answers there any more
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{gone} {REGIONAL}\n")
    nsswitch = tmp_path / "nsswitch.conf"
    nsswitch.write_text("hosts: files dns\n")
    settings = vpc.settings(hosts_file=str(hosts), nsswitch_conf=str(nsswitch))
    r = one_round(settings)
    (ep,) = r.endpoints
    assert probed(r)[0] == gone and sorted(probed(r)[1:]) == sorted(ENIS[:2])
    first = ep.probes[0]
    assert not first.success and first.reason == "connect_refused"
    assert (ep.path, ep.effective_path, ep.expectation_met) == ("vpce", "vpce", True)
    codes = {f.code for f in r.findings}
    assert {"HOSTS_FILE_OVERRIDE", "STS_CALL_FAILED"} <= codes
    doc = to_json(r)["endpoints"][0]
    assert doc["hosts_file"] == [{"address": gone, "class": "vpce"}]
    metrics = Metrics()
    metrics.observe(r)
    text = metrics.registry.exposition().decode()
    pinned = f'endpoint="{REGIONAL}",path="vpce",resolver="hosts_file"'
    assert f"sts_agent_endpoint_path{{{pinned}}} 1.0" in text, text
    address = f'address="{gone}",availability_zone="",class="vpce",endpoint="{REGIONAL}"'
    assert f"sts_agent_endpoint_address_info{{{address}}} 1.0" in text
    # With DNS asked first the file is a fallback only: no pin, nothing probed there.
    nsswitch.write_text("hosts: dns files\n")
    r = one_round(settings)
    assert gone not in probed(r) and not r.endpoints[0].pinned


def test_a_block_pin_is_reported_not_dialled(vpc: Vpc, tmp_path: Path) -> None:
    """`0.0.0.0 <name>` blocks the name: dialling it would reach this host itself."""
    hosts = tmp_path / "hosts"
    hosts.write_text(f"0.0.0.0 {REGIONAL}\n")
    nsswitch = tmp_path / "nsswitch.conf"
    nsswitch.write_text("hosts: files dns\n")
    r = one_round(vpc.settings(hosts_file=str(hosts), nsswitch_conf=str(nsswitch)))
    (ep,) = r.endpoints
    assert "0.0.0.0" not in probed(r) and sorted(probed(r)) == sorted(ENIS[:2])
    assert [v.address for v in ep.pinned] == ["0.0.0.0"] and ep.dropped_addresses == 0
    assert (ep.path, ep.effective_path, ep.expectation_met) == ("vpce", "unresolved", False)
    found = {f.code: f for f in r.findings}
    assert "blocks the name" in found["HOSTS_FILE_OVERRIDE"].message
    assert "ENDPOINT_PATH_UNEXPECTED" in found


def test_public_addresses_are_remembered_only_while_no_resolver_answers() -> None:
    """Rotated-out public addresses cost signed calls and add nothing while DNS answers;
    when no resolver answers, clients still call them from their caches, so they are probed."""
    book = AddressBook()

    def is_eni(address: str) -> bool:
        return address.startswith("10.")

    book.update(GLOBAL, [answer(GLOBAL, ("198.51.100.1", 60), ("10.0.0.5", 60))], 0.0, 8, is_eni)
    rotated = book.update(GLOBAL, [answer(GLOBAL, ("198.51.100.2", 60))], 1.0, 8, is_eni)
    assert rotated == ["10.0.0.5", "198.51.100.2"]  # the rotated-out ENI kept, the public not
    book.update(GLOBAL, [answer(GLOBAL, ("198.51.100.3", 60))], 2.0, 8, is_eni)
    outage = book.update(GLOBAL, [], 3.0, 8, is_eni)
    assert outage[0] == "10.0.0.5" and "198.51.100.3" in outage
