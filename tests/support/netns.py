"""Network namespaces that rebuild the article's VPC, so the agent runs as on a real instance.

Three namespaces, joined only to each other and never to the host's:

- instance: 10.120.136.166/16, its resolv.conf names 10.120.0.2, IMDS is on-link;
- vpc: the router (10.120.0.1), the Amazon DNS (10.120.0.2, dnsmasq), the STS
  endpoint's ENI (10.120.138.148, moto behind TLS) and IMDSv2 (169.254.169.254);
  it forwards between the instance and the public side;
- public: 203.0.113.10 (TEST-NET-3, routed nowhere real), the STS the name resolves
  to once private DNS is off.

Veths are created inside the namespaces, so no interface appears in the host's
namespace even for a moment, and no namespace gets a default route.

Run as a module this is the server side, started with `ip netns exec`:
`python -m tests.support.netns serve --config FILE` prints `READY <json>` once every
server listens, then answers one JSON command per stdin line until stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "stsagent-e2e-"
NETNS_ETC = Path("/etc/netns")

REGION = "us-east-2"
REGIONAL = f"sts.{REGION}.amazonaws.com"
GLOBAL = "sts.amazonaws.com"
VPC_CIDR = "10.120.0.0/16"
INSTANCE_IP = "10.120.136.166"
ROUTER_IP = "10.120.0.1"
DNS_IP = "10.120.0.2"
ENI_IP = "10.120.138.148"
IMDS_IP = "169.254.169.254"
PUBLIC_NET = "203.0.113.0/24"
PUBLIC_GATEWAY = "203.0.113.1"
PUBLIC_IP = "203.0.113.10"

_FETCH = (  # no proxy: a proxy variable inherited from the host must not reroute this
    "import sys, urllib.error, urllib.request\n"
    "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
    "try:\n"
    "    r = opener.open(sys.argv[1], timeout=float(sys.argv[2]))\n"
    "except urllib.error.HTTPError as e:\n"
    "    r = e\n"
    "sys.stdout.write(str(r.status) + '\\n' + r.read().decode())\n"
)


def ip(*args: str) -> str:
    """Run `ip`; a failure raises with the command and its stderr on one line."""
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_namespace(name: str) -> None:
    """Kill what still runs inside (only our own servers ever run there), then delete it."""
    with contextlib.suppress(RuntimeError):
        for pid in (int(p) for p in ip("netns", "pids", name).split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(RuntimeError):
        ip("netns", "delete", name)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Remove what crashed runs left behind: namespaces and /etc/netns dirs of dead pids."""
    removed: list[str] = []
    leftovers = set(namespaces())
    if NETNS_ETC.is_dir():
        leftovers |= {p.name for p in NETNS_ETC.iterdir()}
    for name in sorted(n for n in leftovers if n.startswith(prefix)):
        owner = name[len(prefix) :].split("-", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and _pid_alive(int(owner)):
            continue  # a concurrent run's namespaces
        remove_namespace(name)
        removed.append(name)
    if removed:
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only if empty: a crashed run may have created it
    return removed


@dataclass(frozen=True)
class Topology:
    instance: str
    vpc: str
    public: str

    @classmethod
    def for_this_run(cls, prefix: str = PREFIX) -> Topology:
        base = f"{prefix}{os.getpid()}-"
        return cls(base + "inst", base + "vpc", base + "pub")

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.instance, self.vpc, self.public)

    def exec_argv(self, namespace: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]

    def create(self) -> None:
        inst, vpc, pub = self.names
        for ns in self.names:
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        # instance <-> vpc: one link carries the subnet, the DNS, the ENI and IMDS
        ip("-n", inst, "link", "add", "eth0", "type", "veth", "peer", "name", "inst0", "netns", vpc)
        ip("-n", inst, "addr", "add", f"{INSTANCE_IP}/16", "dev", "eth0")
        for addr in (f"{ROUTER_IP}/16", f"{DNS_IP}/16", f"{ENI_IP}/16", f"{IMDS_IP}/32"):
            ip("-n", vpc, "addr", "add", addr, "dev", "inst0")
        ip("-n", inst, "link", "set", "eth0", "up")
        ip("-n", vpc, "link", "set", "inst0", "up")
        ip("-n", inst, "route", "add", f"{IMDS_IP}/32", "dev", "eth0")
        ip("-n", inst, "route", "add", PUBLIC_NET, "via", ROUTER_IP)
        # vpc <-> public: the way out of the VPC when a name resolves to a public address
        ip("-n", vpc, "link", "add", "pub0", "type", "veth", "peer", "name", "eth0", "netns", pub)
        ip("-n", vpc, "addr", "add", f"{PUBLIC_GATEWAY}/24", "dev", "pub0")
        ip("-n", pub, "addr", "add", f"{PUBLIC_IP}/24", "dev", "eth0")
        ip("-n", vpc, "link", "set", "pub0", "up")
        ip("-n", pub, "link", "set", "eth0", "up")
        ip("-n", pub, "route", "add", VPC_CIDR, "via", PUBLIC_GATEWAY)
        # ip_forward is per namespace: this touches the vpc namespace only
        subprocess.run(
            self.exec_argv(vpc, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]),
            check=True,
            capture_output=True,
            timeout=30,
        )
        etc = NETNS_ETC / inst
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {DNS_IP}\n")

    def destroy(self) -> None:
        for ns in self.names:
            remove_namespace(ns)


@contextlib.contextmanager
def topology() -> Iterator[Topology]:
    """The three namespaces for the lifetime of the block, removed even on failure."""
    cleanup_stale()
    topo = Topology.for_this_run()
    made_etc = not NETNS_ETC.exists()
    try:
        topo.create()
        yield topo
    finally:
        topo.destroy()
        if made_etc:
            with contextlib.suppress(OSError):
                NETNS_ETC.rmdir()  # only when nothing else put a namespace's files there


def fetch_in(topo: Topology, namespace: str, url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET a URL from inside a namespace; the host namespace is never connected to it."""
    argv = [sys.executable, "-I", "-S", "-c", _FETCH, url, str(timeout)]
    try:
        out = subprocess.run(
            topo.exec_argv(namespace, argv), capture_output=True, text=True, timeout=timeout + 10
        )
    except subprocess.TimeoutExpired:
        raise OSError(f"GET {url} in {namespace}: no answer in {timeout}s") from None
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        raise OSError(f"GET {url} in {namespace}: {lines[-1] if lines else out.returncode}")
    status, _, body = out.stdout.partition("\n")
    return int(status), body


def instance_env() -> dict[str, str]:
    """An instance's environment: no AWS settings and no proxies, so IMDS supplies the rest."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "STS_AGENT_")) and not k.lower().endswith("_proxy")
    }
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return env


class NamespaceServer:
    """`python -m tests.support.netns serve` inside one namespace, driven over stdin/stdout.

    Closing stdin stops it cleanly; whatever survives a crash dies with the namespace.
    """

    def __init__(self, topo: Topology, namespace: str, config: Mapping[str, Any], workdir: Path):
        self.namespace = namespace
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{namespace}.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = workdir / f"{namespace}.log"
        env = instance_env()
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-m", "tests.support.netns", "serve", "--config"]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                topo.exec_argv(namespace, [*argv, str(self.config_path)]),
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, name=f"read-{namespace}", daemon=True).start()
        self.info: dict[str, Any] = {}

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _reply(self, word: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                msg = f"{self.namespace}: no {word} in {timeout}s: {self.log()}"
                raise TimeoutError(msg) from None
            if line is None:
                raise RuntimeError(f"{self.namespace}: server exited: {self.log()}")
            head, _, rest = line.partition(" ")
            if head == word:
                reply: dict[str, Any] = json.loads(rest or "{}")
                return reply
            if head == "ERROR":
                raise RuntimeError(f"{self.namespace}: {rest}")

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        self.info = self._reply("READY", timeout)
        return self.info

    def command(self, cmd: Mapping[str, Any], timeout: float = 15.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._reply("OK", timeout)

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace").strip()
        return " | ".join(text.splitlines()[-5:]) or "(no output)"

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --- the server side: runs inside a namespace, started by NamespaceServer


def _start_sts(spec: Mapping[str, Any], stack: contextlib.ExitStack) -> str:
    from tests.support.moto_tls import MotoStsTls

    server = stack.enter_context(MotoStsTls(spec["address"], spec["port"], spec["hostnames"]))
    return str(server.ca_path)


def _serve(config: Mapping[str, Any]) -> None:
    from agent.simulate.imds_server import ImdsServer
    from tests.support.dnsmasq import Dnsmasq

    with contextlib.ExitStack() as stack:
        info: dict[str, Any] = {}
        dns: Dnsmasq | None = None
        if imds := config.get("imds"):
            stack.enter_context(
                ImdsServer(
                    imds["address"],
                    imds["port"],
                    region=imds["region"],
                    az=imds["region"] + "a",
                    vpc_cidrs=imds["vpc_cidrs"],
                )
            )
        if spec := config.get("dns"):
            dns = Dnsmasq(
                spec["records"], listen=spec["address"], port=53, ttl=1, binary=spec["binary"]
            )
            stack.enter_context(dns)
        if spec := config.get("sts"):
            info["ca_path"] = _start_sts(spec, stack)
        print("READY " + json.dumps(info), flush=True)
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
                if "records" not in cmd or dns is None:
                    raise ValueError(f"unknown command {line.strip()!r}")
                dns.set_records(cmd["records"])
            except Exception as e:
                print(f"ERROR {type(e).__name__}: {e}", flush=True)
            else:
                print("OK {}", flush=True)


def agent_binary() -> Path:
    """The installed console script, as an operator would run it inside the namespace."""
    from testbed.require import missing

    path = Path(sys.executable).parent / "sts-agent"
    if not os.access(path, os.X_OK):
        missing(f"installed console script {path.name}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.netns")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the servers a config names, in this namespace")
    serve.add_argument("--config", required=True, metavar="FILE")
    args = parser.parse_args(argv)

    def stop(signum: int, _: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds the ExitStack, so dnsmasq is stopped too

    signal.signal(signal.SIGTERM, stop)
    try:
        config = json.loads(Path(args.config).read_text())
    except (OSError, ValueError) as e:
        print(f"ERROR config {args.config}: {e}", flush=True)
        return 2
    _serve(config)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
