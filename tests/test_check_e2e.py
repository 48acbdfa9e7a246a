"""`sts-agent check` as a user runs it, against real parts on loopback.

dnsmasq answers the STS names, moto's STS server answers signed calls behind
TLS from a throwaway CA, and the project's IMDSv2 server hands out the region,
the VPC CIDR and instance-profile credentials that botocore's own chain picks
up.  The agent runs as a subprocess with a config file, exactly as an operator
would run it, and only its output and exit code are judged.

Loopback stands in for the VPC: 127.10.0.0/16 is the VPC, 127.10.0.2 its
Amazon DNS, 127.10.138.148 and 127.10.139.20 the endpoint's ENIs, and
127.20.0.10 a "public" STS front door.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from agent.simulate.imds_server import ImdsServer
from tests.support import check_run
from tests.support.check_run import (
    AMAZON_DNS,
    ENIS,
    GLOBAL,
    IMPOSTOR,
    PUBLIC,
    REGION,
    REGIONAL,
    STATIC_CREDS,
    VPC_CIDR,
    VPCE_NAME,
    WARNING_OR_WORSE,
    Sts,
    check,
    closed_port,
    config,
    dns,
    environment,
    finish,
    no_secrets,
    start,
)
from tests.support.dnsmasq import Dnsmasq
from tests.support.phases import JSON_ROUNDING, PHASES, assert_phases_add_up

# The real parts, as module-scoped fixtures shared by the check end-to-end tests.
sts, imds, healthy_dns = check_run.sts, check_run.imds, check_run.healthy_dns


# -- the healthy private path ----------------------------------------------------------
def test_healthy_private_path(
    tmp_path: Path, sts: Sts, imds: ImdsServer, healthy_dns: Dnsmasq
) -> None:
    run = check(config(tmp_path, sts, healthy_dns, imds), environment(imds))
    assert run.code == 0, run.stdout + run.stderr
    doc = run.doc
    assert doc["region"] == REGION
    assert doc["imds"]["available"] is True
    assert doc["vpc_cidrs"] == [VPC_CIDR]  # from IMDS: nothing configured
    assert doc["resolvers"][0]["amazon_provided"] is True

    regional = run.endpoint(REGIONAL)
    assert regional["path"] == "vpce"
    assert regional["expectation_met"] is True
    assert {a["address"]: a["class"] for a in regional["addresses"]} == dict.fromkeys(ENIS, "vpce")
    assert sorted(p["address"] for p in regional["probes"]) == sorted(ENIS)
    for p in regional["probes"]:
        assert p["success"] is True, p
        assert p["error"] is None
        assert p["account"] == sts.account
        assert p["signed"] is True  # instance-profile credentials, through botocore's chain
        assert all(p["phases"][k] > 0 for k in PHASES), p
        assert_phases_add_up(p["phases"], JSON_ROUNDING)

    glob = run.endpoint(GLOBAL)
    assert (glob["path"], glob["expectation_met"]) == ("public", True)
    assert [p["address"] for p in glob["probes"]] == [PUBLIC]
    assert glob["probes"][0]["success"] is True

    assert doc["sdk"]["mode"] == "regional"
    assert not [f for f in doc["findings"] if f["severity"] in WARNING_OR_WORSE]
    no_secrets(run)


def test_healthy_text_report(
    tmp_path: Path, sts: Sts, imds: ImdsServer, healthy_dns: Dnsmasq
) -> None:
    run = check(config(tmp_path, sts, healthy_dns, imds), environment(imds), as_json=False)
    assert run.code == 0, run.stdout + run.stderr
    text = run.stdout
    assert f"{REGIONAL}  [regional]  path VPCE, expected vpce: OK" in text
    assert f"{GLOBAL}  [global]  path PUBLIC, expected public: OK" in text
    assert f"Server: {AMAZON_DNS}:{healthy_dns.port}" in text
    for addr in ENIS:
        assert f"Address: {addr}" in text
    assert f"account {sts.account}" in text
    lines = text.splitlines()
    for addr in ENIS:  # every phase, in the record's order, on each probe's line
        (line,) = [ln for ln in lines if ln.strip().startswith(f"{addr} ") and " OK " in ln]
        assert re.search(r"  ".join(rf"{p} +\d+\.\dms" for p in PHASES), line), line
    assert "FAIL" not in text
    assert "No findings" in text
    no_secrets(run)


def test_json_contract(tmp_path: Path, sts: Sts, imds: ImdsServer) -> None:
    """The documented keys and types; a public answer also gives findings to look at."""
    with dns({REGIONAL: [PUBLIC], GLOBAL: [PUBLIC]}) as d:
        run = check(config(tmp_path, sts, d, imds), environment(imds))
    doc = run.doc
    assert isinstance(doc["region"], str)
    assert isinstance(doc["sdk"], dict) and isinstance(doc["sdk"]["mode"], str)
    assert isinstance(doc["endpoints"], list) and doc["endpoints"]
    assert isinstance(doc["findings"], list) and doc["findings"]
    for ep in doc["endpoints"]:
        assert isinstance(ep["hostname"], str)
        assert ep["path"] in ("vpce", "private", "public", "mixed", "unresolved")
        assert isinstance(ep["dns"], list) and ep["dns"]
        for lk in ep["dns"]:
            assert {"resolver", "addresses", "error", "queries"} <= set(lk)
        assert isinstance(ep["probes"], list) and ep["probes"]
        for p in ep["probes"]:
            assert isinstance(p["address"], str)
            assert isinstance(p["success"], bool)
            assert p["error"] is None or isinstance(p["error"], str)
            assert tuple(p["phases"]) == PHASES
            assert all(isinstance(v, float) for v in p["phases"].values())
    for f in doc["findings"]:
        assert isinstance(f["code"], str) and f["code"].isupper()
        assert f["severity"] in ("info", "warning", "critical")
        assert isinstance(f["message"], str) and f["message"]


# -- wrong paths --------------------------------------------------------------------------
def test_public_answer_where_vpce_is_expected(tmp_path: Path, sts: Sts, imds: ImdsServer) -> None:
    """Private DNS switched off: the regional name answers with the public front door."""
    with dns({REGIONAL: [PUBLIC], GLOBAL: [PUBLIC]}) as d:
        cfg = config(tmp_path, sts, d, imds)
        run = check(cfg, environment(imds))
        text = check(cfg, environment(imds), as_json=False)
    assert run.code == 1
    regional = run.endpoint(REGIONAL)
    assert (regional["path"], regional["expectation_met"]) == ("public", False)
    assert regional["probes"][0]["success"] is True  # STS works, just not privately
    assert run.codes()["PRIVATE_DNS_NOT_RESOLVING"] == "critical"
    (f,) = [f for f in run.doc["findings"] if f["code"] == "PRIVATE_DNS_NOT_RESOLVING"]
    assert f["endpoint"] == REGIONAL
    assert text.code == 1
    assert "path PUBLIC, expected vpce: NOT MET" in text.stdout
    assert "PRIVATE_DNS_NOT_RESOLVING" in text.stdout


def test_configured_vpc_cidrs_decide_what_counts_as_vpce(
    tmp_path: Path, sts: Sts, imds: ImdsServer, healthy_dns: Dnsmasq
) -> None:
    """Only the first ENI's /24 is "this VPC": the other ENI is then not a vpce address."""
    cfg = config(tmp_path, sts, healthy_dns, imds, vpc_cidrs=["127.10.138.0/24"])
    run = check(cfg, environment(imds))
    assert run.doc["vpc_cidrs"] == ["127.10.138.0/24"]
    assert run.doc["imds"]["vpc_cidrs"] == [VPC_CIDR]
    regional = run.endpoint(REGIONAL)
    classes = {a["address"]: a["class"] for a in regional["addresses"]}
    assert classes == {ENIS[0]: "vpce", ENIS[1]: "public"}  # loopback is in no private range
    assert regional["path"] == "mixed"
    assert run.codes()["ENDPOINT_PATH_UNEXPECTED"] == "warning"
    assert run.code == 1


def test_nxdomain_is_unresolved(tmp_path: Path, sts: Sts, imds: ImdsServer) -> None:
    with dns({GLOBAL: [PUBLIC]}) as d:
        run = check(config(tmp_path, sts, d, imds), environment(imds))
    assert run.code == 1
    regional = run.endpoint(REGIONAL)
    assert regional["path"] == "unresolved"
    assert regional["dns"][0]["error"] == "nxdomain"
    assert regional["dns"][0]["queries"][0]["rcode"] == "NXDOMAIN"
    assert regional["probes"] == []
    assert run.codes()["ENDPOINT_UNRESOLVED"] == "critical"
    (f,) = [f for f in run.doc["findings"] if f["code"] == "ENDPOINT_UNRESOLVED"]
    assert f["endpoint"] == REGIONAL and "nxdomain" in f["message"]
    assert run.endpoint(GLOBAL)["path"] == "public"  # the other name still resolves


def test_silent_resolver_is_unresolved_with_timeout(
    tmp_path: Path, sts: Sts, imds: ImdsServer
) -> None:
    silent = f"127.0.0.1:{closed_port(kind=socket.SOCK_DGRAM)}"
    run = check(config(tmp_path, sts, silent, imds, timeout=0.5), environment(imds))
    assert run.code == 1
    for host in (REGIONAL, GLOBAL):
        ep = run.endpoint(host)
        assert ep["path"] == "unresolved"
        assert ep["dns"][0]["error"] == "timeout"
        assert ep["probes"] == []
    unresolved = [f for f in run.doc["findings"] if f["code"] == "ENDPOINT_UNRESOLVED"]
    assert {f["endpoint"] for f in unresolved} == {REGIONAL, GLOBAL}
    assert all("timeout" in f["message"] for f in unresolved)


def test_silent_first_nameserver_in_resolv_conf_is_named(
    tmp_path: Path, sts: Sts, imds: ImdsServer
) -> None:
    """resolv.conf lists a nameserver that never answers before the VPC's DNS: every name
    still resolves (through the second), so only RESOLVER_NOT_ANSWERING shows the wait
    every program pays first.  Both listen on port 53, as resolv.conf allows no other."""
    silent_ip = "127.10.0.9"
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent,
        Dnsmasq(check_run.HEALTHY, listen=AMAZON_DNS, port=53, ttl=30) as vpc_dns,
    ):
        silent.bind((silent_ip, 53))  # bound and never read: queries go unanswered
        resolv = tmp_path / "resolv.conf"
        resolv.write_text(f"nameserver {silent_ip}\nnameserver {vpc_dns.address}\n")
        cfg = config(tmp_path, sts, vpc_dns, imds, timeout=1.0)
        # The system's resolvers, not configured ones (a top-level key, before the tables).
        kept = [ln for ln in cfg.read_text().splitlines() if not ln.startswith("resolvers")]
        cfg.write_text("\n".join([f'resolv_conf = "{resolv}"', *kept]) + "\n")
        run = check(cfg, environment(imds))
    assert run.code == 1, run.stdout + run.stderr
    assert run.endpoint(REGIONAL)["path"] == "vpce"
    (f,) = [f for f in run.doc["findings"] if f["code"] == "RESOLVER_NOT_ANSWERING"]
    assert f["severity"] == "warning"
    assert f["message"].startswith(f"{silent_ip}, the first nameserver in resolv.conf")
    assert f"while {AMAZON_DNS} did" in f["message"]


def test_certificate_for_another_name(tmp_path: Path, sts: Sts, imds: ImdsServer) -> None:
    with dns({REGIONAL: [IMPOSTOR], GLOBAL: [PUBLIC]}) as d:
        run = check(config(tmp_path, sts, d, imds), environment(imds))
    assert run.code == 1
    regional = run.endpoint(REGIONAL)
    assert regional["path"] == "vpce"  # the address looks right; only TLS can tell
    (p,) = regional["probes"]
    assert (p["success"], p["error"]) == (False, "tls_hostname_mismatch")
    assert p["phases"]["connect"] is not None and p["phases"]["tls"] is None
    codes = run.codes()
    assert codes["TLS_HOSTNAME_MISMATCH"] == "critical"
    assert "STS_CALL_FAILED" not in codes


# -- the SDK's view --------------------------------------------------------------------------
PROXY_PASSWORD = "Pr0xyPassw0rdEXAMPLE"
PROXY_URL = f"http://ops:{PROXY_PASSWORD}@127.0.0.1:{closed_port()}"

SDK_CASES: dict[str, tuple[dict[str, str | None], str, str, set[str]]] = {
    # name: (environment changes, mode, endpoint host, SDK findings at warning)
    "default_region": ({}, "regional", REGIONAL, set()),
    "no_region": (
        {"AWS_DEFAULT_REGION": None},
        "global",
        GLOBAL,
        {"SDK_USES_GLOBAL_ENDPOINT", "SDK_REGION_MISSING"},
    ),
    "aws_region_only": (
        {"AWS_DEFAULT_REGION": None, "AWS_REGION": REGION},
        "global",
        GLOBAL,
        {"SDK_USES_GLOBAL_ENDPOINT", "SDK_REGION_MISSING"},
    ),
    "legacy_in_legacy_region": (
        {"AWS_STS_REGIONAL_ENDPOINTS": "legacy"},
        "global",
        GLOBAL,
        {"SDK_USES_GLOBAL_ENDPOINT"},
    ),
    # Regional even in legacy mode there, but not the instance's region (IMDS: us-east-2).
    "legacy_elsewhere": (
        {"AWS_STS_REGIONAL_ENDPOINTS": "legacy", "AWS_DEFAULT_REGION": "af-south-1"},
        "regional",
        "sts.af-south-1.amazonaws.com",
        # regions = [us-east-2] in the config: the region boto3 uses is not watched either
        {"SDK_REGION_NOT_HOST_REGION", "SDK_ENDPOINT_NOT_WATCHED"},
    ),
    # The FIPS, dual-stack and overridden names are not watched by default: warned.
    "fips": (
        {"AWS_USE_FIPS_ENDPOINT": "true"},
        "fips",
        f"sts-fips.{REGION}.amazonaws.com",
        {"SDK_ENDPOINT_NOT_WATCHED"},
    ),
    "dualstack": (
        {"AWS_USE_DUALSTACK_ENDPOINT": "true"},
        "dualstack",
        f"sts.{REGION}.api.aws",
        {"SDK_ENDPOINT_NOT_WATCHED"},
    ),
    "endpoint_url_sts": (
        {"AWS_ENDPOINT_URL_STS": f"https://{VPCE_NAME}"},
        "custom",
        VPCE_NAME,
        {"SDK_ENDPOINT_NOT_WATCHED"},
    ),
    # boto3 here could verify nothing; the agent's probes still run on its configured bundle.
    "ca_bundle_missing": (
        {"AWS_CA_BUNDLE": "/nonexistent/ca.pem"},
        "regional",
        REGIONAL,
        {"SDK_CA_BUNDLE_UNUSABLE"},
    ),
    # A proxy nobody listens on: the agent's own probes must not use it.
    "https_proxy": ({"HTTPS_PROXY": PROXY_URL}, "regional", REGIONAL, {"SDK_USES_PROXY"}),
    "no_proxy_exempts_sts": (
        {"https_proxy": PROXY_URL, "no_proxy": "169.254.169.254,.amazonaws.com"},
        "regional",
        REGIONAL,
        set(),
    ),
}


def test_sdk_view_for_each_setup(
    tmp_path: Path, sts: Sts, imds: ImdsServer, healthy_dns: Dnsmasq
) -> None:
    """One agent per environment, run side by side; everything but the SDK set-up is healthy."""
    cfg = config(tmp_path, sts, healthy_dns, imds, regions=[REGION])
    procs = {name: start(cfg, environment(imds, **env)) for name, (env, *_) in SDK_CASES.items()}
    runs = {name: finish(p) for name, p in procs.items()}
    sdk_codes = {
        "SDK_USES_GLOBAL_ENDPOINT",
        "SDK_REGION_MISSING",
        "SDK_ENDPOINT_OVERRIDE",
        "SDK_USES_PROXY",
        "SDK_REGION_NOT_HOST_REGION",
        "SDK_ENDPOINT_NOT_WATCHED",
        "SDK_CA_BUNDLE_UNUSABLE",
    }
    for name, (_, mode, host, expected) in SDK_CASES.items():
        run = runs[name]
        sdk = run.doc["sdk"]
        assert sdk["mode"] == mode, (name, sdk)
        assert sdk["endpoint_url"] == f"https://{host}", (name, sdk)
        codes = run.codes()
        warned = {c for c in codes if c in sdk_codes and codes[c] in WARNING_OR_WORSE}
        assert warned == expected, (name, codes)
        assert run.code == (1 if expected else 0), (name, run.doc["findings"])
        assert run.doc["region"] == REGION and run.doc["region_source"] == "config"
    assert "aws_region_only" in runs["aws_region_only"].doc["sdk"]["reasons"]
    missing = runs["ca_bundle_missing"].doc
    assert missing["sdk"]["ca_bundle_problem"] == "/nonexistent/ca.pem: file not found"
    assert all(p["success"] for ep in missing["endpoints"] for p in ep["probes"])
    assert "legacy_mode" in runs["legacy_in_legacy_region"].doc["sdk"]["reasons"]
    override = runs["endpoint_url_sts"]
    assert "endpoint_url_sts_env" in override.doc["sdk"]["reasons"]
    assert override.codes()["SDK_ENDPOINT_OVERRIDE"] == "info"
    proxied = runs["https_proxy"]
    assert proxied.doc["sdk"]["proxy"] == PROXY_URL.replace(f"ops:{PROXY_PASSWORD}@", "")
    assert "https_proxy" in proxied.doc["sdk"]["reasons"]
    assert PROXY_PASSWORD not in proxied.stdout + proxied.stderr
    exempt = runs["no_proxy_exempts_sts"].doc["sdk"]
    assert exempt["proxy"] is None and "no_proxy_bypass" in exempt["reasons"]


# -- IMDS trouble ----------------------------------------------------------------------------
def test_imds_unreachable_falls_back_to_configured_values(
    tmp_path: Path, sts: Sts, healthy_dns: Dnsmasq
) -> None:
    """Closed port, a hop-limit style silence, and a refused token, side by side."""
    down = f"127.0.0.1:{closed_port()}"
    with (
        ImdsServer(vpc_cidrs=(VPC_CIDR,)) as silent,
        ImdsServer(vpc_cidrs=(VPC_CIDR,)) as refusing,
    ):
        silent.fault = "timeout"
        refusing.fault = "unauthorized"
        cases: dict[str, ImdsServer | str] = {
            "network": down,
            "timeout": silent,
            "unauthorized": refusing,
        }
        procs = {}
        for reason, server in cases.items():
            cfg = config(
                tmp_path,
                sts,
                healthy_dns,
                server,
                name=f"{reason}.toml",
                regions=[REGION],
                vpc_cidrs=[VPC_CIDR],
                imds__timeout=0.5,
            )
            # Static credentials, so only discovery depends on IMDS here.
            env = environment(f"http://{down}/", **STATIC_CREDS)
            procs[reason] = start(cfg, env)
        runs = {reason: finish(p) for reason, p in procs.items()}
    for reason, run in runs.items():
        doc = run.doc
        assert doc["imds"]["available"] is False
        assert doc["imds"]["reason"] == reason, doc["imds"]
        assert run.codes()["IMDS_UNREACHABLE"] == "warning"
        assert (doc["region"], doc["region_source"]) == (REGION, "config")
        assert run.endpoint(REGIONAL)["path"] == "vpce"  # judged by the configured CIDR
        assert all(p["success"] for p in run.endpoint(REGIONAL)["probes"])
        assert run.code == 1
    assert "hop limit" in runs["timeout"].doc["imds"]["detail"]


def test_imds_down_and_no_region_anywhere(tmp_path: Path, sts: Sts, healthy_dns: Dnsmasq) -> None:
    down = f"127.0.0.1:{closed_port()}"
    cfg = config(tmp_path, sts, healthy_dns, down, imds__timeout=0.5)
    run = check(cfg, environment(f"http://{down}/", AWS_DEFAULT_REGION=None, **STATIC_CREDS))
    doc = run.doc
    assert (doc["region"], doc["region_source"]) == (None, "none")
    assert {"IMDS_UNREACHABLE", "REGION_UNKNOWN"} <= set(run.codes())
    assert [e["hostname"] for e in doc["endpoints"]] == [GLOBAL]
    assert run.code == 1


# -- credentials --------------------------------------------------------------------------------
def test_instance_without_a_profile_reports_missing_credentials(
    tmp_path: Path, sts: Sts, healthy_dns: Dnsmasq
) -> None:

    with ImdsServer(region=REGION, vpc_cidrs=(VPC_CIDR,), role="") as bare:
        run = check(config(tmp_path, sts, healthy_dns, bare), environment(bare))
    assert run.code == 1
    assert run.doc["imds"]["available"] is True
    for host in (REGIONAL, GLOBAL):
        probes = run.endpoint(host)["probes"]
        assert probes
        for p in probes:
            assert (p["success"], p["error"], p["signed"]) == (False, "credentials_missing", False)
            assert all(p["phases"][k] > 0 for k in PHASES), p
        assert_phases_add_up(p["phases"], JSON_ROUNDING)
    assert run.codes()["CREDENTIALS_MISSING"] == "warning"
    assert "STS_CALL_FAILED" not in run.codes()


def test_static_credentials_sign_too(tmp_path: Path, sts: Sts, healthy_dns: Dnsmasq) -> None:
    """No IMDS at all: configured region and CIDRs, environment credentials."""
    cfg = config(tmp_path, sts, healthy_dns, None, regions=[REGION], vpc_cidrs=[VPC_CIDR])
    run = check(cfg, environment(None, **STATIC_CREDS))
    assert run.code == 0, run.doc["findings"]
    assert run.doc["imds"]["reason"] == "disabled"
    assert run.codes() == {"IMDS_DISABLED": "info"}
    probes = run.endpoint(REGIONAL)["probes"] + run.endpoint(GLOBAL)["probes"]
    assert len(probes) == 3
    assert all(p["success"] and p["signed"] and p["account"] == sts.account for p in probes)
    no_secrets(run)


def test_a_profile_that_does_not_exist_is_named_not_blamed_on_the_instance(
    tmp_path: Path, sts: Sts, healthy_dns: Dnsmasq
) -> None:
    """Keys in the environment, but AWS_PROFILE names no profile: botocore's chain stops at
    the profile (boto3 fails too), so the finding says so instead of "attach a profile"."""
    cfg = config(tmp_path, sts, healthy_dns, None, regions=[REGION], vpc_cidrs=[VPC_CIDR])
    aws_config = tmp_path / "aws-config"
    aws_config.write_text("[default]\nregion = us-east-2\n")
    env = environment(None, **STATIC_CREDS, AWS_PROFILE="nosuch", AWS_CONFIG_FILE=str(aws_config))
    run = check(cfg, env)
    assert run.code == 1, run.stdout + run.stderr
    missing = [f for f in run.doc["findings"] if f["code"] == "CREDENTIALS_MISSING"]
    assert {f["endpoint"] for f in missing} == {REGIONAL, GLOBAL}
    for f in missing:
        assert "ProfileNotFound" in f["message"] and "nosuch" in f["message"], f
        assert "AWS_PROFILE" in f["advice"] and "instance profile" not in f["advice"], f
    no_secrets(run)


# -- exit code 2 ---------------------------------------------------------------------------------
def test_configuration_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    bad_region = tmp_path / "region.toml"
    bad_region.write_text('regions = ["us-east-9"]\n')
    bad_key = tmp_path / "key.toml"
    bad_key.write_text("portt = 443\n")
    no_resolv = tmp_path / "resolv.toml"
    no_resolv.write_text(f'resolv_conf = "{tmp_path / "missing.conf"}"\n[imds]\nenabled = false\n')
    cases = {
        "regions": bad_region,
        "portt": bad_key,
        "resolv_conf": no_resolv,
        "config": tmp_path / "nope.toml",
    }
    env = environment(None, **STATIC_CREDS)
    procs = {field: start(path, env) for field, path in cases.items()}
    for field, proc in procs.items():
        run = finish(proc)
        assert run.code == 2, (field, run)
        assert run.stdout == ""
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, (field, run.stderr)
        assert field in lines[0]
