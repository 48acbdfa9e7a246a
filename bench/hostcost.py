"""What the connection audit costs on this host right now.

The agent reads the whole TCP socket table (and maps sockets to processes)
every round, so that part of its CPU depends on the host, not on the agent's
targets; measuring the same call here separates the two.
"""

from __future__ import annotations

import time

from bench.stats import median


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


def audit_cpu_ms(port: int, n: int = 15) -> float:
    """Median CPU of one connection audit (the agent's own function) on this host now.

    Thread CPU time, so the simulated servers working in this process meanwhile
    do not count.
    """
    from agent.audit.connections import count_connections

    costs = []
    for _ in range(n):
        started = time.thread_time()
        count_connections({}, ports=(port,))
        costs.append(1000 * (time.thread_time() - started))
    return median(costs)
