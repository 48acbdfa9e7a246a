"""What the numbers were measured on; every script prints this first."""

from __future__ import annotations

import os
import platform

import psutil

from bench import blackbox


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(*, with_blackbox: bool = True) -> dict[str, str]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    out = {
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": _cpu_model(),
        "memory": f"{psutil.virtual_memory().total / (1 << 30):.1f} GiB",
        "kernel": platform.release(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "load average at start": load,
    }
    if with_blackbox:
        out["blackbox_exporter"] = blackbox.version()
    return out
