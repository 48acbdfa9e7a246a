"""Where AWS serves a global STS call from this host, and who speaks for the workloads:
the findings, the metric, and the process audit taking over the host's SDK verdict."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from agent.audit.host import HostAudits
from agent.config import Settings
from agent.discovery.sdk import with_global_serving
from agent.discovery.sdk_view import sdk_view
from agent.results import Endpoint, EndpointReport, ImdsInfo, Report, Resolver, SdkView
from agent.surfaces.metrics import Metrics
from agent.surfaces.report_json import to_json
from agent.verdicts.findings import evaluate
from agent.verdicts.serving import OPT_IN_REGIONS, global_serving

AMAZON = Resolver("169.254.169.253", amazon_provided=True, source="resolv.conf")
CORP = Resolver("10.9.0.53", amazon_provided=False, source="resolv.conf")
CONFIGURED_CORP = Resolver("10.9.0.54", amazon_provided=False, source="config")
GLOBAL_URL = "https://sts.amazonaws.com"


def test_serving_cases() -> None:
    assert global_serving("eu-west-1", (AMAZON,)) == ("eu-west-1", "amazon_dns")
    assert global_serving("us-east-1", (AMAZON,)) == ("us-east-1", "amazon_dns")
    assert global_serving("eu-west-1", (CORP,)) == ("us-east-1", "custom_resolver")
    # The first resolver answers while it is healthy; a later one only on failure.
    assert global_serving("eu-west-1", (AMAZON, CORP)) == ("eu-west-1", "amazon_dns_first")
    assert global_serving("eu-west-1", (CORP, AMAZON)) == ("us-east-1", "custom_resolver")
    assert global_serving("af-south-1", (AMAZON,)) == ("us-east-1", "opt_in_region")
    assert global_serving("eu-west-1", (AMAZON,), proxied=True) == (None, "proxy")
    assert global_serving(None, (AMAZON,)) == (None, "region_unknown")
    assert global_serving("eu-west-1", ()) == (None, "resolvers_unknown")
    # The system's resolvers are what boto3 uses; extra configured ones do not count.
    assert global_serving("eu-west-1", (AMAZON, CONFIGURED_CORP)) == ("eu-west-1", "amazon_dns")
    assert global_serving("eu-west-1", (CONFIGURED_CORP,)) == ("us-east-1", "custom_resolver")
    assert {"af-south-1", "ap-east-1", "me-south-1", "il-central-1"} <= OPT_IN_REGIONS
    assert not {"us-east-1", "eu-west-1", "ap-south-1", "ca-central-1"} & OPT_IN_REGIONS


def test_unknowable_serving_is_unknown_not_us_east_1() -> None:
    """Behind a forwarder, or without the VPC's CIDRs, the Amazon DNS may still answer."""
    local_cache = Resolver("127.0.0.1", source="resolv.conf")  # dnsmasq/unbound on the host
    node_local = Resolver("169.254.20.10", source="resolv.conf")  # node-local DNS cache
    assert global_serving("eu-west-1", (local_cache,)) == (None, "forwarder")
    assert global_serving("eu-west-1", (node_local,)) == (None, "forwarder")
    assert global_serving("eu-west-1", (node_local, AMAZON)) == (None, "forwarder")
    assert global_serving("eu-west-1", (AMAZON, node_local)) == ("eu-west-1", "amazon_dns_first")
    assert global_serving("eu-west-1", (CORP,), in_cluster=True) == (None, "cluster_dns")
    assert global_serving("eu-west-1", (CORP,), vpc_known=False) == (None, "vpc_unknown")
    # What the agent can know stays known.
    assert global_serving("eu-west-1", (AMAZON,), vpc_known=False, in_cluster=True) == (
        "eu-west-1",
        "amazon_dns",
    )
    assert global_serving("af-south-1", (local_cache,)) == ("us-east-1", "opt_in_region")
    assert global_serving("us-east-1", (CORP,), vpc_known=False) == ("us-east-1", "home_region")
    for known in ({"in_cluster": True}, {"vpc_known": False}):
        sdk = with_global_serving(GLOBAL_SDK, "eu-west-1", (CORP,), **known)
        imds = ImdsInfo(available=True, region="eu-west-1")
        base = Report(0.0, 0.0, "eu-west-1", "imds", imds, (CORP,), (), sdk, ())
        r = dataclasses.replace(base, findings=evaluate(base, Settings(), 0.0))
        assert "SDK_GLOBAL_SERVED_US_EAST_1" not in codes(r)
        (f,) = [f for f in r.findings if f.code == "SDK_USES_GLOBAL_ENDPOINT"]
        assert "where AWS serves them is unknown (" in f.message
        assert gauge(r) is None


def report_for(sdk: SdkView, region: str, resolvers: tuple[Resolver, ...]) -> Report:
    sdk = with_global_serving(sdk, region, resolvers)
    imds = ImdsInfo(available=True, region=region)
    base = Report(0.0, 0.0, region, "imds", imds, resolvers, (), sdk, ())
    return dataclasses.replace(base, findings=evaluate(base, Settings(), 0.0))


def codes(report: Report) -> dict[str, str]:
    return {f.code: f.severity for f in report.findings}


def gauge(report: Report) -> str | None:
    metrics = Metrics()
    metrics.observe(report)
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("sts_agent_sdk_global_served_cross_region "):
            return line.split()[1]
    return None


GLOBAL_SDK = SdkView(GLOBAL_URL, "global", "aws-global", ("no_region",))


def test_custom_resolver_is_the_severe_case() -> None:
    r = report_for(GLOBAL_SDK, "eu-west-1", (CORP,))
    assert r.sdk is not None and r.sdk.global_served_in == "us-east-1"
    assert codes(r)["SDK_GLOBAL_SERVED_US_EAST_1"] == "critical"
    assert "SDK_USES_GLOBAL_ENDPOINT" not in codes(r)  # the severe case replaces it
    (f,) = [f for f in r.findings if f.code == "SDK_GLOBAL_SERVED_US_EAST_1"]
    assert "AWS serves them in us-east-1 (a resolver other than the Amazon-provided DNS" in (
        f.message
    )
    assert gauge(r) == "1.0"


def test_amazon_dns_first_with_a_fallback_is_served_in_region_and_says_so() -> None:
    """A corporate resolver after the Amazon DNS answers only when the first fails: the
    global calls are served in the region, not us-east-1, and the text names the exception."""
    r = report_for(GLOBAL_SDK, "eu-west-1", (AMAZON, CORP))
    assert r.sdk is not None and r.sdk.global_served_in == "eu-west-1"
    assert codes(r)["SDK_USES_GLOBAL_ENDPOINT"] == "warning"
    assert "SDK_GLOBAL_SERVED_US_EAST_1" not in codes(r)
    (f,) = [f for f in r.findings if f.code == "SDK_USES_GLOBAL_ENDPOINT"]
    assert "AWS serves them in eu-west-1 (the host's first resolver is the Amazon" in f.message
    assert "served in us-east-1" in f.message
    assert gauge(r) == "0.0"
    swapped = report_for(GLOBAL_SDK, "eu-west-1", (CORP, AMAZON))
    assert codes(swapped)["SDK_GLOBAL_SERVED_US_EAST_1"] == "critical"


def test_amazon_dns_in_a_default_region_is_served_in_region() -> None:
    r = report_for(GLOBAL_SDK, "eu-west-1", (AMAZON,))
    assert "SDK_GLOBAL_SERVED_US_EAST_1" not in codes(r)
    (f,) = [f for f in r.findings if f.code == "SDK_USES_GLOBAL_ENDPOINT"]
    assert "AWS serves them in eu-west-1 (the host resolves through the Amazon-provided DNS" in (
        f.message
    )
    assert gauge(r) == "0.0"
    # A host in us-east-1 is served in its own region: not a cross-region dependency.
    assert gauge(report_for(GLOBAL_SDK, "us-east-1", (AMAZON,))) == "0.0"
    assert codes(report_for(GLOBAL_SDK, "af-south-1", (AMAZON,)))["SDK_GLOBAL_SERVED_US_EAST_1"]


def test_gauge_is_absent_when_nothing_is_known() -> None:
    assert gauge(report_for(GLOBAL_SDK, "eu-west-1", ())) is None


@pytest.fixture
def bare_env(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The agent's own environment after a fresh install: nothing AWS at all."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws/config of the test runner
    return {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")}


def test_agent_own_bare_environment_is_said_without_a_warning(bare_env: dict[str, str]) -> None:
    view = sdk_view(bare_env)
    assert view.mode == "global" and view.unconfigured
    r = report_for(view, "eu-west-1", (AMAZON,))
    assert codes(r) == {"SDK_ENV_UNCONFIGURED": "info"}
    (f,) = r.findings
    assert "audit.processes" in f.advice and "/etc/default/sts-agent" in f.advice
    assert "AWS serves them in eu-west-1" in f.message
    # The operator's environment standing for the workloads: warned as before.
    given = sdk_view({**bare_env, "AWS_REGION": "eu-west-1"})
    assert not given.unconfigured and given.mode == "global"
    assert codes(report_for(given, "eu-west-1", (CORP,))) == {
        "SDK_REGION_MISSING": "warning",
        "SDK_GLOBAL_SERVED_US_EAST_1": "critical",
        "RESOLVER_NOT_AMAZON": "info",
    }


def test_a_config_file_alone_is_a_setting(
    bare_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", bare_env["HOME"])  # where botocore looks for ~/.aws/config
    assert sdk_view(bare_env).unconfigured
    cfg = os.path.join(bare_env["HOME"], ".aws", "config")
    os.makedirs(os.path.dirname(cfg))
    with open(cfg, "w") as f:
        f.write("[default]\nregion = eu-west-1\n")
    assert not sdk_view(bare_env).unconfigured


@pytest.fixture
def workload() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose own settings make boto3 call the global endpoint."""
    env = {"AWS_REGION": "eu-west-1", "AWS_CONFIG_FILE": os.devnull}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    yield child
    child.kill()
    child.wait()


def test_process_audit_decides_the_host_verdict(
    workload: subprocess.Popen[bytes], bare_env: dict[str, str]
) -> None:
    settings = dataclasses.replace(Settings(), audit_processes=True)
    given = sdk_view({**bare_env, "AWS_DEFAULT_REGION": "eu-west-1"})  # agent env: regional
    report = HostAudits().apply(settings, report_for(given, "eu-west-1", (CORP,)))
    assert report.audit is not None and report.audit.processes is not None
    procs = report.audit.processes
    doc = to_json(report)["audit"]["processes"]
    if not procs.permitted:  # unprivileged: the agent's own view still stands
        assert "PROCESS_AUDIT_NOT_PERMITTED" in codes(report)
        assert not report.audit.decides_sdk_verdict
        assert "decides_sdk_verdict" not in doc
        bare = report_for(sdk_view(bare_env), "eu-west-1", (AMAZON,))
        assert "SDK_ENV_UNCONFIGURED" in codes(HostAudits().apply(settings, bare))
        return
    assert report.audit.decides_sdk_verdict
    assert doc["decides_sdk_verdict"] is True
    found = {f.code: f for f in report.findings}
    assert workload.pid in {p.pid for p in procs.processes if p.mode == "global"}
    assert workload.pid in {p["pid"] for p in doc["processes"] if p["mode"] == "global"}
    assert "PROCESS_USES_GLOBAL_ENDPOINT" not in found  # the severe case replaces it
    assert found["SDK_GLOBAL_SERVED_US_EAST_1"].severity == "critical"
    assert "AWS serves them in us-east-1" in found["SDK_GLOBAL_SERVED_US_EAST_1"].message
    # The agent's own global view is dropped where the processes were read.
    bare = report_for(sdk_view(bare_env), "eu-west-1", (AMAZON,))
    assert "SDK_ENV_UNCONFIGURED" in codes(bare)
    decided = HostAudits().apply(settings, bare)
    assert "SDK_ENV_UNCONFIGURED" not in codes(decided)
    assert "PROCESS_USES_GLOBAL_ENDPOINT" in codes(decided)


def _apply_as_nobody_codes() -> dict[str, str]:
    settings = dataclasses.replace(Settings(), audit_processes=True)
    given = SdkView(GLOBAL_URL, "global", "aws-global", ("no_region",))
    return codes(HostAudits().apply(settings, report_for(given, "eu-west-1", (AMAZON,))))


def test_unprivileged_process_audit_leaves_the_agent_view(
    workload: subprocess.Popen[bytes],
) -> None:
    from tests.support.privileges import run_as_nobody

    env = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull}
    found = run_as_nobody(_apply_as_nobody_codes, env={**env, "HOME": "/nonexistent"})
    assert found["PROCESS_AUDIT_NOT_PERMITTED"] == "info"
    assert found["SDK_USES_GLOBAL_ENDPOINT"] == "warning"  # nobody else spoke for the host


# A host in us-east-1 behind a custom resolver: wherever a global call from it is
# resolved, AWS serves it in us-east-1, its own region, so there is no cross-region
# dependency to report (no critical finding, the gauge at 0).
def test_custom_resolver_in_us_east_1_is_not_a_cross_region_dependency() -> None:
    assert global_serving("us-east-1", (CORP,)) == ("us-east-1", "home_region")
    r = report_for(GLOBAL_SDK, "us-east-1", (CORP,))
    assert "SDK_GLOBAL_SERVED_US_EAST_1" not in codes(r)
    (f,) = [f for f in r.findings if f.code == "SDK_USES_GLOBAL_ENDPOINT"]
    assert f.severity == "warning" and "AWS serves them in us-east-1 (the host is in us-east-1" in (
        f.message
    )
    assert gauge(r) == "0.0"


@pytest.mark.parametrize(
    ("reasons", "says", "not_says"),
    [
        (("aws_region_only",), "Set AWS_DEFAULT_REGION", "upgrade botocore"),
        (("no_region",), "or region in the AWS config file", "upgrade botocore"),
        (("legacy_mode",), "AWS_STS_REGIONAL_ENDPOINTS=regional", "AWS_DEFAULT_REGION"),
    ],
)
def test_global_sdk_advice_fits_the_cause(
    reasons: tuple[str, ...], says: str, not_says: str
) -> None:
    for resolvers in ((AMAZON,), (CORP,)):  # served in region, and the severe case
        sdk = dataclasses.replace(GLOBAL_SDK, reasons=reasons)
        r = report_for(sdk, "eu-west-1", resolvers)
        (f,) = [
            f
            for f in r.findings
            if f.code in ("SDK_USES_GLOBAL_ENDPOINT", "SDK_GLOBAL_SERVED_US_EAST_1")
        ]
        assert says in f.advice and not_says not in f.advice


def test_global_sdk_says_its_calls_miss_the_endpoint_when_the_name_is_public() -> None:
    public = EndpointReport(Endpoint(GLOBAL_URL[8:], "global", "us-east-1", "public"), "public")
    r = report_for(GLOBAL_SDK, "eu-west-1", (AMAZON,))
    r = dataclasses.replace(r, endpoints=(public,))
    (f,) = [f for f in evaluate(r, Settings(), 0.0) if f.code == "SDK_USES_GLOBAL_ENDPOINT"]
    assert f.message.endswith("so those calls do not use an STS VPC endpoint")
    (g,) = [f for f in r.findings if f.code == "SDK_USES_GLOBAL_ENDPOINT"]
    assert "VPC endpoint" not in g.message  # no endpoint report, no claim about its path
