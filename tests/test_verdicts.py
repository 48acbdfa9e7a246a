"""Address classes, endpoint paths and findings, checked on small hand-built rounds.

Verdicts are pure functions of a round's facts, so each finding code can be
provoked by exactly one minimal Report; the end-to-end tests then only need to
show that real DNS and STS answers reach these functions intact.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from agent.check import exit_code
from agent.config import Settings
from agent.results import (
    AddressVerdict,
    DnsReason,
    ImdsInfo,
    Report,
    Resolver,
    SdkView,
    path_of,
)
from agent.verdicts.classify import classify, classify_all, combine_paths
from agent.verdicts.codes import CODES
from agent.verdicts.findings import FAILURE_ADVICE, evaluate
from tests.support.minimal_rounds import (
    AMAZON_DNS,
    GLOBAL,
    OTHER_DNS,
    REGIONAL,
    VPC,
    endpoint,
    lookup,
    probe,
    report,
)


# -- classify -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "cidrs", "klass"),
    [
        ("127.10.138.148", VPC, "vpce"),
        ("127.20.0.10", VPC, "public"),
        ("10.1.2.3", VPC, "private"),  # a hub-VPC endpoint: private, but not ours
        ("10.120.138.148", ("10.120.0.0/16",), "vpce"),
        ("10.121.0.5", ("10.120.0.0/16",), "private"),
        ("172.16.0.1", (), "private"),
        ("172.31.255.255", (), "private"),
        ("172.32.0.1", (), "public"),
        ("192.168.4.4", (), "private"),
        ("100.64.0.1", (), "private"),  # carrier-grade NAT range, used by some VPCs
        ("100.127.255.254", (), "private"),
        ("100.128.0.1", (), "public"),
        ("52.94.236.248", (), "public"),
        ("fd00:ec2::10", (), "private"),  # unique local
        ("fc00::1", (), "private"),
        ("2600:1f18:4a:c600::5", (), "public"),
        ("2600:1f18:4a:c600::5", ("2600:1f18:4a:c600::/56",), "vpce"),
        ("::ffff:10.1.2.3", (), "private"),  # IPv4-mapped: judged as the IPv4 address
        ("::ffff:127.10.1.1", VPC, "vpce"),
        ("::ffff:52.94.236.248", VPC, "public"),
    ],
)
def test_classify(address: str, cidrs: tuple[str, ...], klass: str) -> None:
    assert classify(address, cidrs) == klass


def test_vpc_cidr_wins_over_the_private_ranges() -> None:
    """A VPC built on 10/8 has its endpoint ENIs in 10/8: they are vpce, not merely private."""
    assert classify("10.0.0.9", ("10.0.0.0/8",)) == "vpce"
    assert classify("10.0.0.9", ()) == "private"


def test_classify_rejects_a_non_address() -> None:
    with pytest.raises(ValueError):
        classify("sts.amazonaws.com", VPC)


def test_classify_all_keeps_order() -> None:
    got = classify_all(["127.20.0.10", "127.10.0.5"], VPC)
    assert got == (AddressVerdict("127.20.0.10", "public"), AddressVerdict("127.10.0.5", "vpce"))


# -- paths --------------------------------------------------------------------
def _verdicts(*classes: str) -> tuple[AddressVerdict, ...]:
    return tuple(AddressVerdict(f"127.0.0.{i}", c) for i, c in enumerate(classes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("classes", "path"),
    [
        ((), "unresolved"),
        (("vpce",), "vpce"),
        (("vpce", "vpce"), "vpce"),
        (("private", "private"), "private"),
        (("public",), "public"),
        (("vpce", "public"), "mixed"),
        (("vpce", "private"), "mixed"),
        (("private", "public", "vpce"), "mixed"),
    ],
)
def test_path_of(classes: tuple[str, ...], path: str) -> None:
    assert path_of(_verdicts(*classes)) == path


@pytest.mark.parametrize(
    ("paths", "combined"),
    [
        ([], "unresolved"),
        (["unresolved", "unresolved"], "unresolved"),
        (["vpce"], "vpce"),
        (["vpce", "vpce"], "vpce"),
        (["vpce", "unresolved"], "vpce"),  # a failing resolver is a DNS failure, not a path
        (["vpce", "public"], "mixed"),
        (["private", "vpce"], "mixed"),
        (["mixed", "mixed"], "mixed"),
    ],
)
def test_combine_paths(paths: list[str], combined: str) -> None:
    assert combine_paths(paths) == combined  # type: ignore[arg-type]


def codes(r: Report, settings: Settings | None = None) -> dict[str, str]:
    found = evaluate(r, settings or Settings())
    return {f.code: f.severity for f in found}


def test_a_healthy_round_has_no_findings_and_exits_0() -> None:
    r = report(
        endpoint(),
        endpoint(GLOBAL, "global", "public", (lookup(AMAZON_DNS, GLOBAL, "127.20.0.10"),)),
    )
    found = evaluate(r, Settings())
    assert found == ()
    assert exit_code(replace(r, findings=found)) == 0


# Each finding code, the smallest round that provokes it, and its contracted severity.
DEAD_FIRST = Resolver("127.10.0.9", 53, amazon_provided=False, source="resolv.conf")
LISTED_AMAZON = replace(AMAZON_DNS, source="resolv.conf")

ROUNDS: dict[str, tuple[Callable[[], Report], str]] = {
    "ENDPOINT_PATH_UNEXPECTED": (
        lambda: report(
            endpoint(lookups=(lookup(AMAZON_DNS, REGIONAL, "127.10.138.148", "127.20.0.20"),))
        ),
        "warning",
    ),
    "PRIVATE_DNS_NOT_RESOLVING": (
        lambda: report(endpoint(lookups=(lookup(AMAZON_DNS, REGIONAL, "127.20.0.20"),))),
        "critical",
    ),
    "ENDPOINT_UNRESOLVED": (
        lambda: report(endpoint(lookups=(lookup(AMAZON_DNS, REGIONAL, reason="nxdomain"),))),
        "critical",
    ),
    "RESOLVERS_DISAGREE": (
        lambda: report(
            endpoint(
                expected=None,
                lookups=(
                    lookup(AMAZON_DNS, REGIONAL, "127.10.138.148"),
                    lookup(OTHER_DNS, REGIONAL, "127.20.0.20"),
                ),
            ),
            resolvers=(AMAZON_DNS, OTHER_DNS),
        ),
        "warning",
    ),
    "STS_CALL_FAILED": (
        lambda: report(
            endpoint(
                probes=(
                    probe(
                        "127.10.138.148",
                        success=False,
                        reason="throttled",
                        error="STS Throttling: Rate exceeded",
                    ),
                )
            )
        ),
        "critical",
    ),
    "CREDENTIALS_MISSING": (
        lambda: report(
            endpoint(probes=(probe("127.10.138.148", success=False, reason="credentials_missing"),))
        ),
        "warning",
    ),
    "TLS_HOSTNAME_MISMATCH": (
        lambda: report(
            endpoint(
                probes=(probe("127.10.138.148", success=False, reason="tls_hostname_mismatch"),)
            )
        ),
        "critical",
    ),
    "CERT_EXPIRING": (
        lambda: report(
            endpoint(probes=(probe("127.10.138.148", cert_not_after=time.time() + 2 * 86400),))
        ),
        "warning",
    ),
    "SDK_USES_GLOBAL_ENDPOINT": (
        lambda: report(
            sdk=SdkView("https://sts.amazonaws.com", "global", "us-east-1", ("legacy_mode",))
        ),
        "warning",
    ),
    # Served in us-east-1: the host's region is known, its resolver is not Amazon's.
    "SDK_GLOBAL_SERVED_US_EAST_1": (
        lambda: report(
            sdk=SdkView(
                "https://sts.amazonaws.com",
                "global",
                "us-east-1",
                ("legacy_mode",),
                global_served_in="us-east-1",
                global_served_why="custom_resolver",
            )
        ),
        "critical",
    ),
    # The agent's own environment, with no AWS setting at all: said, not warned.
    "SDK_ENV_UNCONFIGURED": (
        lambda: report(
            sdk=SdkView(
                "https://sts.amazonaws.com",
                "global",
                "aws-global",
                ("no_region",),
                unconfigured=True,
            )
        ),
        "info",
    ),
    "SDK_REGION_MISSING": (
        # aws-global names a "region", but the reasons say none was configured.
        lambda: report(
            sdk=SdkView("https://sts.us-east-2.amazonaws.com", "regional", None, ("no_region",))
        ),
        "warning",
    ),
    "SDK_CA_BUNDLE_UNUSABLE": (
        lambda: report(
            sdk=SdkView(
                f"https://{REGIONAL}",
                "regional",
                "us-east-2",
                ca_bundle_problem="/etc/pki/gone.pem: file not found",
            )
        ),
        "critical",
    ),
    # An override to a name the agent watches: said, not warned.
    "SDK_ENDPOINT_OVERRIDE": (
        lambda: report(sdk=SdkView(f"https://{REGIONAL}", "custom", "us-east-2")),
        "info",
    ),
    # An override to a VPC endpoint's own DNS name, which nothing watches.
    "SDK_ENDPOINT_NOT_WATCHED": (
        lambda: report(
            sdk=SdkView(
                "https://vpce-0abc-xyz.sts.us-east-2.vpce.amazonaws.com", "custom", "us-east-2"
            )
        ),
        "warning",
    ),
    "SDK_VIEW_FAILED": (
        lambda: report(sdk=SdkView(None, "unknown", None, error="ProfileNotFound: x")),
        "warning",
    ),
    "RESOLVER_NOT_AMAZON": (
        lambda: report(
            endpoint(lookups=(lookup(OTHER_DNS, REGIONAL, "127.10.138.148"),)),
            resolvers=(OTHER_DNS,),
        ),
        "info",
    ),
    "IMDS_UNREACHABLE": (
        lambda: report(imds=ImdsInfo(available=False, reason="timeout", detail="no answer")),
        "warning",
    ),
    "IMDS_DISABLED": (
        lambda: report(imds=ImdsInfo(available=False, reason="disabled")),
        "info",
    ),
    "REGION_UNKNOWN": (lambda: report(region=None), "warning"),
    "RESOLVERS_UNAVAILABLE": (
        lambda: report(
            endpoint(lookups=()),
            resolvers=(),
            resolver_error="/etc/resolv.conf: file not found",
        ),
        "critical",
    ),
    "ADDRESSES_DROPPED": (lambda: report(endpoint(dropped=3)), "info"),
    "SDK_USES_PROXY": (
        lambda: report(
            sdk=SdkView(
                "https://sts.us-east-2.amazonaws.com",
                "regional",
                "us-east-2",
                ("https_proxy",),
                proxy="http://proxy.corp:3128",
            )
        ),
        "warning",
    ),
    # The endpoint's one ENI is in 2b (its zonal vpce name says so); the host is in 2c.
    "ENDPOINT_NO_LOCAL_AZ_ENI": (
        lambda: report(
            imds=ImdsInfo(
                available=True, region="us-east-2", availability_zone="us-east-2c", vpc_cidrs=VPC
            ),
            eni_zones={"127.10.138.148": "us-east-2b"},
        ),
        "warning",
    ),
    # The SDK's region from the environment is not the instance's (IMDS says us-east-2).
    "SDK_REGION_NOT_HOST_REGION": (
        lambda: report(
            sdk=SdkView("https://sts.eu-west-1.amazonaws.com", "regional", "eu-west-1"),
            regions=("eu-west-1", "us-east-2"),  # as discovery watches them (both)
        ),
        "warning",
    ),
    # An upper-case region: boto3 signs for a region name AWS does not have.
    "SDK_REGION_INVALID": (
        lambda: report(sdk=SdkView("https://sts.US-EAST-2.amazonaws.com", "regional", "US-EAST-2")),
        "critical",
    ),
    # resolv.conf's first nameserver times out; the second answers, so the name resolves.
    "RESOLVER_NOT_ANSWERING": (
        lambda: report(
            endpoint(
                lookups=(
                    lookup(DEAD_FIRST, REGIONAL, reason="timeout"),
                    lookup(LISTED_AMAZON, REGIONAL, "127.10.138.148"),
                )
            ),
            resolvers=(DEAD_FIRST, LISTED_AMAZON),
        ),
        "warning",
    ),
    # Pinned to the endpoint's own ENI: on the designed path, but DNS is bypassed.
    "HOSTS_FILE_OVERRIDE": (
        lambda: report(replace(endpoint(), pinned=classify_all(["127.10.138.148"], VPC))),
        "warning",
    ),
}


def test_a_pin_off_the_designed_path_fails_the_expectation_dns_meets() -> None:
    ep = replace(endpoint(), pinned=classify_all(["127.20.0.20"], VPC))
    assert (ep.path, ep.effective_path, ep.expectation_met) == ("vpce", "public", False)
    assert ep.paths_by_source == {AMAZON_DNS.label: "vpce", "hosts_file": "public"}
    found = {f.code: f for f in evaluate(report(ep), Settings())}
    assert set(found) == {"ENDPOINT_PATH_UNEXPECTED", "HOSTS_FILE_OVERRIDE"}
    assert "public path (pinned in the hosts file)" in found["ENDPOINT_PATH_UNEXPECTED"].message
    assert "127.20.0.20 (public)" in found["HOSTS_FILE_OVERRIDE"].message


def test_every_code_a_round_can_raise_has_a_round() -> None:
    assert set(ROUNDS) == {code for code, entry in CODES.items() if not entry.audit}


def test_findings_are_built_only_through_the_registry_and_each_code_is_used() -> None:
    agent = Path(__file__).resolve().parent.parent / "agent"
    sources = {p: p.read_text() for p in agent.rglob("*.py") if p.name != "codes.py"}
    built_by_hand = [str(p) for p, text in sources.items() if re.search(r"\bFinding\(", text)]
    assert built_by_hand == []
    used = {code for text in sources.values() for code in re.findall(r'"([A-Z0-9_]+)"', text)}
    assert set(CODES) - used == set()


@pytest.mark.parametrize("code", sorted(ROUNDS))
def test_each_code_is_raised_by_its_minimal_round(code: str) -> None:
    build, severity = ROUNDS[code]
    r = build()
    found = codes(r)
    assert found.get(code) == severity, found
    others = {c: s for c, s in found.items() if c != code and s != "info"}
    assert not others, f"{code}'s round also raised {others}"
    assert exit_code(replace(r, findings=evaluate(r, Settings()))) == (
        0 if severity == "info" else 1
    )


def test_findings_name_the_endpoint_and_say_why() -> None:
    r = ROUNDS["ENDPOINT_UNRESOLVED"][0]()
    (f,) = evaluate(r, Settings())
    assert f.endpoint == REGIONAL
    assert "nxdomain" in f.message
    assert f.advice


def test_global_name_with_public_answer_is_not_private_dns_failure() -> None:
    """The global name is never served by a VPC endpoint; expecting vpce is a path mismatch."""
    ep = endpoint(GLOBAL, "global", "vpce", (lookup(AMAZON_DNS, GLOBAL, "127.20.0.10"),))
    found = codes(report(ep))
    assert "PRIVATE_DNS_NOT_RESOLVING" not in found
    assert found["ENDPOINT_PATH_UNEXPECTED"] == "warning"


def test_private_outside_the_vpc_meets_private_but_not_vpce() -> None:
    """A hub-VPC endpoint (10.x outside this VPC) is fine when `private` is expected."""
    lk = (lookup(AMAZON_DNS, REGIONAL, "10.1.2.3"),)
    ep_private = endpoint(expected="private", lookups=lk)
    ep_vpce = endpoint(expected="vpce", lookups=lk)
    assert ep_private.path == "private"
    assert ep_private.expectation_met is True
    assert codes(report(ep_private)) == {}
    assert ep_vpce.expectation_met is False
    assert codes(report(ep_vpce)) == {"ENDPOINT_PATH_UNEXPECTED": "warning"}


def test_expect_any_is_met_by_every_resolved_path_only() -> None:
    assert endpoint(expected="any").expectation_met is True
    unresolved = endpoint(expected="any", lookups=(lookup(AMAZON_DNS, REGIONAL, reason="timeout"),))
    assert unresolved.expectation_met is False
    assert endpoint(expected=None).expectation_met is None


def test_credential_and_hostname_failures_are_not_double_counted() -> None:
    ep = endpoint(
        lookups=(lookup(AMAZON_DNS, REGIONAL, "127.10.138.148", "127.10.139.20"),),
        probes=(
            probe("127.10.138.148", success=False, reason="tls_hostname_mismatch"),
            probe("127.10.139.20", success=False, reason="connect_refused", error="refused"),
        ),
    )
    found = evaluate(report(ep), Settings())
    by_code = {f.code: f for f in found}
    assert set(by_code) == {"TLS_HOSTNAME_MISMATCH", "STS_CALL_FAILED"}
    assert "127.10.138.148" in by_code["TLS_HOSTNAME_MISMATCH"].message
    assert "1 of 2" in by_code["STS_CALL_FAILED"].message
    assert "connect_refused" in by_code["STS_CALL_FAILED"].message


def test_cert_warning_days_sets_the_horizon() -> None:
    r = report(endpoint(probes=(probe("127.10.138.148", cert_not_after=time.time() + 20 * 86400),)))
    assert "CERT_EXPIRING" not in codes(r)
    assert "CERT_EXPIRING" in codes(r, Settings(cert_warning_days=30))


def test_imds_down_with_imds_switched_off_is_not_a_warning() -> None:
    r = report(imds=ImdsInfo(available=False, reason="timeout"))
    assert "IMDS_UNREACHABLE" not in codes(r, Settings(imds_enabled=False))


def test_aws_region_only_says_botocore_ignores_it() -> None:
    sdk = SdkView(
        "https://sts.amazonaws.com", "global", "aws-global", ("no_region", "aws_region_only")
    )
    found = {f.code: f for f in evaluate(report(sdk=sdk), Settings())}
    assert set(found) == {"SDK_USES_GLOBAL_ENDPOINT", "SDK_REGION_MISSING"}
    assert "AWS_DEFAULT_REGION" in found["SDK_REGION_MISSING"].message


def test_sts_call_failed_advice_is_written_for_the_reasons_seen() -> None:
    """Before, one fixed sentence: throttling was sent to IAM, an expired certificate to
    the network."""

    def advice(*reasons: str) -> str:
        probes = tuple(
            probe(f"127.10.138.{i}", success=False, reason=r, error=r)
            for i, r in enumerate(reasons, 1)
        )
        found = {f.code: f for f in evaluate(report(endpoint(probes=probes)), Settings())}
        return found["STS_CALL_FAILED"].advice

    throttled = advice("throttled")
    assert "quota" in throttled and "IAM" not in throttled
    tls = advice("tls_error")
    assert "certificate" in tls and "quota" not in tls
    assert "sts:GetCallerIdentity" in advice("access_denied")
    both = advice("throttled", "tls_error", "throttled")
    assert both.count("STS throttled") == 1 and "certificate" in both
    for reason in FAILURE_ADVICE:
        assert advice(reason).strip(), reason


def test_a_global_endpoint_override_is_told_to_fix_the_override() -> None:
    sdk = SdkView(
        "https://sts.amazonaws.com",
        "global",
        "us-east-2",
        ("endpoint_url_override", "endpoint_url_sts_env"),
    )
    found = {f.code: f for f in evaluate(report(sdk=sdk), Settings())}
    fix = found["SDK_USES_GLOBAL_ENDPOINT"].advice
    assert "AWS_ENDPOINT_URL_STS" in fix and "AWS_DEFAULT_REGION" not in fix


@pytest.mark.parametrize(("reason", "said"), [("nxdomain", "NXDOMAIN"), ("nodata", "no A or AAAA")])
def test_a_resolver_that_denies_the_name_disagrees_with_one_that_answers(
    reason: str, said: str
) -> None:
    """The stub resolver stops at NXDOMAIN or an empty answer, so programs asking that
    resolver first fail; before, an unresolved verdict never counted as a disagreement."""
    ep = endpoint(
        lookups=(
            lookup(AMAZON_DNS, REGIONAL, "127.10.138.148"),
            lookup(OTHER_DNS, REGIONAL, reason=reason),  # type: ignore[arg-type]
        )
    )
    found = {f.code: f for f in evaluate(report(ep), Settings())}
    assert "RESOLVERS_DISAGREE" in found
    message = found["RESOLVERS_DISAGREE"].message
    assert said in message and OTHER_DNS.label in message and "do not try" in message


@pytest.mark.parametrize("reason", ["timeout", "servfail", "refused"])
def test_a_resolver_that_fails_is_not_a_disagreement(reason: str) -> None:
    """After these the stub resolver asks the next nameserver, which answers."""
    ep = endpoint(
        lookups=(
            lookup(AMAZON_DNS, REGIONAL, "127.10.138.148"),
            lookup(OTHER_DNS, REGIONAL, reason=reason),  # type: ignore[arg-type]
        )
    )
    assert "RESOLVERS_DISAGREE" not in codes(report(ep))


def test_another_regions_public_name_is_not_called_private_dns_off() -> None:
    """AWS_DEFAULT_REGION=eu-west-1 on a us-east-2 instance: sts.eu-west-1 resolving public
    is not this VPC's endpoint missing private DNS; before, the advice was to enable it."""
    other = "sts.eu-west-1.amazonaws.com"
    ep = endpoint(host=other, lookups=(lookup(AMAZON_DNS, other, "127.20.0.30"),))
    ep = replace(ep, endpoint=replace(ep.endpoint, signing_region="eu-west-1"))
    sdk = SdkView(f"https://{other}", "regional", "eu-west-1")
    found = {f.code: f for f in evaluate(report(ep, sdk=sdk), Settings())}
    assert "PRIVATE_DNS_NOT_RESOLVING" not in found
    assert {"ENDPOINT_PATH_UNEXPECTED", "SDK_REGION_NOT_HOST_REGION"} <= set(found)
    assert "us-east-2" in found["SDK_REGION_NOT_HOST_REGION"].message
    # The instance's own region still gets the private-DNS diagnosis.
    own = endpoint(lookups=(lookup(AMAZON_DNS, REGIONAL, "127.20.0.30"),))
    assert "PRIVATE_DNS_NOT_RESOLVING" in codes(report(own))


def test_an_sdk_region_that_is_not_the_instances_brings_the_instances_along() -> None:
    from agent.discovery.regions import watched_regions

    imds = ImdsInfo(available=True, region="us-east-2")
    env = {"AWS_DEFAULT_REGION": "eu-west-1"}
    # The instance's region first: it is the host's region in the report and the metrics.
    assert watched_regions(Settings(), env, imds) == (("us-east-2", "eu-west-1"), "imds")
    same = {"AWS_DEFAULT_REGION": "us-east-2"}
    assert watched_regions(Settings(), same, imds) == (("us-east-2",), "AWS_DEFAULT_REGION")
    configured = Settings(regions=("eu-west-1",))
    assert watched_regions(configured, env, imds) == (("eu-west-1",), "config")


def test_no_findings_without_an_expectation_does_not_claim_the_expected_path() -> None:
    from agent.surfaces.report_text import render

    public = endpoint(expected=None, lookups=(lookup(AMAZON_DNS, REGIONAL, "127.20.0.30"),))
    r = report(public)
    assert evaluate(r, Settings()) == ()
    text = render(r)
    assert "takes the expected path" not in text
    assert f"No path is expected for {REGIONAL}" in text and "[expect]" in text
    assert "takes the expected path" in render(report(endpoint()))


def test_a_stale_failing_pin_says_every_call_from_the_host_fails() -> None:
    """Pinned to an address DNS no longer gives, where nothing answers: before, the
    override read as harmless (path met) beside a '1 of 2 calls failed'."""
    ep = endpoint(
        probes=(
            probe("127.10.138.148"),
            probe("127.10.200.200", success=False, reason="connect_refused", error="refused"),
        )
    )
    ep = replace(ep, pinned=classify_all(["127.10.200.200"], VPC))
    found = {f.code: f for f in evaluate(report(ep), Settings())}
    message = found["HOSTS_FILE_OVERRIDE"].message
    assert "DNS does not answer 127.10.200.200" in message
    assert "127.10.200.200 (connect_refused)" in message and "every call" in message
    healthy_pin = replace(endpoint(), pinned=classify_all(["127.10.138.148"], VPC))
    quiet = {f.code: f for f in evaluate(report(healthy_pin), Settings())}
    assert "does not answer" not in quiet["HOSTS_FILE_OVERRIDE"].message
    assert "fail" not in quiet["HOSTS_FILE_OVERRIDE"].message


def test_the_endpoint_boto3_calls_is_warned_when_nothing_watches_it() -> None:
    elsewhere = SdkView("https://sts.eu-west-1.amazonaws.com", "regional", "eu-west-1")
    found = {f.code: f for f in evaluate(report(sdk=elsewhere), Settings())}
    fix = found["SDK_ENDPOINT_NOT_WATCHED"].advice
    assert "sts.eu-west-1.amazonaws.com to endpoints.extra" in fix
    vpce = "vpce-0abc-xyz.sts.us-east-2.vpce.amazonaws.com"
    override = report(sdk=SdkView(f"https://{vpce}", "custom", "us-east-2"))
    assert "SDK_ENDPOINT_NOT_WATCHED" in codes(override)
    assert "SDK_ENDPOINT_NOT_WATCHED" not in codes(override, Settings(endpoints_extra=(vpce,)))


def test_a_block_pin_says_the_name_is_blocked_and_is_not_dialled() -> None:
    from agent.addresses import blocks

    ep = replace(endpoint(), pinned=classify_all(["0.0.0.0"], VPC))
    message = {f.code: f for f in evaluate(report(ep), Settings())}["HOSTS_FILE_OVERRIDE"].message
    assert "blocks the name" in message and "does not answer" not in message
    assert ep.effective_path == "unresolved" and ep.expectation_met is False
    assert blocks("0.0.0.0") and blocks("::") and not blocks("127.10.138.148")


def _first_then_second(
    first: Resolver, second: Resolver, failing: Resolver, reason: DnsReason = "timeout"
) -> Report:
    """Two resolvers in that order; `failing` answers with `reason`, the other with the ENI."""
    lookups = tuple(
        lookup(r, REGIONAL, reason=reason)
        if r == failing
        else lookup(r, REGIONAL, "127.10.138.148")
        for r in (first, second)
    )
    return report(endpoint(lookups=lookups), resolvers=(first, second))


def test_a_silent_first_nameserver_is_named_and_only_when_it_is_first() -> None:
    build, _ = ROUNDS["RESOLVER_NOT_ANSWERING"]
    (f,) = [f for f in evaluate(build(), Settings()) if f.code == "RESOLVER_NOT_ANSWERING"]
    assert f.message.startswith("127.10.0.9, the first nameserver in resolv.conf, did not answer")
    assert "while 127.10.0.2 did" in f.message and "5 s by default" in f.advice
    assert "RESOLVER_NOT_ANSWERING" in codes(
        _first_then_second(DEAD_FIRST, LISTED_AMAZON, DEAD_FIRST)
    )
    # The second one silent: the stub resolver never waits for it while the first answers.
    second = _first_then_second(LISTED_AMAZON, DEAD_FIRST, DEAD_FIRST)
    assert "RESOLVER_NOT_ANSWERING" not in codes(second)
    # A first one that refuses or fails at once costs no wait.
    refused = _first_then_second(DEAD_FIRST, LISTED_AMAZON, DEAD_FIRST, "refused")
    assert "RESOLVER_NOT_ANSWERING" not in codes(refused)
    # The agent's own configured resolvers are not what programs ask.
    configured = _first_then_second(OTHER_DNS, AMAZON_DNS, OTHER_DNS)
    assert "RESOLVER_NOT_ANSWERING" not in codes(configured)


def test_upper_case_sdk_region_is_invalid_not_another_region() -> None:
    found = {f.code: f for f in evaluate(ROUNDS["SDK_REGION_INVALID"][0](), Settings())}
    assert "SDK_REGION_NOT_HOST_REGION" not in found
    assert "'US-EAST-2', not 'us-east-2'" in found["SDK_REGION_INVALID"].message


def test_imds_refusal_gets_its_own_advice_not_the_hop_limit() -> None:
    def advice(reason: str) -> str:
        r = report(imds=ImdsInfo(available=False, reason=reason, detail="x"))
        (f,) = [f for f in evaluate(r, Settings()) if f.code == "IMDS_UNREACHABLE"]
        return f.advice

    assert "hop limit" in advice("timeout")
    for refused in ("unauthorized", "forbidden"):
        assert "hop limit" not in advice(refused) and "HttpTokens" in advice(refused)


def test_resolver_not_amazon_says_when_it_cannot_tell() -> None:
    r = report(
        endpoint(lookups=(lookup(OTHER_DNS, REGIONAL, "127.10.138.148"),)),
        resolvers=(OTHER_DNS,),
        vpc_cidrs=(),
        imds=ImdsInfo(available=True, region="us-east-2"),
    )
    (f,) = [f for f in evaluate(r, Settings()) if f.code == "RESOLVER_NOT_AMAZON"]
    assert "CIDRs are unknown" in f.message
