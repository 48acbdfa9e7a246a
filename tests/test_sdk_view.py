"""SDK view against the installed botocore: every set-up the design lists.

Nothing is mocked: each case builds real config files and asks botocore's
resolver through sdk_view().  Environments are explicit mappings that point
the config file at a temp file, so the developer's ~/.aws never leaks in.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.args import LEGACY_GLOBAL_STS_REGIONS
from botocore.utils import get_environ_proxies

from agent.discovery.sdk import sdk_view_in_child
from agent.discovery.sdk_view import REASONS, RELEVANT_ENV, classify_url, proxy_for, sdk_view
from agent.results import SdkView

# The list in the design notes; checked against botocore below.
LEGACY_REGIONS = (
    "ap-northeast-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ca-central-1",
    "eu-central-1",
    "eu-north-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
)

VPCE_URL = "https://vpce-0abc123-xyz.sts.eu-west-1.vpce.amazonaws.com"


def view(tmp_path: Path, config: str = "", **env: str) -> SdkView:
    cfg = tmp_path / "config"
    cfg.write_text(config)
    base = {"AWS_CONFIG_FILE": str(cfg), "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    return sdk_view({**base, **env})


def assert_known_reasons(v: SdkView) -> None:
    assert set(v.reasons) <= set(REASONS), v.reasons


def test_design_legacy_list_matches_installed_botocore() -> None:
    assert set(LEGACY_REGIONS) == set(LEGACY_GLOBAL_STS_REGIONS) - {"aws-global"}


def test_no_region_uses_the_global_endpoint(tmp_path: Path) -> None:
    v = view(tmp_path)
    assert (v.mode, v.endpoint_url, v.region) == (
        "global",
        "https://sts.amazonaws.com",
        "aws-global",
    )
    assert v.reasons == ("no_region",)
    assert v.error is None


def test_aws_region_alone_is_ignored_by_botocore(tmp_path: Path) -> None:
    v = view(tmp_path, AWS_REGION="eu-west-1")
    assert (v.mode, v.endpoint_url) == ("global", "https://sts.amazonaws.com")
    assert v.reasons == ("no_region", "aws_region_only")


def test_aws_default_region_gives_the_regional_endpoint(tmp_path: Path) -> None:
    v = view(tmp_path, AWS_DEFAULT_REGION="eu-west-1")
    assert (v.mode, v.endpoint_url, v.region) == (
        "regional",
        "https://sts.eu-west-1.amazonaws.com",
        "eu-west-1",
    )
    assert v.reasons == ()


def test_aws_region_that_disagrees_with_the_used_region_is_flagged(tmp_path: Path) -> None:
    v = view(tmp_path, AWS_DEFAULT_REGION="eu-west-1", AWS_REGION="us-west-2")
    assert v.region == "eu-west-1"
    assert "aws_region_ignored" in v.reasons


def test_region_from_the_config_file_profile(tmp_path: Path) -> None:
    v = view(tmp_path, "[default]\nregion = ap-southeast-2\n")
    assert (v.mode, v.endpoint_url) == ("regional", "https://sts.ap-southeast-2.amazonaws.com")


@pytest.mark.parametrize("region", LEGACY_REGIONS)
def test_legacy_mode_sends_legacy_regions_to_global(tmp_path: Path, region: str) -> None:
    v = view(tmp_path, AWS_DEFAULT_REGION=region, AWS_STS_REGIONAL_ENDPOINTS="legacy")
    assert (v.mode, v.endpoint_url, v.region) == ("global", "https://sts.amazonaws.com", region)
    assert v.reasons == ("legacy_mode",)


def test_legacy_mode_from_the_config_file(tmp_path: Path) -> None:
    v = view(tmp_path, "[default]\nregion = us-east-1\nsts_regional_endpoints = legacy\n")
    assert (v.mode, v.reasons) == ("global", ("legacy_mode",))


@pytest.mark.parametrize("region", ["ap-east-1", "eu-south-1", "me-central-1"])
def test_legacy_mode_keeps_other_regions_regional(tmp_path: Path, region: str) -> None:
    v = view(tmp_path, AWS_DEFAULT_REGION=region, AWS_STS_REGIONAL_ENDPOINTS="legacy")
    assert (v.mode, v.endpoint_url) == ("regional", f"https://sts.{region}.amazonaws.com")
    assert "legacy_mode" not in v.reasons


def test_fips(tmp_path: Path) -> None:
    v = view(tmp_path, AWS_DEFAULT_REGION="us-east-1", AWS_USE_FIPS_ENDPOINT="true")
    assert (v.mode, v.endpoint_url) == ("fips", "https://sts-fips.us-east-1.amazonaws.com")
    assert v.reasons == ("fips_enabled",)


def test_dualstack(tmp_path: Path) -> None:
    v = view(tmp_path, AWS_DEFAULT_REGION="eu-west-1", AWS_USE_DUALSTACK_ENDPOINT="true")
    assert (v.mode, v.endpoint_url) == ("dualstack", "https://sts.eu-west-1.api.aws")
    assert v.reasons == ("dualstack_enabled",)


def test_fips_and_dualstack_together_count_as_fips(tmp_path: Path) -> None:
    v = view(
        tmp_path,
        AWS_DEFAULT_REGION="eu-west-1",
        AWS_USE_DUALSTACK_ENDPOINT="true",
        AWS_USE_FIPS_ENDPOINT="true",
    )
    assert (v.mode, v.endpoint_url) == ("fips", "https://sts-fips.eu-west-1.api.aws")
    assert set(v.reasons) == {"fips_enabled", "dualstack_enabled"}


def test_endpoint_url_sts_wins_over_endpoint_url(tmp_path: Path) -> None:
    v = view(
        tmp_path,
        AWS_DEFAULT_REGION="eu-west-1",
        AWS_ENDPOINT_URL_STS=VPCE_URL,
        AWS_ENDPOINT_URL="https://elsewhere.example",
    )
    assert (v.mode, v.endpoint_url) == ("custom", VPCE_URL)
    assert v.reasons == ("endpoint_url_override", "endpoint_url_sts_env")


def test_endpoint_url_for_all_services(tmp_path: Path) -> None:
    v = view(tmp_path, AWS_DEFAULT_REGION="eu-west-1", AWS_ENDPOINT_URL="http://127.0.0.1:4566")
    assert (v.mode, v.endpoint_url) == ("custom", "http://127.0.0.1:4566")
    assert v.reasons == ("endpoint_url_override", "endpoint_url_env")


SERVICES_CONFIG = f"""
[default]
region = eu-west-1
services = corp

[services corp]
sts =
  endpoint_url = {VPCE_URL}
"""

PROFILE_CONFIG = """
[profile dev]
region = eu-west-2
endpoint_url = https://proxy.internal.example
"""


def test_config_services_section(tmp_path: Path) -> None:
    v = view(tmp_path, SERVICES_CONFIG)
    assert (v.mode, v.endpoint_url) == ("custom", VPCE_URL)
    assert v.reasons == ("endpoint_url_override", "endpoint_url_services_section")


def test_environment_wins_over_services_section(tmp_path: Path) -> None:
    v = view(tmp_path, SERVICES_CONFIG, AWS_ENDPOINT_URL="https://env.example")
    assert v.endpoint_url == "https://env.example"
    assert "endpoint_url_env" in v.reasons


def test_profile_endpoint_url(tmp_path: Path) -> None:
    v = view(tmp_path, PROFILE_CONFIG, AWS_PROFILE="dev")
    assert (v.mode, v.endpoint_url, v.region) == (
        "custom",
        "https://proxy.internal.example",
        "eu-west-2",
    )
    assert v.reasons == ("endpoint_url_override", "endpoint_url_profile")


def test_services_section_wins_over_profile_endpoint_url(tmp_path: Path) -> None:
    both = SERVICES_CONFIG.replace(
        "services = corp", "services = corp\nendpoint_url = https://p.ex"
    )
    v = view(tmp_path, both)
    assert v.endpoint_url == VPCE_URL


@pytest.mark.parametrize("config", [SERVICES_CONFIG, PROFILE_CONFIG])
def test_ignore_configured_endpoint_urls(tmp_path: Path, config: str) -> None:
    v = view(
        tmp_path,
        config,
        AWS_PROFILE="dev" if "profile dev" in config else "default",
        AWS_DEFAULT_REGION="eu-west-1",
        AWS_ENDPOINT_URL_STS=VPCE_URL,
        AWS_ENDPOINT_URL="https://env.example",
        AWS_IGNORE_CONFIGURED_ENDPOINT_URLS="true",
    )
    assert (v.mode, v.endpoint_url) == ("regional", "https://sts.eu-west-1.amazonaws.com")
    assert v.reasons == ("ignore_configured_endpoint_urls",)


def test_ignore_configured_endpoint_urls_from_the_config_file(tmp_path: Path) -> None:
    cfg = SERVICES_CONFIG.replace(
        "region = eu-west-1", "region = eu-west-1\nignore_configured_endpoint_urls = true"
    )
    v = view(tmp_path, cfg)
    assert v.mode == "regional"
    assert "endpoint_url_override" not in v.reasons


def test_missing_profile_is_an_error_not_a_guess(tmp_path: Path) -> None:
    v = view(tmp_path, AWS_PROFILE="nosuchprofile")
    assert (v.mode, v.endpoint_url) == ("unknown", None)
    assert v.error is not None and "nosuchprofile" in v.error and "\n" not in v.error


def test_invalid_setting_is_a_one_line_error(tmp_path: Path) -> None:
    v = view(tmp_path, AWS_DEFAULT_REGION="eu-west-1", AWS_STS_REGIONAL_ENDPOINTS="sometimes")
    assert v.mode == "unknown"
    assert v.error is not None and "sometimes" in v.error and "\n" not in v.error


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    v = sdk_view({"AWS_CONFIG_FILE": str(tmp_path / "nope"), "AWS_DEFAULT_REGION": "eu-west-1"})
    assert v.mode == "regional"
    assert "config_file_missing" in v.reasons


def test_reads_os_environ_by_default_without_changing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ca-central-1")
    before = dict(os.environ)
    v = sdk_view()
    assert (v.mode, v.endpoint_url) == ("regional", "https://sts.ca-central-1.amazonaws.com")
    assert dict(os.environ) == before


def test_mapping_is_not_mixed_with_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    v = sdk_view({"AWS_CONFIG_FILE": os.devnull})
    assert v.mode == "global"


def test_concurrent_views_do_not_leak_into_each_other() -> None:
    """Other probe threads use botocore at the same time; answers must stay per call."""
    regions = ["eu-west-1", "us-east-2", "ap-south-1", "sa-east-1"]
    wrong: list[str] = []

    def worker(region: str) -> None:
        for _ in range(5):
            v = sdk_view({"AWS_CONFIG_FILE": os.devnull, "AWS_DEFAULT_REGION": region})
            if v.endpoint_url != f"https://sts.{region}.amazonaws.com":
                wrong.append(f"{region}: {v.endpoint_url}")

    threads = [threading.Thread(target=worker, args=(r,)) for r in regions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_secrets_in_the_mapping_never_reach_the_result(tmp_path: Path) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRETzz"
    v = view(
        tmp_path,
        AWS_DEFAULT_REGION="eu-west-1",
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_SESSION_TOKEN=secret,
    )
    assert v.mode == "regional"
    assert secret not in repr(v)
    assert not {n for n in RELEVANT_ENV if "SECRET" in n or "TOKEN" in n or "ACCESS_KEY" in n}


@pytest.fixture
def silent_imds() -> Iterator[socket.socket]:
    """A loopback listener standing in for IMDS; it accepts nothing by itself."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def test_defaults_mode_auto_never_contacts_imds(
    silent_imds: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With IMDS allowed, plain botocore would connect here to learn the region.
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    port = silent_imds.getsockname()[1]
    v = sdk_view(
        {
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_DEFAULTS_MODE": "auto",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{port}",
        }
    )
    assert v.mode == "regional"
    with pytest.raises(BlockingIOError):
        silent_imds.accept()


@pytest.mark.parametrize(
    ("url", "mode"),
    [
        ("https://sts.amazonaws.com", "global"),
        ("https://sts.amazonaws.com.cn", "global"),
        ("https://sts.us-gov-west-1.amazonaws.com", "regional"),
        ("https://sts.cn-north-1.amazonaws.com.cn", "regional"),
        ("https://sts-fips.us-east-2.amazonaws.com", "fips"),
        ("https://sts.cn-north-1.api.amazonwebservices.com.cn", "dualstack"),
        ("https://sts.eu-west-1.api.aws", "dualstack"),
        (VPCE_URL, "custom"),
        ("https://sts.eu-west-1.example.com", "custom"),
        ("http://localhost:4566", "custom"),
        ("https://sts.localhost", "custom"),
    ],
)
def test_classify_url(url: str, mode: str) -> None:
    assert classify_url(url) == mode


def test_reasons_are_documented(tmp_path: Path) -> None:
    for v in (
        view(tmp_path, AWS_REGION="eu-west-1"),
        view(tmp_path, SERVICES_CONFIG, AWS_USE_FIPS_ENDPOINT="true"),
        view(tmp_path, AWS_DEFAULT_REGION="eu-west-1", AWS_STS_REGIONAL_ENDPOINTS="legacy"),
    ):
        assert v.reasons
        assert_known_reasons(v)


# -- proxies: botocore sends an https endpoint through HTTPS_PROXY unless NO_PROXY matches
REGIONAL_URL = "https://sts.eu-west-1.amazonaws.com"


@pytest.mark.parametrize(
    ("env", "proxy", "reason"),
    [
        ({}, None, None),
        ({"HTTPS_PROXY": "http://proxy.corp:3128"}, "http://proxy.corp:3128", "https_proxy"),
        ({"https_proxy": "proxy.corp:3128"}, "http://proxy.corp:3128", "https_proxy"),
        # urllib's rule: lower case wins, and set-but-empty turns the proxy off
        ({"HTTPS_PROXY": "http://a:1", "https_proxy": "http://b:2"}, "http://b:2", "https_proxy"),
        ({"HTTPS_PROXY": "http://a:1", "https_proxy": ""}, None, None),
        ({"HTTP_PROXY": "http://a:1"}, None, None),  # http only: not used for https
        ({"HTTPS_PROXY": "http://[fd00::1]:3128"}, "http://[fd00::1]:3128", "https_proxy"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".amazonaws.com"}, None, "no_proxy_bypass"),
        (
            {"HTTPS_PROXY": "http://p:1", "no_proxy": "sts.eu-west-1.amazonaws.com"},
            None,
            "no_proxy_bypass",
        ),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None, "no_proxy_bypass"),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "s3.amazonaws.com"},
            "http://p:1",
            "https_proxy",
        ),
    ],
)
def test_proxy_choice_is_botocores(
    env: dict[str, str], proxy: str | None, reason: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert proxy_for(REGIONAL_URL, env) == (proxy, reason)
    # botocore's own choice, which reads os.environ, agrees.
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    chosen = get_environ_proxies(REGIONAL_URL).get("https")
    assert (chosen is None) == (proxy is None), chosen


def test_proxy_password_never_reaches_the_result(tmp_path: Path) -> None:
    v = view(
        tmp_path,
        AWS_DEFAULT_REGION="eu-west-1",
        HTTPS_PROXY="http://svc-user:hunter2EXAMPLE@proxy.corp:8080",
    )
    assert (v.endpoint_url, v.proxy) == (REGIONAL_URL, "http://proxy.corp:8080")
    assert "https_proxy" in v.reasons and "hunter2EXAMPLE" not in repr(v)
    assert_known_reasons(v)


def test_the_daemons_child_sees_the_proxy_variables(tmp_path: Path) -> None:
    """The daemon asks in a child; the proxy variables must cross with the AWS ones."""
    cfg = tmp_path / "config"
    cfg.write_text("")
    env = {
        "AWS_CONFIG_FILE": str(cfg),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "https_proxy": "http://proxy.corp:3128",
        "NO_PROXY": "169.254.169.254",
    }
    v = sdk_view_in_child(env)
    assert v.error is None, v.error
    assert (v.endpoint_url, v.proxy) == (REGIONAL_URL, "http://proxy.corp:3128")


def test_a_broken_child_gives_an_unknown_view_not_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'not json'\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    v = sdk_view_in_child({"AWS_DEFAULT_REGION": "eu-west-1"})
    assert (v.mode, v.endpoint_url, v.error) == ("unknown", None, "SDK view child failed: exited 3")
