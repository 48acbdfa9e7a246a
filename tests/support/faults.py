"""Plumbing for the fault matrix: one long-running agent per module, read back by label.

Every fault test drives a real `python -m agent serve` against the simulated VPC,
switches one fault on, waits for the metrics to name it, switches it off and waits
for recovery.  Reading the exposition through prometheus-client's own parser keeps
label matching exact (no hand-built series strings that break on label order).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agent.simulate.demo import ENI_ADDRESSES, REGIONAL, SimulatedVpc, simulated_vpc
from agent.simulate.imds_server import ImdsServer
from agent.simulate.sts_server import StsServer
from testbed.agent_proc import AgentProcess, agent_env, running_agent, vpc_config
from testbed.ports import free_port

# Fast enough that a fault shows within a couple of seconds; the timeout stays below the
# interval as the config demands.
FAST: dict[str, Any] = {"interval": 1, "timeout": 0.8}

DNS_FAILURES = "sts_agent_dns_lookup_failures_total"
REQ_FAILURES = "sts_agent_request_failures_total"
REQUESTS = "sts_agent_requests_total"
SUCCESS = "sts_agent_probe_success"
PATH = "sts_agent_endpoint_path"
FINDINGS = "sts_agent_findings"
ROUNDS = "sts_agent_rounds_total"
DURATION_COUNT = "sts_agent_request_duration_seconds_count"
# The latest round's seconds per phase, per ENI (the histogram is per endpoint).
PHASE = "sts_agent_request_phase_seconds"


@dataclass(frozen=True)
class Scrape:
    """One /metrics answer, parsed."""

    samples: tuple[Sample, ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples = tuple(s for fam in text_string_to_metric_families(text) for s in fam.samples)
        return cls(samples, text)

    def find(self, name: str, **labels: str) -> list[Sample]:
        """Samples of `name` whose labels include every given label."""
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def total(self, name: str, **labels: str) -> float:
        return float(sum(s.value for s in self.find(name, **labels)))

    def value(self, name: str, **labels: str) -> float | None:
        """The one matching sample's value, None if there is none."""
        found = self.find(name, **labels)
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
        return float(found[0].value) if found else None

    def label_values(self, name: str, label: str, **labels: str) -> set[str]:
        return {s.labels[label] for s in self.find(name, **labels) if label in s.labels}

    def finding(self, code: str) -> float:
        return self.total(FINDINGS, code=code)

    def path(self, endpoint: str = REGIONAL, **labels: str) -> set[str]:
        """The path values that are 1 for `endpoint` (one per resolver)."""
        return {s.labels["path"] for s in self.find(PATH, endpoint=endpoint, **labels) if s.value}


def grown(before: Scrape, after: Scrape, metric: str, *, besides: str, **labels: str) -> set[str]:
    """Reasons other than `besides` whose counters grew between two scrapes."""
    return {
        x.labels["reason"]
        for x in after.find(metric, **labels)
        if x.labels["reason"] != besides and x.value > before.total(metric, **x.labels)
    }


def all_enis_answer(s: Scrape) -> bool:
    ok = {x.labels["address"] for x in s.find(SUCCESS, endpoint=REGIONAL) if x.value == 1}
    return ok == set(ENI_ADDRESSES)


@dataclass
class LiveAgent:
    """A running agent and the simulated VPC it watches."""

    vpc: SimulatedVpc
    agent: AgentProcess
    config: Path
    workdir: Path

    @property
    def resolver(self) -> str:
        return f"{self.vpc.dns.address}:{self.vpc.dns.port}"

    @property
    def pid(self) -> int:
        return int(self.agent.proc.pid)

    def assert_alive(self) -> None:
        code = self.agent.proc.poll()
        assert code is None, f"agent exited with {code}:\n{self.agent.log()[-4000:]}"

    def scrape(self) -> Scrape:
        """/metrics, which must answer whatever the fault; asserts the process is alive."""
        self.assert_alive()
        status, body = self.agent.get("/metrics", timeout=5)
        assert status == 200, body[:500]
        return Scrape.parse(body)

    def wait(self, predicate: Callable[[Scrape], bool], what: str, timeout: float = 30.0) -> Scrape:
        """Scrape until `predicate` holds; generous deadline, never a timing assertion."""
        deadline = time.monotonic() + timeout
        last = self.scrape()
        while not predicate(last):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; last scrape:\n"
                    + "\n".join(
                        line for line in last.text.splitlines() if not line.startswith("#")
                    )[-6000:]
                    + f"\nagent log tail:\n{self.agent.log()[-3000:]}"
                )
            time.sleep(0.2)
            last = self.scrape()
        return last

    def wait_rounds(self, n: int = 2) -> Scrape:
        """Wait until `n` more rounds have finished, so the state is fresh."""
        start = self.scrape().total(ROUNDS)
        return self.wait(lambda s: s.total(ROUNDS) >= start + n, f"{n} more rounds")

    def healthy(self, s: Scrape) -> bool:
        """The regional name is on the vpce path and every ENI answers, nothing else probed."""
        ok = {x.labels["address"] for x in s.find(SUCCESS, endpoint=REGIONAL) if x.value == 1}
        probed = s.label_values(SUCCESS, "address", endpoint=REGIONAL)
        return s.path(resolver=self.resolver) == {"vpce"} and ok == probed == set(ENI_ADDRESSES)

    def wait_healthy(self, what: str = "recovery: vpce path and every ENI answering") -> Scrape:
        return self.wait(self.healthy, what)

    def peak_rss_bytes(self) -> int:
        """VmHWM: the process's resident-set high-water mark since it started."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("VmHWM missing from /proc status")


def restart_sts(vpc: SimulatedVpc, address: str) -> StsServer:
    """Bring an ENI's server back on the same port with the VPC's own certificate."""
    workdir = vpc.ca_path.parent
    server = StsServer(address, vpc.sts_port, workdir / "sts.pem", workdir / "sts.key").start()
    vpc.sts[address] = server
    return server


@contextmanager
def live_agent(
    tmp: Path,
    *,
    env: Callable[[SimulatedVpc], Mapping[str, str]] = agent_env,
    before_start: Callable[[SimulatedVpc], Mapping[str, Any] | None] | None = None,
    **overrides: Any,
) -> Iterator[LiveAgent]:
    """A simulated VPC plus a real `serve` process with FAST settings and `overrides`.

    `before_start` may prepare the VPC and return more overrides that depend on it
    (its ports, say).
    """
    with simulated_vpc(tmp / "vpc") as vpc:
        late = (before_start(vpc) if before_start is not None else None) or {}
        port = free_port()
        cfg = vpc_config(vpc, tmp / "agent.toml", port, **{**FAST, **overrides, **late})
        with running_agent(cfg, env(vpc), port, tmp=tmp) as agent:
            agent.wait_ready()
            yield LiveAgent(vpc, agent, cfg, tmp)


class CountingImds(ImdsServer):
    """The simulated IMDS, counting fetches of the role's credentials (one per botocore refresh)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fetch_lock = threading.Lock()
        self.credential_fetches = 0

    def lookup(self, path: str) -> str | None:
        if self.role and path == f"iam/security-credentials/{self.role}":
            with self._fetch_lock:
                self.credential_fetches += 1
        return super().lookup(path)


class ContainerCredentials:
    """A loopback stand-in for the ECS / EKS Pod Identity credentials endpoint.

    botocore trusts loopback for AWS_CONTAINER_CREDENTIALS_FULL_URI and, unlike its
    IMDS fetcher, takes the expiry as given, so a short one is really refreshed.
    """

    def __init__(self) -> None:
        self.fetches = 0
        self._lock = threading.Lock()
        self._doc: dict[str, str] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v2/credentials/sts-agent"

    def rotate(self, *, seconds: float) -> None:
        """Serve fresh (fake) credentials from now on, expiring `seconds` from now."""
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        with self._lock:
            self._doc = {
                "AccessKeyId": "ASIACONTAINEREXAMPLE",
                "SecretAccessKey": "container/" + secrets.token_hex(12),
                "Token": "container-session-" + secrets.token_hex(12),
                "Expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }

    def start(self) -> ContainerCredentials:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._thread.join()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: request lines would only clutter test output."""

            def do_GET(self) -> None:
                with owner._lock:
                    owner.fetches += 1
                    body = json.dumps(owner._doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
