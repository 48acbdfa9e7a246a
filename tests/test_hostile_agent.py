"""`sts-agent serve` against hostile clients while it probes a simulated VPC on loopback.

The agent runs as a real process, here under a 256-descriptor limit, with
hundreds of slow clients; the assertions are about what matters to an
operator: probes keep telling the truth, scrapes answer, threads stay few,
and a /probe flood costs STS only a few signed calls.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.config import Settings
from agent.daemon import Agent, ProbeTarget
from agent.simulate.demo import ENI_ADDRESSES, REGIONAL, SimulatedVpc, simulated_vpc
from agent.surfaces.http_server import Headers, Request
from testbed.agent_proc import AgentProcess, agent_env, running_agent, vpc_config
from testbed.ports import free_port
from testbed.require import missing

SLOW_CLIENTS = 300
FD_LIMIT = 256


@pytest.fixture
def vpc(tmp_path: Path) -> Iterator[SimulatedVpc]:
    with simulated_vpc(tmp_path / "vpc") as v:
        yield v


def threads_of(agent: AgentProcess) -> int:
    for line in Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def series(body: str, name: str) -> dict[str, float]:
    """Every sample of one metric: label text -> value."""
    out = {}
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key[len(name) :]] = float(value)
    return out


def test_probes_stay_true_while_slow_clients_hold_connections(
    vpc: SimulatedVpc, tmp_path: Path
) -> None:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        missing("prlimit (util-linux) to lower the agent's descriptor limit")
    port = free_port()
    config = vpc_config(vpc, tmp_path / "a.toml", port)
    with (
        running_agent(
            config,
            agent_env(vpc),
            port,
            tmp=tmp_path,
            prefix=(prlimit, f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--"),
        ) as agent,
        ExitStack() as stack,
    ):
        agent.wait_ready()
        before = agent.value("sts_agent_probe_last_run_timestamp_seconds") or 0.0
        stalled = []
        for _ in range(SLOW_CLIENTS):
            s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            s.sendall(b"G")
            stalled.append(s)
        # Two whole rounds while the slow clients keep at it.
        rounds_seen = 0
        last = before
        deadline = time.monotonic() + 30
        body = ""
        while rounds_seen < 2 and time.monotonic() < deadline:
            for s in stalled[::10]:
                with contextlib.suppress(OSError):
                    s.sendall(b"E")  # a byte now and then, as a slowloris does
            status, body = agent.get("/metrics", timeout=10)
            assert status == 200, body
            now = series(body, "sts_agent_probe_last_run_timestamp_seconds")[""]
            if now > last:
                rounds_seen += 1
                last = now
            assert threads_of(agent) < 64
            time.sleep(0.3)
        assert rounds_seen >= 2, "rounds stopped while clients held connections"
        success = series(body, "sts_agent_probe_success")
        for address in ENI_ADDRESSES:
            assert success[f'{{address="{address}",endpoint="{REGIONAL}"}}'] == 1.0
        failures = series(body, "sts_agent_request_failures_total")
        assert not any(v for v in failures.values()), failures
        dropped = series(body, "sts_agent_http_connections_dropped_total")
        assert dropped['{reason="limit"}'] > 0  # the cap, not the fd limit, turned clients away
        assert "STS_CALL_FAILED" not in agent.log()


def probe_flood(url: str, clients: int, seconds: float) -> dict[int, int]:
    """`clients` threads calling `url` back to back for `seconds`; status -> count."""
    counts: dict[int, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    missing_retry_after: list[int] = []

    def hammer() -> None:
        while time.monotonic() < stop:
            try:
                with urllib.request.urlopen(url, timeout=20) as r:
                    status = r.status
                    r.read()
            except urllib.error.HTTPError as e:
                status = e.code
                if status in (429, 503) and not e.headers.get("Retry-After"):
                    missing_retry_after.append(status)
                e.read()
            with lock:
                counts[status] = counts.get(status, 0) + 1

    threads = [threading.Thread(target=hammer) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not missing_retry_after, "a refusal without Retry-After"
    return counts


def test_a_probe_flood_costs_only_a_few_signed_calls(vpc: SimulatedVpc, tmp_path: Path) -> None:
    port = free_port()
    interval, seconds, clients = 2.0, 4.0, 20
    config = vpc_config(vpc, tmp_path / "a.toml", port, interval=interval)
    with running_agent(config, agent_env(vpc), port, tmp=tmp_path) as agent:
        agent.wait_ready()
        calls_before = sum(len(vpc.sts[a].requests) for a in ENI_ADDRESSES)
        started = time.monotonic()
        counts = probe_flood(f"{agent.base}/probe?endpoint=regional", clients, seconds)
        elapsed = time.monotonic() - started
        calls = sum(len(vpc.sts[a].requests) for a in ENI_ADDRESSES) - calls_before
        _, body = agent.get("/metrics")
    assert set(counts) <= {200, 429, 503}, counts
    assert counts.get(429, 0) + counts.get(503, 0) > 0
    # Rounds: the bucket's burst of 2, then 1 per second, plus the scheduled ones.
    rounds = 2 + elapsed * 1.0 + 1 + (elapsed / interval) * 1.2 + 1
    assert calls <= rounds * len(ENI_ADDRESSES), (calls, counts)  # before: 40+ per second
    refused = series(body, "sts_agent_probe_requests_refused_total")
    assert refused['{reason="rate"}'] + refused['{reason="busy"}'] > 0


def test_two_spellings_of_one_endpoint_share_one_probe_round(
    vpc: SimulatedVpc, tmp_path: Path
) -> None:
    """`regional` and its hostname name one endpoint, so callers at once get one round.

    Before, the gate keyed on the text given, so each spelling ran (and paid for) its own.
    """
    port = free_port()
    config = vpc_config(vpc, tmp_path / "a.toml", port, interval=60)
    with running_agent(config, agent_env(vpc), port, tmp=tmp_path) as agent:
        agent.wait_ready()
        for address in ENI_ADDRESSES:
            vpc.sts[address].processing_delay = 1.0  # the first round is still running
        calls_before = sum(len(vpc.sts[a].requests) for a in ENI_ADDRESSES)
        statuses: list[int] = []

        def probe(endpoint: str) -> None:
            statuses.append(agent.get(f"/probe?endpoint={endpoint}", timeout=20)[0])

        callers = [threading.Thread(target=probe, args=(e,)) for e in ("regional", REGIONAL)]
        callers[0].start()
        time.sleep(0.3)
        callers[1].start()
        for t in callers:
            t.join(30)
        calls = sum(len(vpc.sts[a].requests) for a in ENI_ADDRESSES) - calls_before
    assert statuses == [200, 200]
    assert calls == len(ENI_ADDRESSES), calls  # one round's calls, not two


def test_probe_endpoint_ignores_case_and_a_trailing_dot_but_not_a_second_value() -> None:
    """Which endpoint a /probe asks for, decided before any round (none runs here)."""
    agent = Agent(Settings(web_listen_address="127.0.0.1:0", imds_enabled=False))
    for spelling in ("Sts.Amazonaws.com", "sts.amazonaws.com.", " GLOBAL "):
        target = agent.probe_target([spelling])
        assert (target.endpoint, target.key) == ("sts.amazonaws.com", "sts.amazonaws.com")
    with pytest.raises(ValueError, match="given 2 times"):
        agent.probe_target(["global", "regional"])
    with pytest.raises(ValueError, match=r"endpoint must be one of: .*sts\.amazonaws\.com"):
        agent.probe_target(["nowhere.example"])


def test_a_probe_target_is_keyed_on_the_hostnames_it_names() -> None:
    """A kind over two regions names both; the gate keys on them, the round on the kind."""
    agent = Agent(Settings(web_listen_address="127.0.0.1:0", imds_enabled=False))
    found = SimpleNamespace(regions=("us-east-2", "eu-west-1"))
    agent.scheduler.discovery = found  # type: ignore[assignment]
    both = "sts.eu-west-1.amazonaws.com sts.us-east-2.amazonaws.com"
    assert agent.probe_target(["regional"]) == ProbeTarget("regional", both)
    assert agent.probe_target(["STS.us-east-2.amazonaws.com"]) == ProbeTarget(
        "sts.us-east-2.amazonaws.com", "sts.us-east-2.amazonaws.com"
    )


def test_probe_from_another_host_needs_auth_or_opt_in() -> None:
    def probe(settings: Settings, peer: str) -> int:
        agent = Agent(settings)
        query = {"endpoint": ["not-watched.example"]}
        req = Request("GET", "/probe", query, Headers(), client_address=peer)
        return agent._probe(req).status

    closed = Settings(web_listen_address="127.0.0.1:0", imds_enabled=False)
    assert probe(closed, "10.1.2.3:40000") == 403
    assert probe(closed, "127.0.0.1:40000") == 400  # loopback: on to the endpoint check
    assert probe(closed, "::1:40000") == 400
    assert probe(closed, "::ffff:127.0.0.1:40000") == 400
    opened = Settings(web_listen_address="127.0.0.1:0", imds_enabled=False, web_probe_remote=True)
    assert probe(opened, "10.1.2.3:40000") == 400


def test_a_crowd_on_the_status_page_costs_one_build_per_round_and_second(
    vpc: SimulatedVpc,
) -> None:
    """Fifty clients asking for the page and the history at once, back to back.

    Each build walks the whole window in Python on an HTTP worker; before, every
    request built its own, so a crowd queued that work ahead of /metrics.
    """
    agent = Agent(vpc.settings(interval=1.0, listen="127.0.0.1:0"))
    agent.start()
    try:
        deadline = time.monotonic() + 30
        while not agent.scheduler.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.scheduler.ready
        base = f"http://127.0.0.1:{agent.http.port}"
        bodies: dict[str, set[int]] = {"/": set(), "/api/history": set()}
        failures: list[str] = []
        lock = threading.Lock()

        def ask(path: str) -> None:
            for _ in range(4):
                try:
                    with urllib.request.urlopen(base + path, timeout=10) as r:
                        status = r.status
                    with lock:
                        bodies[path].add(status)
                except OSError as e:
                    with lock:
                        failures.append(f"{path}: {e}")

        builds0 = {p: agent._pages[p].builds for p in bodies}
        started = time.monotonic()
        crowd = [threading.Thread(target=ask, args=(p,)) for p in bodies for _ in range(25)]
        for t in crowd:
            t.start()
        for t in crowd:
            t.join(30)
        took = time.monotonic() - started
        assert not failures, failures[:5]
        assert bodies == {"/": {200}, "/api/history": {200}}
        for path in bodies:
            built = agent._pages[path].builds - builds0[path]
            # 100 requests each; a new round or a second passing allows one more build.
            assert 1 <= built <= 2 * (math.ceil(took) + 1), (path, built, took)
    finally:
        agent.stop()
