"""`sts-agent check` says where AWS serves boto3's global calls from this host: its own
region behind the Amazon DNS of a default-enabled region, us-east-1 behind another
resolver. Real dnsmasq, moto over TLS and the IMDSv2 simulator, as in test_check_e2e."""

from __future__ import annotations

from pathlib import Path

from agent.simulate.imds_server import ImdsServer
from tests.support import check_run
from tests.support.check_run import (
    HEALTHY,
    REGION,
    STATIC_CREDS,
    Sts,
    check,
    config,
    environment,
)
from tests.support.dnsmasq import Dnsmasq

# The real parts, as module-scoped fixtures shared by the check end-to-end tests.
sts, imds, healthy_dns = check_run.sts, check_run.imds, check_run.healthy_dns

CORPORATE_DNS = "127.30.0.53"  # outside the VPC: not the Amazon-provided resolver


def test_amazon_dns_in_a_default_region_serves_in_region(
    tmp_path: Path, sts: Sts, imds: ImdsServer, healthy_dns: Dnsmasq
) -> None:
    cfg = config(tmp_path, sts, healthy_dns, imds, regions=[REGION])
    env = environment(imds, AWS_DEFAULT_REGION=None)  # boto3 here calls sts.amazonaws.com
    run = check(cfg, env)
    sdk = run.doc["sdk"]
    assert sdk["mode"] == "global"
    assert (sdk["global_served_in"], sdk["global_served_why"]) == (REGION, "amazon_dns")
    codes = run.codes()
    assert codes["SDK_USES_GLOBAL_ENDPOINT"] == "warning"
    assert "SDK_GLOBAL_SERVED_US_EAST_1" not in codes
    text = check(cfg, env, as_json=False).stdout
    where = f"AWS serves them in {REGION} (the host resolves through the Amazon"
    assert f"sdk global  calls to sts.amazonaws.com: {where}" in text


def test_custom_resolver_sends_global_calls_to_us_east_1(
    tmp_path: Path, sts: Sts, imds: ImdsServer
) -> None:

    with Dnsmasq(HEALTHY, listen=CORPORATE_DNS, ttl=30, local_domains=["amazonaws.com"]) as corp:
        cfg = config(tmp_path, sts, corp, imds, regions=[REGION])
        env = environment(imds, AWS_DEFAULT_REGION=None)
        run = check(cfg, env)
        text = check(cfg, env, as_json=False).stdout
    sdk = run.doc["sdk"]
    assert (sdk["global_served_in"], sdk["global_served_why"]) == ("us-east-1", "custom_resolver")
    codes = run.codes()
    assert codes["SDK_GLOBAL_SERVED_US_EAST_1"] == "critical"
    assert "SDK_USES_GLOBAL_ENDPOINT" not in codes
    assert run.code == 1
    assert "calls to sts.amazonaws.com: AWS serves them in us-east-1 (a resolver other than" in text
    # A regional SDK is not warned, but check still says where a global call would go.
    with Dnsmasq(HEALTHY, listen=CORPORATE_DNS, ttl=30, local_domains=["amazonaws.com"]) as corp:
        regional = check(config(tmp_path, sts, corp, imds, regions=[REGION]), environment(imds))
    assert regional.doc["sdk"]["mode"] == "regional"
    assert regional.doc["sdk"]["global_served_in"] == "us-east-1"
    assert "SDK_GLOBAL_SERVED_US_EAST_1" not in regional.codes()


def test_unknowable_serving_is_not_called_us_east_1(
    tmp_path: Path, sts: Sts, imds: ImdsServer, healthy_dns: Dnsmasq
) -> None:
    """IMDS off and no vpc_cidrs: the VPC's own resolver cannot be recognised, so where
    AWS serves a global call is unknown, not a critical us-east-1 dependency. Inside a
    Kubernetes pod CoreDNS answers and may forward to the Amazon DNS: unknown too."""
    cfg = config(tmp_path, sts, healthy_dns, None, regions=[REGION])
    run = check(cfg, environment(None, AWS_DEFAULT_REGION=None, **STATIC_CREDS))
    sdk = run.doc["sdk"]
    assert (sdk["global_served_in"], sdk["global_served_why"]) == (None, "vpc_unknown")
    codes = run.codes()
    assert "SDK_GLOBAL_SERVED_US_EAST_1" not in codes
    assert codes["SDK_USES_GLOBAL_ENDPOINT"] == "warning"
    with Dnsmasq(HEALTHY, listen=CORPORATE_DNS, ttl=30, local_domains=["amazonaws.com"]) as corp:
        cfg = config(tmp_path, sts, corp, imds, regions=[REGION])
        pod = environment(imds, AWS_DEFAULT_REGION=None, KUBERNETES_SERVICE_HOST="10.100.0.1")
        run = check(cfg, pod)
    sdk = run.doc["sdk"]
    assert (sdk["global_served_in"], sdk["global_served_why"]) == (None, "cluster_dns")
    assert "SDK_GLOBAL_SERVED_US_EAST_1" not in run.codes()
