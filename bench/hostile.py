"""Hostile clients: what one bad client costs the agent, and what a /probe flood costs STS.

Five attacks against a real `sts-agent serve` probing the simulated VPC on
loopback, each bounded to seconds and a few hundred connections:

1. slowloris: 300 connections that send a request head one byte at a time,
   with the agent at its default descriptor limit and at 256; meanwhile a
   normal client scrapes /metrics on fresh connections (latency), the agent's
   threads are counted and the rounds' probe results are read;
2. a burst of 300 connects at once, each asking /-/healthy: how many answer
   within 1 s (what a Kubernetes probe allows);
3. a /probe flood: 50 threads back to back; signed calls per second counted at
   the simulated STS servers, and the longest any caller waited;
4. a request flood: 40 clients asking / and /metrics back to back, and the
   probes' mean time at one ENI in a quiet window and in the flooded one;
5. a basic-auth flood: 20 clients on one address with wrong passwords against
   a cost-12 bcrypt hash, and a legitimate client's first login from another
   address meanwhile (it retries every 0.2 s until it gets in).

Prints one Markdown table per attack.  `--quick` shortens every phase.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt

from agent.simulate.demo import ENI_ADDRESSES, SimulatedVpc, simulated_vpc
from bench.machine import describe
from bench.stats import median, ms, percentile, table
from testbed.agent_proc import AgentProcess, agent_env, running_agent, vpc_config
from testbed.ports import free_port

SLOW_CLIENTS = 300
FLOOD_CLIENTS = 50
AUTH_CLIENTS = 20
PASSWORD = "correct horse battery staple"
#: The legitimate client's address; the attackers all come from 127.0.0.1.
LEGIT_SOURCE = "127.0.0.5"


def request(
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    source: str = "127.0.0.1",
) -> tuple[float, int]:
    """(seconds from connect to the last byte, status) on a fresh connection; status 0 on error.

    `source` picks the client's loopback address (all of 127/8 is local on Linux).
    """
    started = time.perf_counter()
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except OSError:
        status = 0
    finally:
        conn.close()
    return time.perf_counter() - started, status


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def metric(agent: AgentProcess, prefix: str) -> float:
    """Sum of every sample whose line starts with `prefix`."""
    _, body = agent.get("/metrics", timeout=10)
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(prefix)
    )


@contextlib.contextmanager
def agent_for(
    vpc: SimulatedVpc,
    work: Path,
    *,
    nofile: int | None = None,
    ready: Callable[[AgentProcess], None] = AgentProcess.wait_ready,
    **overrides: object,
) -> Iterator[AgentProcess]:
    port = free_port()
    prefix: tuple[str, ...] = ()
    if nofile is not None:
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            raise SystemExit("prlimit (util-linux) is needed for the descriptor-limit run")
        prefix = (prlimit, f"--nofile={nofile}:{nofile}", "--")
    config = vpc_config(vpc, work / f"agent-{port}.toml", port, **overrides)
    with running_agent(config, agent_env(vpc), port, tmp=work, prefix=prefix) as agent:
        ready(agent)
        yield agent


def slowloris(agent: AgentProcess, seconds: float) -> list[object]:
    rounds_before = metric(agent, "sts_agent_probe_last_run_timestamp_seconds")
    failures_before = metric(agent, "sts_agent_request_failures_total")
    stop = threading.Event()
    socks: list[socket.socket] = []
    for _ in range(SLOW_CLIENTS):
        s = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
        s.sendall(b"G")
        socks.append(s)

    def trickle() -> None:  # one more byte per connection every second
        while not stop.wait(1.0):
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(b"E")

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    latencies, bad, peak_threads = [], 0, 0
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        took, status = request(agent.port, "/metrics", timeout=10)
        latencies.append(took)
        bad += status != 200
        peak_threads = max(peak_threads, threads_of(agent.proc.pid))
        time.sleep(0.05)
    stop.set()
    feeder.join()
    rounds = metric(agent, "sts_agent_probe_last_run_timestamp_seconds") > rounds_before
    success = metric(agent, f'sts_agent_probe_success{{address="{ENI_ADDRESSES[0]}"')
    failures = metric(agent, "sts_agent_request_failures_total") - failures_before
    dropped = "/".join(
        str(int(metric(agent, f'sts_agent_http_connections_dropped_total{{reason="{r}"}}')))
        for r in ("limit", "deadline")
    )
    for s in socks:
        s.close()
    return [
        len(latencies),
        bad,
        ms(median(latencies)),
        ms(percentile(latencies, 99)),
        ms(max(latencies)),
        peak_threads,
        "yes" if rounds else "NO",
        int(success),
        int(failures),
        dropped,
    ]


def burst(agent: AgentProcess) -> list[object]:
    results: list[float] = []
    lock = threading.Lock()
    go = threading.Event()

    def one() -> None:
        go.wait()
        took, status = request(agent.port, "/-/healthy", timeout=10)
        with lock:
            results.append(took if status == 200 else float("inf"))

    workers = [threading.Thread(target=one) for _ in range(SLOW_CLIENTS)]
    for t in workers:
        t.start()
    go.set()
    for t in workers:
        t.join()
    within = sum(r <= 1.0 for r in results)
    finite = [r for r in results if r != float("inf")]
    return [SLOW_CLIENTS, within, ms(median(finite)), ms(max(finite) if finite else float("nan"))]


def probe_flood(agent: AgentProcess, vpc: SimulatedVpc, seconds: float) -> list[object]:
    counts: dict[int, int] = {}
    waits: list[float] = []
    lock = threading.Lock()
    calls_before = sum(len(vpc.sts[a].requests) for a in ENI_ADDRESSES)
    started = time.monotonic()
    ends = started + seconds

    def hammer() -> None:
        while time.monotonic() < ends:
            took, status = request(agent.port, "/probe?endpoint=regional", timeout=30)
            with lock:
                counts[status] = counts.get(status, 0) + 1
                waits.append(took)

    workers = [threading.Thread(target=hammer) for _ in range(FLOOD_CLIENTS)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.monotonic() - started
    calls = sum(len(vpc.sts[a].requests) for a in ENI_ADDRESSES) - calls_before
    return [
        FLOOD_CLIENTS,
        f"{elapsed:.1f}",
        counts.get(200, 0),
        counts.get(429, 0),
        counts.get(503, 0),
        sum(v for k, v in counts.items() if k not in (200, 429, 503)),
        f"{calls / elapsed:.1f}",
        ms(median(waits)),
        ms(max(waits)),
    ]


def _probe_totals(agent: AgentProcess) -> tuple[float, float]:
    """(sum, count) of the probes' total time at the first ENI, from the histogram."""
    _, body = agent.get("/metrics", timeout=30)
    sums = counts = 0.0
    for line in body.splitlines():
        if f'address="{ENI_ADDRESSES[0]}"' in line and 'phase="total"' in line:
            if line.startswith("sts_agent_request_duration_seconds_sum"):
                sums += float(line.rsplit(" ", 1)[1])
            elif line.startswith("sts_agent_request_duration_seconds_count"):
                counts += float(line.rsplit(" ", 1)[1])
    return sums, counts


def request_flood(agent: AgentProcess, seconds: float) -> list[object]:
    """Mean probe time in a quiet window, then while 40 clients hammer / and /metrics."""

    def window(flood: bool) -> tuple[float, int]:
        s0, c0 = _probe_totals(agent)
        ends = time.monotonic() + seconds
        answered = [0]

        def hammer(path: str) -> None:
            while time.monotonic() < ends:
                if request(agent.port, path, timeout=30)[1] == 200:
                    answered[0] += 1

        threads = [
            threading.Thread(target=hammer, args=("/" if i % 2 else "/metrics",))
            for i in range(40 if flood else 0)
        ]
        for t in threads:
            t.start()
        time.sleep(seconds)
        for t in threads:
            t.join()
        s1, c1 = _probe_totals(agent)
        return ((s1 - s0) / (c1 - c0) if c1 > c0 else float("nan")), answered[0]

    quiet, _ = window(False)
    busy, answered = window(True)
    return [ms(quiet), ms(busy), f"{busy / quiet:.2f}×" if quiet else "n/a", answered]


def auth_flood(vpc: SimulatedVpc, work: Path, seconds: float) -> list[object]:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()
    web = work / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: {hashed}\n")
    good = {
        "Authorization": "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    }

    def no_wait(agent: AgentProcess) -> None:
        time.sleep(3.0)  # /-/ready needs auth too; logging in here would warm the cache

    with agent_for(vpc, work, ready=no_wait, web__config_file=str(web)) as agent:
        stop = time.monotonic() + seconds
        refused: list[int] = []

        def attacker(i: int) -> None:
            n = 0
            while time.monotonic() < stop:
                n += 1
                wrong = base64.b64encode(f"prometheus:guess-{i}-{n}".encode()).decode()
                refused.append(
                    request(agent.port, "/metrics", {"Authorization": f"Basic {wrong}"})[1]
                )

        attackers = [threading.Thread(target=attacker, args=(i,)) for i in range(AUTH_CLIENTS)]
        for t in attackers:
            t.start()
        time.sleep(min(1.0, seconds / 4))
        # The legitimate client retries every 0.2 s until it gets in, as a scraper would.
        started, tries, status = time.perf_counter(), 0, 0
        while status != 200 and time.monotonic() < stop:
            tries += 1
            status = request(agent.port, "/metrics", good, source=LEGIT_SOURCE)[1]
            if status != 200:
                time.sleep(0.2)
        first = (time.perf_counter() - started, status, tries)
        later = [request(agent.port, "/metrics", good, source=LEGIT_SOURCE) for _ in range(20)]
        for t in attackers:
            t.join()
    return [
        AUTH_CLIENTS,
        f"{first[1]} after {ms(first[0], 0)} ms, {first[2]} tries",
        f"{sum(s == 200 for _, s in later)}/20, median {ms(median([t for t, _ in later]))} ms",
        refused.count(401),
        refused.count(503),
    ]


def run(quick: bool) -> str:
    phase = 4.0 if quick else 10.0
    out = ["Machine: " + ", ".join(f"{k} {v}" for k, v in describe().items()), ""]
    with tempfile.TemporaryDirectory(prefix="sts-agent-hostile-") as tmp:
        work = Path(tmp)
        with simulated_vpc(work / "vpc") as vpc:
            rows = []
            for label, nofile in (("default limit", None), ("RLIMIT_NOFILE 256", 256)):
                with agent_for(vpc, work, nofile=nofile) as agent:
                    rows.append([label, *slowloris(agent, phase)])
            out += [
                "### 300 slow clients",
                table(
                    [
                        "agent",
                        "scrapes",
                        "failed",
                        "median ms",
                        "p99 ms",
                        "max ms",
                        "peak threads",
                        "rounds ran",
                        "ENI probe success",
                        "new probe failures",
                        "dropped limit/deadline",
                    ],
                    rows,
                ),
                "",
            ]
            with agent_for(vpc, work) as agent:
                out += [
                    "### Burst of 300 connects",
                    table(
                        ["connects", "answered within 1 s", "median ms", "max ms"], [burst(agent)]
                    ),
                    "",
                ]
                out += [
                    "### /probe flood",
                    table(
                        [
                            "clients",
                            "seconds",
                            "200",
                            "429",
                            "503",
                            "other",
                            "signed calls/s at STS",
                            "median wait ms",
                            "max wait ms",
                        ],
                        [probe_flood(agent, vpc, phase)],
                    ),
                    "",
                ]
                out += [
                    "### Request flood: 40 clients on / and /metrics (probe time at one ENI)",
                    table(
                        ["quiet mean ms", "flooded mean ms", "ratio", "requests answered"],
                        [request_flood(agent, phase)],
                    ),
                    "",
                ]
            out += [
                "### Basic-auth flood (bcrypt cost 12)",
                table(
                    ["attackers", "legitimate first login", "then", "401s", "503s"],
                    [auth_flood(vpc, work, phase)],
                ),
                "",
            ]
    return "\n".join(out)


def main(argv: list[str] | None = None, emit: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short phases: a smoke run")
    args = parser.parse_args(argv)
    emit(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
