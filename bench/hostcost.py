"""What the connection audit costs on this host right now.

The agent's connection audit costs what the host's socket table costs (the
kernel walks it even for a filtered sock_diag request), not what the agent's
targets cost; measuring the same call here separates the two.
"""

from __future__ import annotations

import time

from bench.stats import median
from bench.targets import Targets


def socket_count() -> int:
    """TCP sockets in this network namespace, TIME_WAIT included."""
    total = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as fh:
                total += sum(1 for _ in fh) - 1
        except OSError:
            pass
    return total


def audit_cpu_ms(t: Targets, n: int = 15, reader: str = "auto") -> float:
    """Median CPU of one connection audit as the daemon makes it, on this host now.

    The agent's own function on the targets' addresses, without owner names,
    unpaced; thread CPU, so the simulated servers working in this process
    meanwhile do not count (the kernel's work for the request does).
    """
    from agent.audit.connections import count_connections

    known = {a: ("regional", "vpce") for addrs in t.names.values() for a in addrs}
    costs = []
    for _ in range(n):
        started = time.thread_time()
        count_connections(known, ports=(t.port,), with_owners=False, reader=reader)
        costs.append(1000 * (time.thread_time() - started))
    return median(costs)
