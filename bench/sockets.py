"""Connection audit on a busy host: socket tables of 1,000 and 50,000 entries.

The benchmark fills the socket table itself with pairs of loopback TCP
connections (a client and a server end, one entry each) to a few listeners
that no STS target uses, held by child processes (as many as each one's
descriptor limit allows), and resets them when done (SO_LINGER 0, so no
TIME_WAIT is left behind).  As root it runs in a network namespace of its
own: the table it builds is seen by nothing else on the machine.  At each
size it times the connection audit itself (the agent's count_connections on
the targets' addresses, thread CPU in this process, median of many calls)
with both readers, netlink sock_diag and /proc/net, and measures the agent's
CPU per round at a 1 s interval in its default configuration (audit on,
netlink, paced to its CPU share), as the footprint benchmark does.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.audit.connections import DUTY
from bench.hostcost import audit_cpu_ms, socket_count
from bench.procs import REPO, cpu_seconds, free_port, rounds, running_agent, settle
from bench.report import Goal, Result, main_for, method
from bench.stats import ratio, table
from bench.targets import Targets, simulated_targets
from testbed.agent_proc import agent_env, vpc_config

SIZES = (1_000, 50_000)
FLAT_GOAL = 1.2
LISTENERS = 8  # spreads the client ends over several ports' worth of ephemeral ports
_NETNS_MARK = "STS_BENCH_OWN_NETNS"
_RESET = struct.pack("ii", 1, 0)


def _in_own_netns() -> None:
    """Re-run this benchmark in a fresh network namespace when root can make one."""
    if os.environ.get(_NETNS_MARK) or os.geteuid() != 0 or not shutil.which("unshare"):
        return
    env = dict(os.environ, **{_NETNS_MARK: "1"})
    script = 'ip link set lo up && exec "$0" "$@"'
    cmd = ["unshare", "--net", "--", "sh", "-c", script, sys.executable, "-m", "bench.sockets"]
    os.chdir(REPO)
    os.execvpe("unshare", [*cmd, *sys.argv[1:]], env)


def _raise_fd_limit() -> int:
    """Soft descriptor limit up to the hard one (and the hard one up, where root may)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for want in (max(hard, 1 << 16), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def hold(pairs: int) -> None:
    """In a child: open `pairs` loopback connections, say so, keep them until stdin closes."""
    _raise_fd_limit()
    listeners = [socket.create_server(("127.0.0.1", 0), backlog=4096) for _ in range(LISTENERS)]
    held: list[socket.socket] = []
    for i in range(pairs):
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        client.connect(listeners[i % LISTENERS].getsockname())
        server, _ = listeners[i % LISTENERS].accept()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        held += (client, server)
    print("ready", flush=True)
    sys.stdin.read()  # the benchmark closes it when done, or dies and it closes anyway


class Table:
    """Established loopback connections held by child processes, to grow the socket table.

    Children, because one process may hold only so many descriptors (the
    hard limit, without root to raise it); each one holds as many pairs as
    its limit allows, and all of them end when the benchmark closes their stdin.
    """

    def __init__(self) -> None:
        self.per_child = max(1, (_raise_fd_limit() - 256) // 2)
        self.children: list[subprocess.Popen[str]] = []

    def grow_to(self, entries: int) -> int:
        """Open connection pairs until the table holds about `entries`; returns its size."""
        need = max(0, entries - socket_count()) // 2
        while need > 0:
            pairs = min(need, self.per_child)
            child = subprocess.Popen(
                [sys.executable, "-c", f"from bench.sockets import hold; hold({pairs})"],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.children.append(child)
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise SystemExit(f"bench: a connection holder exited {child.wait()}")
            need -= pairs
        return socket_count()

    def close(self) -> None:
        for child in self.children:
            if child.stdin is not None:
                child.stdin.close()
        for child in self.children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children = []


@contextmanager
def _table() -> Iterator[Table]:
    t = Table()
    try:
        yield t
    finally:
        t.close()


def _reader(t: Targets) -> str:
    from agent.audit.connections import count_connections

    known = {a: ("regional", "vpce") for addrs in t.names.values() for a in addrs}
    return count_connections(known, ports=(t.port,), with_owners=False).source


Row = dict[str, float | str]


def measure(t: Targets, tmp: Path, sizes: tuple[int, ...], window: float, calls: int) -> list[Row]:
    port = free_port()
    config = vpc_config(t.vpc, tmp / "agent.toml", port, interval=1, timeout=0.8)
    out: list[Row] = []
    with running_agent(config, agent_env(t.vpc), port, tmp=tmp) as agent, _table() as filler:
        agent.wait_ready()
        for size in sizes:
            entries = filler.grow_to(size)
            netlink_ms, source = audit_cpu_ms(t, calls), _reader(t)
            proc_ms = audit_cpu_ms(t, max(3, calls // 4), reader="proc")
            settle(agent.proc.pid, limit=3)
            r0, c0 = rounds(agent), cpu_seconds(agent.proc.pid)
            time.sleep(window)
            r1, c1 = rounds(agent), cpu_seconds(agent.proc.pid)
            out.append(
                {
                    "entries": float(entries),
                    "netlink_ms": netlink_ms,
                    "source": source,
                    "proc_ms": proc_ms,
                    "round_ms": 1000 * (c1 - c0) / max(r1 - r0, 1),
                    "rounds": r1 - r0,
                }
            )
    return out


def _audit_period(audit_ms: float, interval: float = 1.0) -> float:
    """How often the agent's paced audit runs at this cost, at a 1 s interval."""
    return max(interval, audit_ms / 1000 / DUTY)


def _per_entry_us(small: Row, big: Row) -> float:
    extra = float(big["netlink_ms"]) - float(small["netlink_ms"])
    return 1000 * extra / max(1.0, float(big["entries"]) - float(small["entries"]))


def run(quick: bool) -> Result:
    own_ns = bool(os.environ.get(_NETNS_MARK))
    window, calls = (10.0, 20) if quick else (40.0, 60)
    sizes = SIZES
    with tempfile.TemporaryDirectory(prefix="sts-bench-") as d:
        tmp = Path(d)
        with simulated_targets(tmp / "sim") as t:
            rows = measure(t, tmp, sizes, window, calls)
    result = Result(
        "sockets",
        "Connection audit on a busy host",
        method(__doc__),
    )
    small, big = rows[0], rows[-1]
    result.tables.append(
        table(
            (
                "Socket table entries",
                "Audit CPU ms, netlink",
                "Audit CPU ms, /proc/net",
                "/proc ÷ netlink",
                "Agent audits every (s)",
                "Agent CPU ms per round (netlink)",
                "Rounds",
            ),
            [
                [
                    f"{r['entries']:,.0f}",
                    f"{r['netlink_ms']:.2f}",
                    f"{r['proc_ms']:.2f}",
                    ratio(float(r["proc_ms"]), float(r["netlink_ms"])),
                    f"{_audit_period(float(r['netlink_ms'])):.1f}",
                    f"{r['round_ms']:.2f}",
                    f"{r['rounds']:.0f}",
                ]
                for r in rows
            ]
            + [
                [
                    f"*{big['entries']:,.0f} ÷ {small['entries']:,.0f}*",
                    ratio(float(big["netlink_ms"]), float(small["netlink_ms"])),
                    ratio(float(big["proc_ms"]), float(small["proc_ms"])),
                    "",
                    "",
                    ratio(float(big["round_ms"]), float(small["round_ms"])),
                    "",
                ]
            ],
        )
    )
    flat = float(big["round_ms"]) / float(small["round_ms"])
    result.goals.append(
        Goal(
            f"agent CPU per round at {big['entries']:,.0f} entries within {FLAT_GOAL}× of "
            f"{small['entries']:,.0f} (netlink)",
            flat <= FLAT_GOAL and big["source"] == "netlink",
            f"{flat:.2f}× ({small['round_ms']:.2f} → {big['round_ms']:.2f} ms)",
            f"one audit went {small['netlink_ms']:.2f} → {big['netlink_ms']:.2f} ms with netlink "
            f"(the kernel still walks its connection hash, about "
            f"{_per_entry_us(small, big):.2f} µs an entry, but copies out only the STS "
            f"connections) where /proc/net went {small['proc_ms']:.2f} → {big['proc_ms']:.2f} ms; "
            f"the agent keeps the audit under {DUTY:.1%} of a CPU, so at "
            f"{big['entries']:,.0f} entries it counted every "
            f"{_audit_period(float(big['netlink_ms'])):.1f} s instead of every round",
        )
    )
    unpaced = float(big["round_ms"]) + float(big["netlink_ms"]) * (
        1 - 1 / _audit_period(float(big["netlink_ms"]))
    )
    result.notes.append(
        f"Without the pacing, auditing every round at {big['entries']:,.0f} entries would "
        f"add its whole cost to each round: about {unpaced:.1f} ms "
        f"({unpaced / float(small['round_ms']):.2f}× the small table; derived from the "
        "audit's measured cost, not run)."
    )
    result.notes.append(
        "The table was built in a network namespace of the benchmark's own."
        if own_ns
        else "The table was built in the machine's own network namespace (not root): "
        "whatever else runs there counts too."
    )
    result.notes.append(
        f"Reader the audit used: {big['source']}. The connections are held by child processes, "
        "each with as many as its descriptor limit allows."
    )
    return result


def main() -> None:
    _in_own_netns()
    main_for("sockets", __doc__, run)


if __name__ == "__main__":
    main()
