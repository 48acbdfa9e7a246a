"""`sts-agent serve --web.config.file FILE`: basic auth, TLS and mTLS on the real daemon.

The file is exporter-toolkit YAML, the same a node_exporter on the host may
already use.  Each test runs `serve` as a subprocess probing the simulated VPC
on loopback and talks to it with `requests`, a real HTTP client.

The default listen address is ``:9472``: port 9472 on all interfaces (IPv4 and
IPv6).  The loopback tests move it to 127.0.0.1 and a free port so that runs
cannot collide; the default itself is checked in a network namespace of its own.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
import trustme

from agent.config import DEFAULT_PORT
from agent.simulate.demo import ENI_ADDRESSES, REGIONAL, SimulatedVpc, simulated_vpc
from testbed import ROOT
from testbed.agent_proc import AgentProcess, agent_env, running_agent, vpc_config, wait_for
from testbed.ports import free_port
from testbed.procs import stop_process
from testbed.require import require_binary, require_root

USER = "prometheus"
PASSWORD = "correct horse battery staple"
PROBED = f'sts_agent_probe_success{{address="{ENI_ADDRESSES[0]}",endpoint="{REGIONAL}"}} 1.0'


@dataclass(frozen=True)
class Pki:
    server_ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client_cert: tuple[str, str]
    stranger_cert: tuple[str, str]  # issued by a CA the agent does not trust


def _write_leaf(ca: trustme.CA, directory: Path, stem: str, *names: str) -> tuple[str, str]:
    leaf = ca.issue_cert(*names)
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    d = tmp_path / "pki"
    d.mkdir()
    server_ca, client_ca, stranger_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server_ca.cert_pem.write_to_path(str(d / "server-ca.pem"))
    client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))
    cert, key = _write_leaf(server_ca, d, "server", "127.0.0.1", "::1", "localhost")
    return Pki(
        server_ca=d / "server-ca.pem",
        server_cert=Path(cert),
        server_key=Path(key),
        client_ca=d / "client-ca.pem",
        client_cert=_write_leaf(client_ca, d, "client", "scraper.example.com"),
        stranger_cert=_write_leaf(stranger_ca, d, "stranger", "scraper.example.com"),
    )


@pytest.fixture
def vpc(tmp_path: Path) -> Iterator[SimulatedVpc]:
    with simulated_vpc(tmp_path / "vpc") as v:
        yield v


def bcrypt_hash(password: str) -> str:
    # Cost 4 keeps the suite fast; the daemon runs the same bcrypt check at any cost.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # a proxy variable on the host must not reroute loopback traffic
    return s


@dataclass(frozen=True)
class Client:
    """A real HTTP client aimed at the agent; per-call keywords override the defaults."""

    base: str
    defaults: dict[str, Any]

    def get(self, path: str, **overrides: Any) -> requests.Response:
        with session() as s:
            return s.get(self.base + path, **{"timeout": 10, **self.defaults, **overrides})

    def probed(self) -> requests.Response | None:
        r = self.get("/metrics")
        return r if r.status_code == 200 and PROBED in r.text else None


@contextlib.contextmanager
def secured_agent(
    vpc: SimulatedVpc, tmp_path: Path, web_yaml: str, scheme: str, **client: Any
) -> Iterator[tuple[AgentProcess, Client]]:
    """`serve --web.config.file`, on 127.0.0.1:<free port> instead of the default :9472."""
    web = tmp_path / "web.yml"
    web.write_text(web_yaml)
    port = free_port()
    cfg = vpc_config(vpc, tmp_path / "agent.toml", port)
    args = ("--web.config.file", str(web))
    with running_agent(cfg, agent_env(vpc), port, *args, tmp=tmp_path) as agent:
        good = Client(f"{scheme}://127.0.0.1:{port}", client)

        def ready() -> bool:
            if agent.proc.poll() is not None:
                raise AssertionError(f"agent exited {agent.proc.returncode}: {agent.log()}")
            try:
                return good.get("/-/ready", timeout=5).status_code == 200
            except requests.exceptions.ConnectionError:
                return False

        wait_for(ready, 30, "secured agent ready")
        yield agent, good


# --- basic auth --------------------------------------------------------------------


def test_basic_auth_guards_metrics_status_page_and_health(
    vpc: SimulatedVpc, tmp_path: Path
) -> None:
    web = f"basic_auth_users:\n  {USER}: {bcrypt_hash(PASSWORD)!r}\n"
    with secured_agent(vpc, tmp_path, web, "http", auth=(USER, PASSWORD)) as (agent, client):
        assert wait_for(client.probed, 20, "probes of the simulated VPC")
        for path in ("/metrics", "/", "/-/healthy", "/-/ready"):
            bare = client.get(path, auth=None)
            assert bare.status_code == 401, path
            assert bare.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert "sts_agent_" not in bare.text
            assert client.get(path, auth=(USER, "wrong")).status_code == 401, path
            assert client.get(path, auth=("nobody", PASSWORD)).status_code == 401, path
            assert client.get(path).status_code == 200, path
        page = client.get("/")
        assert page.headers["Content-Type"].startswith("text/html") and REGIONAL in page.text
        assert client.get("/-/healthy").text == "OK\n"
        assert PASSWORD not in agent.log()


# --- TLS ---------------------------------------------------------------------------


def test_tls_serves_https_to_clients_that_trust_the_ca(
    vpc: SimulatedVpc, pki: Pki, tmp_path: Path
) -> None:
    web = f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
    with secured_agent(vpc, tmp_path, web, "https", verify=str(pki.server_ca)) as (agent, client):
        assert wait_for(client.probed, 20, "metrics over https")
        assert client.get("/-/healthy").text == "OK\n"
        with pytest.raises(requests.exceptions.SSLError):
            client.get("/metrics", verify=True)  # the system store does not know this CA
        plain = Client(client.base.replace("https://", "http://", 1), {})
        with pytest.raises(requests.exceptions.ConnectionError):
            plain.get("/metrics")
        assert client.get("/-/healthy").status_code == 200  # the plain client did no harm
        assert agent.proc.poll() is None


def test_mtls_admits_only_certificates_from_the_client_ca(
    vpc: SimulatedVpc, pki: Pki, tmp_path: Path
) -> None:
    web = (
        "tls_server_config:\n"
        f"  cert_file: {pki.server_cert}\n"
        f"  key_file: {pki.server_key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki.client_ca}\n"
    )
    tls = {"verify": str(pki.server_ca), "cert": pki.client_cert}
    with secured_agent(vpc, tmp_path, web, "https", **tls) as (agent, client):
        assert wait_for(client.probed, 20, "metrics over mTLS")
        assert client.get("/").status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError):
            client.get("/metrics", cert=None)
        with pytest.raises(requests.exceptions.ConnectionError):
            client.get("/metrics", cert=pki.stranger_cert)
        assert client.get("/-/healthy").status_code == 200  # still serving after rejections
        assert agent.proc.poll() is None


def test_tls_and_basic_auth_together(vpc: SimulatedVpc, pki: Pki, tmp_path: Path) -> None:
    web = (
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"basic_auth_users:\n  {USER}: {bcrypt_hash(PASSWORD)!r}\n"
    )
    creds = {"verify": str(pki.server_ca), "auth": (USER, PASSWORD)}
    with secured_agent(vpc, tmp_path, web, "https", **creds) as (_, client):
        assert wait_for(client.probed, 20, "metrics")
        assert client.get("/metrics", auth=None).status_code == 401


# --- the default listen address ----------------------------------------------------

_FETCH = (
    "import sys, urllib.error, urllib.request\n"
    "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
    "req = urllib.request.Request(sys.argv[1])\n"
    "if sys.argv[2]:\n"
    "    req.add_header('Authorization', sys.argv[2])\n"
    "try:\n"
    "    r = opener.open(req, timeout=5)\n"
    "except urllib.error.HTTPError as e:\n"
    "    r = e\n"
    "print(r.status)\n"
)


@dataclass
class Namespace:
    name: str

    def argv(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def status(self, url: str, authorization: str = "") -> int | None:
        out = subprocess.run(
            self.argv(sys.executable, "-I", "-S", "-c", _FETCH, url, authorization),
            capture_output=True,
            text=True,
            timeout=30,
        )
        return int(out.stdout) if out.returncode == 0 else None


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    """A namespace with lo and one veth pair of its own: whatever the agent sends stays inside."""
    require_root()
    require_binary("ip")
    ns = Namespace(f"stsagent-web-{os.getpid()}")
    subprocess.run(["ip", "netns", "delete", ns.name], capture_output=True, timeout=30)
    _ip("netns", "add", ns.name)
    try:
        _ip("-n", ns.name, "link", "set", "lo", "up")
        _ip("-n", ns.name, "link", "add", "nic0", "type", "veth", "peer", "name", "nic1")
        _ip("-n", ns.name, "addr", "add", "192.0.2.10/24", "dev", "nic0")
        _ip("-n", ns.name, "addr", "add", "2001:db8::10/64", "dev", "nic0", "nodad")
        _ip("-n", ns.name, "link", "set", "nic0", "up")
        _ip("-n", ns.name, "link", "set", "nic1", "up")
        yield ns
    finally:
        pids = subprocess.run(
            ["ip", "netns", "pids", ns.name], capture_output=True, text=True, timeout=30
        ).stdout.split()
        for pid in pids:  # only the agent this test started runs in there
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", ns.name], capture_output=True, timeout=30)


def test_default_listen_address_is_port_9472_on_all_interfaces(
    namespace: Namespace, tmp_path: Path
) -> None:
    """Without --web.listen-address, `serve` answers on :9472 over IPv4, IPv6 and every NIC."""
    assert DEFAULT_PORT == 9472
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  {USER}: {bcrypt_hash(PASSWORD)!r}\n")
    log = tmp_path / "agent.log"
    cmd = namespace.argv(
        sys.executable,
        "-m",
        "agent",
        "serve",
        "--web.config.file",
        str(web),
        "--imds.enabled=false",
        "--resolvers=127.0.0.1:1",  # nothing listens: rounds finish fast and send nothing out
        "--interval=5",
        "--timeout=1",
    )
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, env=agent_env(None), cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT
        )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited {proc.returncode}: {log.read_text()}")
            return namespace.status(f"http://127.0.0.1:{DEFAULT_PORT}/-/ready", auth) == 200

        wait_for(ready, 30, "agent ready on the default port")
        for host in ("127.0.0.1", "[::1]", "192.0.2.10", "[2001:db8::10]"):
            url = f"http://{host}:{DEFAULT_PORT}/-/healthy"
            assert namespace.status(url, auth) == 200, url
            assert namespace.status(url) == 401, url  # the web config applies on every address
    finally:
        stop_process(proc)
