"""Malformed configuration, through the real CLI and through `agent.config.build`.

A typo must never become a silent default: every bad value, from a file, the
environment or a flag, ends the command with exit 2 and exactly one line on
stderr naming the field (or the file) and the bad value.  `serve` must refuse
to start at all, so a broken rollout fails loudly instead of serving stale or
default settings.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent import cli
from agent.config import ConfigError, build
from agent.regions import known_regions
from testbed import ROOT
from testbed.agent_proc import agent_env
from testbed.ports import free_port
from tests.support.privileges import cli_as_nobody

EXIT_ERROR = 2
PREFIX = "sts-agent: config error: "
NOT_A_CERTIFICATE_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    + base64.b64encode(b"not a certificate").decode()
    + "\n-----END CERTIFICATE-----\n"
)


@dataclass(frozen=True)
class Case:
    """One bad configuration: what to write, and what the single error line must say.

    `needles` may contain ``{path}``, replaced by the config file's path.
    `kind` is "file" (write `text`), "missing" (no file) or "dir" (a directory).
    """

    name: str
    text: str | bytes
    field: str
    needles: tuple[str, ...]
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    kind: str = "file"


CASES = (
    Case("bad_toml_syntax", "interval = \n", "config", ("{path}", "invalid TOML", "line 1")),
    Case(
        "unknown_top_level_key",
        "intervall = 5\n",
        "intervall",
        ("unknown setting", "did you mean 'interval'?"),
    ),
    Case(
        "unknown_key_in_table",
        '[imds]\nadress = "10.1.2.3"\n',
        "imds.adress",
        ("unknown setting", "did you mean 'imds.address'?"),
    ),
    Case(
        "misspelt_table",
        "[endpoint]\nregional = true\n",
        "endpoint",
        ("unknown setting", "did you mean the [endpoints] table?"),
    ),
    Case(
        "misspelt_key_near_a_table_name",
        'hosts = "/etc/hosts"\n',
        "hosts",
        ("unknown setting", "did you mean 'hosts_file'?"),
    ),
    Case("interval_not_a_number", 'interval = "fast"\n', "interval", ("'fast'", "positive")),
    # TOML's nan and inf are floats: NaN slips past `<= 0` and would probe in a tight loop,
    # inf or a huge number overflows the scheduler's wait and stops its thread.
    Case("interval_nan", "interval = nan\n", "interval", ("nan", "positive")),
    Case("interval_inf", "interval = inf\n", "interval", ("inf", "positive")),
    Case("interval_past_a_day", "interval = 1e10\n", "interval", ("86400", "seconds")),
    # 1e-9 was taken: rounds in a busy loop, each probe timing out after 5e-10 s.
    Case("interval_too_short", "interval = 1e-9\n", "interval", ("at least 0.2 seconds", "1e-09")),
    Case(
        "timeout_too_short",
        "timeout = 0.05\n",
        "timeout",
        ("at least 0.1 seconds", "0.05"),
    ),
    Case("timeout_nan", "timeout = nan\n", "timeout", ("nan", "positive")),
    Case("imds_timeout_inf", "[imds]\ntimeout = inf\n", "imds.timeout", ("inf", "positive")),
    Case("probe_rate_nan", "[web]\nprobe_rate = nan\n", "web.probe_rate", ("nan", "positive")),
    Case("regions_not_a_list", "regions = 5\n", "regions", ("must be a list", "got 5")),
    Case("fips_not_a_bool", '[endpoints]\nfips = "maybe"\n', "endpoints.fips", ("'maybe'", "true")),
    Case("table_given_a_scalar", 'imds = "off"\n', "imds", ("must be a table", "'off'")),
    Case(
        "invalid_cidr",
        'vpc_cidrs = ["10.0.0.0/16", "10.0.0.0/33"]\n',
        "vpc_cidrs",
        ("'10.0.0.0/33'", "CIDR"),
    ),
    Case(
        "region_typo",
        'regions = ["us-eest-2"]\n',
        "regions",
        ("'us-eest-2'", "not a region", "did you mean", "'us-east-2'"),
    ),
    Case("negative_interval", "interval = -5\n", "interval", ("got -5", "positive")),
    Case("zero_timeout", "timeout = 0\n", "timeout", ("got 0", "positive")),
    Case(
        "timeout_not_below_interval",
        "interval = 10\ntimeout = 10\n",
        "timeout",
        ("less than interval", "10.0"),
    ),
    # Named only the timeout's file, though the interval it was measured against came from env.
    Case(
        "timeout_not_below_an_interval_from_elsewhere",
        "timeout = 8\n",
        "timeout",
        (
            "must be less than interval, which is 4.0 (from environment STS_AGENT_INTERVAL)",
            "got 8.0 (from {path})",
        ),
        env={"STS_AGENT_INTERVAL": "4"},
    ),
    Case("port_out_of_range", "port = 70000\n", "port", ("70000", "65535")),
    # int(443.5) is 443: the file's fraction was dropped while the environment's was refused.
    Case("port_with_a_fraction", "port = 443.5\n", "port", ("got 443.5", "whole number")),
    Case("port_as_a_float", "port = 443.0\n", "port", ("got 443.0", "whole number")),
    Case(
        "max_addresses_with_a_fraction",
        "max_addresses_per_endpoint = 2.5\n",
        "max_addresses_per_endpoint",
        ("got 2.5", "whole number"),
    ),
    # A cap of 1e11 is no cap: the address label could take every answer DNS gives.
    Case(
        "max_addresses_past_the_bound",
        "max_addresses_per_endpoint = 100000000000\n",
        "max_addresses_per_endpoint",
        ("must be at most 64", "bounds", "100000000000"),
    ),
    Case(
        "expect_value_typo",
        '[expect]\nregional = "privat"\n',
        "expect",
        ("regional = 'privat' is not one of vpce, private, public, any",),
    ),
    # A CA bundle boto3 could not load either: before, a traceback from the TLS context.
    Case(
        "ca_bundle_without_a_certificate",
        f'ca_bundle = "{ROOT / "pyproject.toml"}"\n',
        "ca_bundle",
        ("holds no PEM certificate", "pyproject.toml"),
    ),
    Case("ca_bundle_not_a_file", 'ca_bundle = "/dev/null"\n', "ca_bundle", ("not a regular file",)),
    # The last one silently won, so only one of the two expectations was checked.
    Case(
        "expect_key_twice_in_environment",
        "interval = 30\n",
        "expect",
        ("'regional' is given twice", "STS_AGENT_EXPECT"),
        env={"STS_AGENT_EXPECT": "regional=vpce,regional=public"},
    ),
    # TOML sees two keys; they name one host once lower-cased and without the root dot.
    Case(
        "expect_host_twice_in_another_spelling",
        '[expect]\n"STS.us-east-2.amazonaws.com" = "vpce"\n'
        '"sts.us-east-2.amazonaws.com." = "public"\n',
        "expect",
        ("'sts.us-east-2.amazonaws.com' is given twice",),
    ),
    Case(
        "expect_key_neither_kind_nor_host",
        '[expect]\nfoo = "vpce"\n',
        "expect",
        ("'foo' is neither an endpoint kind", "regional, global", "nor a hostname"),
    ),
    Case(
        "resolver_port_out_of_range",
        'resolvers = ["10.0.0.2:99999"]\n',
        "resolvers",
        ("'10.0.0.2:99999'", "65535"),
    ),
    # An empty list asked no resolver at all, and every check then passed (exit 0).
    Case(
        "resolvers_empty",
        "resolvers = []\n",
        "resolvers",
        ("must not be empty", "omit it", "'system'", "got []", "{path}"),
    ),
    Case(
        "resolvers_empty_in_environment",
        "interval = 30\n",
        "resolvers",
        ("must not be empty", "omit it", "got ''", "environment STS_AGENT_RESOLVERS"),
        env={"STS_AGENT_RESOLVERS": ""},
    ),
    Case(
        "resolver_not_an_ip",
        'resolvers = ["not-an-ip"]\n',
        "resolvers",
        ("'not-an-ip'", "IP address"),
    ),
    Case(
        "listen_address_hostname",
        '[web]\nlisten_address = "metrics.example.com:9472"\n',
        "web.listen_address",
        ("'metrics.example.com:9472'", "IP address"),
    ),
    Case(
        "listen_address_bad_port",
        '[web]\nlisten_address = "127.0.0.1:http"\n',
        "web.listen_address",
        ("'127.0.0.1:http'", "port"),
    ),
    Case(
        "listen_address_no_port",
        '[web]\nlisten_address = "127.0.0.1"\n',
        "web.listen_address",
        ("'127.0.0.1'", "HOST:PORT"),
    ),
    Case(
        "unknown_environment_variable",
        "interval = 30\n",
        "STS_AGENT_INTERVL",
        ("unknown environment setting", "did you mean 'STS_AGENT_INTERVAL'?", "'3'"),
        env={"STS_AGENT_INTERVL": "3"},
    ),
    Case(
        "bad_environment_value",
        "interval = 30\n",
        "interval",
        ("'abc'", "STS_AGENT_INTERVAL"),
        env={"STS_AGENT_INTERVAL": "abc"},
    ),
    Case(
        "imds_endpoint_variable_unclosed_bracket",
        "interval = 30\n",
        "imds.address",
        ("is not a URL", "'http://[fd00:ec2::254'", "AWS_EC2_METADATA_SERVICE_ENDPOINT"),
        env={
            "AWS_EC2_METADATA_DISABLED": "false",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://[fd00:ec2::254",
        },
    ),
    Case(
        "imds_endpoint_variable_not_a_url",
        "interval = 30\n",
        "imds.address",
        ("is not a URL", "'not a url'", "AWS_EC2_METADATA_SERVICE_ENDPOINT"),
        env={
            "AWS_EC2_METADATA_DISABLED": "false",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": "not a url",
        },
    ),
    Case(
        "imds_address_given_as_a_url",
        "interval = 30\n",
        "imds.address",
        ("a URL was given where HOST, HOST:PORT", "(write '169.254.169.254')", "STS_AGENT_IMDS"),
        env={"STS_AGENT_IMDS_ADDRESS": "http://169.254.169.254"},
    ),
    Case("missing_file", "", "config", ("{path}", "not found"), kind="missing"),
    Case("directory", "", "config", ("{path}", "directory"), kind="dir"),
    Case(
        "not_utf8",
        b'log.level = "info"\n# caf\xe9 \xff\xfe\n',
        "config",
        ("{path}", "UTF-8"),
    ),
    Case(
        "histogram_phases_empty",
        "[metrics]\nhistogram_phases = []\n",
        "metrics.histogram_phases",
        ('must include "total"', "SLO"),
    ),
    Case(
        "histogram_phases_without_total",
        '[metrics]\nhistogram_phases = ["connect", "tls"]\n',
        "metrics.histogram_phases",
        ('must include "total"', "connect"),
    ),
    Case(
        "histogram_phase_unknown",
        '[metrics]\nhistogram_phases = ["total", "dns"]\n',
        "metrics.histogram_phases",
        ("'dns'", "must be one of connect, tls, sign, ttfb, transfer, total"),
    ),
    Case(
        "missing_ca_bundle",
        'ca_bundle = "/nonexistent/sts-agent-test/ca.pem"\n',
        "ca_bundle",
        ("'/nonexistent/sts-agent-test/ca.pem'", "not found"),
    ),
)


def materialise(case: Case, where: Path) -> Path:
    path = where / f"{case.name}.toml"
    if case.kind == "dir":
        path.mkdir()
    elif case.kind == "file":
        data = case.text if isinstance(case.text, bytes) else case.text.encode()
        path.write_bytes(data)
    return path


def run_cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(
    proc: subprocess.CompletedProcess[str], case: Case, path: Path, *, prefixed: bool = True
) -> None:
    lines = proc.stderr.splitlines()
    assert proc.returncode == EXIT_ERROR, proc.stderr
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    if prefixed:
        assert line.startswith(f"{PREFIX}{case.field}: "), line
    for needle in case.needles:
        assert needle.format(path=path) in line, (needle, line)
    assert proc.stdout == ""


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_config_check_rejects_with_one_line(case: Case, tmp_path: Path) -> None:
    path = materialise(case, tmp_path)
    proc = run_cli("config", "check", str(path), env=agent_env(None, **case.env))
    assert_one_line_error(proc, case, path)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_serve_exits_2_without_starting(case: Case, tmp_path: Path) -> None:
    """The listen port, set by env when the case does not test it, must stay unbound."""
    path = materialise(case, tmp_path)
    env = agent_env(None, **case.env)
    port = free_port()
    if case.field != "web.listen_address":
        # env beats file, so only cases that do not test the listen address get it.
        env["STS_AGENT_WEB_LISTEN_ADDRESS"] = f"127.0.0.1:{port}"
    proc = run_cli("serve", "--config", str(path), env=env)
    assert_one_line_error(proc, case, path)
    assert "listening" not in proc.stderr and "serving" not in proc.stderr
    assert _port_is_free(port)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_build_raises_config_error_naming_the_field(case: Case, tmp_path: Path) -> None:
    path = materialise(case, tmp_path)
    with pytest.raises(ConfigError) as err:
        build(file=str(path), environ=dict(case.env))
    assert err.value.field_path == case.field
    assert "\n" not in str(err.value)
    for needle in case.needles:
        assert needle.format(path=path) in str(err.value), (needle, str(err.value))


@pytest.mark.parametrize(
    ("flag", "value", "field_name"),
    [
        ("--interval", "abc", "interval"),
        ("--timeout", "nan", "timeout"),
        ("--discovery-interval", "1e10", "discovery_interval"),
        ("--port", "0", "port"),
        ("--regions", "us-eest-2", "regions"),
        ("--web.listen-address", "localhost", "web.listen_address"),
        ("--expect", "regional", "expect"),
        ("--resolvers", "", "resolvers"),
        ("--port", "443.5", "port"),
        ("--expect", "global=public,global=any", "expect"),
    ],
)
def test_bad_flag_names_the_flag_and_value(flag: str, value: str, field_name: str) -> None:
    proc = run_cli("serve", f"{flag}={value}", env=agent_env(None))
    assert proc.returncode == EXIT_ERROR
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{PREFIX}{field_name}: ")
    assert repr(value) in lines[0] and f"flag {flag}" in lines[0]


@pytest.mark.parametrize("field", ["port", "max_addresses_per_endpoint"])
@pytest.mark.parametrize("value", [443.5, 443.0])
def test_an_integer_field_refuses_a_fraction_from_every_source(
    field: str, value: float, tmp_path: Path
) -> None:
    """File, environment and flag agree: a float is never an int, truncated or not."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"{field} = {value!r}\n")
    env = {"STS_AGENT_" + field.upper(): str(value)}
    for file, environ, flags in (
        (str(cfg), {}, {}),
        (None, env, {}),
        (None, {}, {field: str(value)}),
    ):
        with pytest.raises(ConfigError) as err:
            build(file=file, environ=environ, flags=flags)
        assert err.value.field_path == field and "whole number" in err.value.problem


@pytest.mark.parametrize("value", ["nan", "inf", "0", "1e10", "1e-9"])
def test_demo_interval_follows_the_settings_rule(value: str) -> None:
    """The demo's own --interval is not a settings flag, yet a NaN there loops as fast."""
    proc = run_cli("demo", "--once", f"--interval={value}", env=agent_env(None))
    assert proc.returncode == EXIT_ERROR
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--interval" in lines[0] and repr(value) in lines[0]


def test_a_mangled_ca_bundle_is_named_before_openssl_sees_it(tmp_path: Path) -> None:
    from agent.config import ca_bundle_problem

    mangled = tmp_path / "mangled.pem"
    mangled.write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    assert ca_bundle_problem(str(mangled)) == "holds a PEM certificate whose base64 does not decode"
    decodes = tmp_path / "decodes.pem"
    decodes.write_text(NOT_A_CERTIFICATE_PEM)
    assert ca_bundle_problem(str(decodes)) is None  # left to OpenSSL, as the next test shows


def test_a_ca_bundle_openssl_cannot_load_is_a_config_error_not_a_traceback(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "broken.pem"  # base64 that decodes, but to no certificate
    bundle.write_text(NOT_A_CERTIFICATE_PEM)
    args = ("--ca-bundle", str(bundle), "--resolvers", "127.0.0.1:9", "--regions", "us-east-2")
    proc = run_cli("check", *args, env=agent_env(None))
    assert proc.returncode == EXIT_ERROR, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        lines[0].startswith(f"{PREFIX}ca_bundle: OpenSSL cannot load it")
        and str(bundle) in lines[0]
    )


def test_unknown_flag_is_a_one_line_usage_error() -> None:
    proc = run_cli("serve", "--intervall=5", env=agent_env(None))
    assert proc.returncode == EXIT_ERROR
    assert len(proc.stderr.splitlines()) == 1 and "--intervall" in proc.stderr


# --- a file only root can read ---------------------------------------------------------


RunCli = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


@pytest.fixture
def nobody() -> RunCli:
    """Runs the CLI as nobody, since root reads any file; other users run it as they are."""
    if os.geteuid() != 0:
        return lambda argv: run_cli(*argv, env=agent_env(None))
    # The forked child cannot load anything from disk: the modules the CLI imports
    # lazily, and botocore's region list, are loaded here first.
    import agent.daemon
    import agent.discovery.imds
    import agent.surfaces.webconfig  # noqa: F401

    known_regions()

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        code, out, err = cli_as_nobody(argv, env=agent_env(None))
        return subprocess.CompletedProcess(list(argv), code, out, err)

    return run


@pytest.fixture
def unreadable_file() -> Iterator[Path]:
    """Mode 000 in a directory nobody may enter, so only the file's own mode is in the way."""
    d = Path(tempfile.mkdtemp(prefix="sts-agent-cfg-"))
    try:
        d.chmod(0o755)
        path = d / "agent.toml"
        path.write_text("interval = 30\n")
        path.chmod(0o000)
        yield path
    finally:
        shutil.rmtree(d)


@pytest.mark.parametrize("command", ["config check", "serve --config"])
def test_unreadable_file_is_one_line(command: str, nobody: RunCli, unreadable_file: Path) -> None:
    case = Case("unreadable", "", "config", ("{path}", "permission denied"))
    proc = nobody([*command.split(), str(unreadable_file)])
    assert_one_line_error(proc, case, unreadable_file)


# --- the web config file named by web.config_file ------------------------------------


BAD_WEB_CONFIGS = (
    ("unknown_key", "tls_server_config:\n  cert_fil: a.pem\n", "tls_server_config.cert_fil"),
    ("missing_cert", "tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n", "nope"),
    ("bad_hash", "basic_auth_users:\n  alice: not-a-bcrypt-hash\n", "basic_auth_users"),
    ("bad_yaml", "basic_auth_users: [\n", "yaml"),
)


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [(t, n) for _, t, n in BAD_WEB_CONFIGS],
    ids=[name for name, _, _ in BAD_WEB_CONFIGS],
)
@pytest.mark.parametrize("command", ["config check", "serve --config"])
def test_bad_web_config_file_is_reported(
    command: str, yaml_text: str, needle: str, tmp_path: Path
) -> None:
    web = tmp_path / "web.yml"
    web.write_text(yaml_text)
    port = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[web]\nconfig_file = "{web}"\nlisten_address = "127.0.0.1:{port}"\n')
    proc = run_cli(*command.split(), str(cfg), env=agent_env(None))
    case = Case("web", "", "web.config_file", (f"web.config.file {web}", needle))
    assert_one_line_error(proc, case, cfg, prefixed=False)
    # serve reports it through its logger: a start-up failure, not a settings parse error.
    assert proc.stderr.startswith(PREFIX) == (command == "config check")
    assert _port_is_free(port)


def test_web_config_flag_is_checked_by_serve(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  alice: plain-text-password\n")
    proc = run_cli(
        "serve",
        "--web.config.file",
        str(web),
        f"--web.listen-address=127.0.0.1:{free_port()}",
        env=agent_env(None),
    )
    assert proc.returncode == EXIT_ERROR
    assert len(proc.stderr.splitlines()) == 1 and str(web) in proc.stderr
    assert "plain-text-password" not in proc.stderr  # a secret, even a misplaced one


# --- precedence and the effective settings -------------------------------------------


def test_the_address_cap_takes_64_and_no_more() -> None:
    cap = build(environ={}, flags={"max_addresses_per_endpoint": "64"})
    assert cap.settings.max_addresses_per_endpoint == 64
    with pytest.raises(ConfigError, match="at most 64"):
        build(environ={}, flags={"max_addresses_per_endpoint": "65"})


def test_the_shortest_interval_leaves_room_for_the_shortest_timeout() -> None:
    """An unset timeout shrinks to interval / 2, which must itself pass the timeout's floor."""
    s = build(environ={}, flags={"interval": "0.2"}).settings
    assert (s.interval, s.timeout) == (0.2, 0.1)
    with pytest.raises(ConfigError) as err:
        build(environ={}, flags={"interval": "0.19"})
    assert err.value.field_path == "interval" and "at least 0.2 seconds" in str(err.value)


def test_flag_beats_environment_beats_file_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real argument parser and `load_settings`, as `serve` and `check` use."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text('interval = 40\ntimeout = 4\nport = 8443\n[log]\nlevel = "debug"\n')
    for name in [
        n
        for n in os.environ
        if n.startswith(("STS_AGENT_", "AWS_CA_BUNDLE", "AWS_EC2_METADATA_DISABLED"))
    ]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STS_AGENT_INTERVAL", "20")
    monkeypatch.setenv("STS_AGENT_PORT", "9443")
    args = cli._parser().parse_args(["serve", "--config", str(cfg), "--interval", "10"])
    loaded = cli.load_settings(args)
    s = loaded.settings
    assert (s.interval, s.port, s.timeout, s.log_level, s.credentials) == (
        10.0,
        9443,
        4.0,
        "debug",
        "chain",
    )
    assert loaded.sources == {
        "interval": "flag",
        "port": "environment",
        "timeout": str(cfg),
        "log.level": str(cfg),
    }


def test_config_file_from_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("interval = 45\n")
    monkeypatch.setenv("STS_AGENT_CONFIG", str(cfg))
    args = cli._parser().parse_args(["check"])
    assert cli.load_settings(args).settings.interval == 45.0


def test_aws_ca_bundle_is_used_only_when_ca_bundle_is_unset(tmp_path: Path) -> None:
    env_ca = tmp_path / "env-ca.pem"
    env_ca.write_text("-----BEGIN CERTIFICATE-----\n")  # the PEM marker is all build checks
    file_ca = tmp_path / "file-ca.pem"
    file_ca.write_text("-----BEGIN CERTIFICATE-----\n")
    loaded = build(environ={"AWS_CA_BUNDLE": str(env_ca)})
    assert loaded.settings.ca_bundle == str(env_ca)
    assert loaded.sources["ca_bundle"] == "environment AWS_CA_BUNDLE"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'ca_bundle = "{file_ca}"\n')
    loaded = build(file=str(cfg), environ={"AWS_CA_BUNDLE": str(env_ca)})
    assert loaded.settings.ca_bundle == str(file_ca)
    assert build(environ={}).settings.ca_bundle is None
    # boto3's own setting, unusable: the probes keep botocore's default and say why (the
    # SDK view raises SDK_CA_BUNDLE_UNUSABLE); the agent's own ca_bundle is still an error.
    gone = build(environ={"AWS_CA_BUNDLE": str(tmp_path / "gone.pem")})
    assert gone.settings.ca_bundle is None
    assert gone.sources["ca_bundle"] == "default; AWS_CA_BUNDLE file not found"
    with pytest.raises(ConfigError) as err:
        build(environ={"STS_AGENT_CA_BUNDLE": str(tmp_path / "gone.pem")})
    assert err.value.field_path == "ca_bundle"


@pytest.mark.parametrize(
    ("environ", "address"),
    [
        ({}, "169.254.169.254"),
        ({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://[fd00:ec2::254]/"}, "[fd00:ec2::254]"),
        ({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:8080"}, "127.0.0.1:8080"),
        ({"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"}, "fd00:ec2::254"),
        ({"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv4"}, "169.254.169.254"),
    ],
)
def test_imds_address_follows_botocores_variables(
    environ: dict[str, str], address: str, tmp_path: Path
) -> None:
    loaded = build(environ=environ)
    assert loaded.settings.imds_address == address
    assert ("imds.address" in loaded.sources) is (address != "169.254.169.254")
    # A configured address wins over the SDK's variables.
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[imds]\naddress = "10.0.0.9"\n')
    assert build(file=str(cfg), environ=environ).settings.imds_address == "10.0.0.9"


@pytest.mark.parametrize(
    "url",
    [
        "http://:99999",
        "http://169.254.169.254:99999",
        "http://[fd00:ec2::254",  # urlsplit raised ValueError: a traceback from every command
        "not a url",  # had a "hostname", then http.client.InvalidURL in every round
        "http://bad_name!",
    ],
)
def test_a_bad_imds_endpoint_variable_is_one_line_naming_it(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(environ={"AWS_EC2_METADATA_SERVICE_ENDPOINT": url})
    assert err.value.field_path == "imds.address"
    line = str(err.value)
    assert "AWS_EC2_METADATA_SERVICE_ENDPOINT" in line and repr(url) in line and "\n" not in line


@pytest.mark.parametrize(
    ("environ", "file"),
    [
        ({"AWS_EC2_METADATA_DISABLED": "true"}, ""),
        ({"STS_AGENT_IMDS_ENABLED": "false"}, ""),
        ({}, "[imds]\nenabled = false\n"),
    ],
)
def test_the_imds_endpoint_variable_does_not_matter_with_imds_off(
    environ: dict[str, str], file: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(file)
    for url in ("http://[fd00:ec2::254", "not a url"):
        env = {**environ, "AWS_EC2_METADATA_SERVICE_ENDPOINT": url}
        loaded = build(file=str(cfg), environ=env)
        assert loaded.settings.imds_enabled is False
        assert loaded.settings.imds_address == "169.254.169.254"
        assert "imds.address" not in loaded.sources


def test_config_check_json_shows_values_and_sources(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        'regions = ["eu-west-1"]\ninterval = 60\n'
        '[expect]\nregional = "vpce"\n[imds]\naddress = "127.0.0.1:1338"\n'
    )
    proc = run_cli(
        "config", "check", "--json", str(cfg), env=agent_env(None, STS_AGENT_TIMEOUT="7")
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    settings, sources = doc["settings"], doc["sources"]
    assert settings["regions"] == ["eu-west-1"]
    assert settings["interval"] == 60.0 and settings["timeout"] == 7.0
    assert settings["expect"] == {"regional": "vpce"}
    assert settings["imds"]["address"] == "127.0.0.1:1338"
    assert settings["web"]["listen_address"] == ":9472"  # the documented default: all interfaces
    assert sources["interval"] == str(cfg) and sources["timeout"] == "environment"
    assert "port" not in sources  # defaults have no source entry


def test_config_check_text_lists_every_field_with_its_source(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("interval = 60\n")
    proc = run_cli("config", "check", str(cfg), env=agent_env(None))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"# {cfg}: OK")
    assert f"interval = 60.0  # {cfg}" in lines
    assert "port = 443  # default" in lines
    assert 'web.listen_address = ":9472"  # default' in lines


def test_config_check_states_the_documented_precedence(tmp_path: Path) -> None:
    """The header `config check` prints is the README's contract, word for word."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text('regions = ["eu-west-1"]\n')
    proc = run_cli("config", "check", str(cfg), env=agent_env(None))
    assert proc.returncode == 0, proc.stderr
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Precedence: **") + len("Precedence: **")
    documented = " ".join(readme[start : readme.index("**", start)].split())
    assert f"Effective settings ({documented}):" in proc.stdout.splitlines()[0]


@pytest.mark.parametrize("value", ["true", "TRUE", " true "])
def test_botocores_imds_switch_turns_imds_off_and_says_so(value: str) -> None:
    """`config check` must show what discovery will do: not ask IMDS."""
    loaded = build(environ={"AWS_EC2_METADATA_DISABLED": value, "STS_AGENT_IMDS_ENABLED": "true"})
    assert loaded.settings.imds_enabled is False
    assert loaded.sources["imds.enabled"] == "environment AWS_EC2_METADATA_DISABLED=true"


def test_imds_stays_on_unless_botocore_is_told_true() -> None:
    loaded = build(environ={"AWS_EC2_METADATA_DISABLED": "false"})
    assert loaded.settings.imds_enabled is True
    assert "imds.enabled" not in loaded.sources


def test_a_secret_under_a_wrong_name_or_in_a_url_is_not_echoed(tmp_path: Path) -> None:
    """A config error reaches the journal: an unknown key's value is left out, and a URL's
    user info is masked, while the field, the value's shape and the file are still named."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text('HTTPS_PROXY = "http://proxyuser:Pr0xyS3cret@proxy.corp:3128"\n')
    with pytest.raises(ConfigError) as unknown:
        build(file=str(cfg), environ={})
    assert "Pr0xyS3cret" not in str(unknown.value) and "HTTPS_PROXY: unknown setting" in str(
        unknown.value
    )
    err = ConfigError("imds.address", "http://u:Pr0xyS3cret@169.254.169.254/", "a URL was given")
    assert "Pr0xyS3cret" not in str(err) and "http://***@169.254.169.254/" in str(err)
