"""Soak: the real daemon for thousands of rounds against flapping faults, watching for leaks.

An agent that runs for months on every host must not grow with the number of
rounds it has run.  A socket not closed after a reset, a thread stuck on a hung
endpoint or a cache keyed by a changing answer all show up only after many
rounds of the failures that cause them.  This runs `sts-agent serve` as a
subprocess against the simulated VPC (in this process, on loopback), flips DNS,
STS, IMDS and private-DNS faults every few seconds, and compares the daemon's
resident memory, open descriptors and threads after warm-up with the same
numbers at the end, both taken with the faults cleared and a few clean rounds
run, so the two samples see the same steady state.

    python bench/soak.py                      # about four minutes at 0.2 s rounds
    python bench/soak.py --seconds 60 --interval 0.2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from agent.simulate.demo import SimulatedVpc, simulated_vpc

DEFAULT_INTERVAL = 0.2
DEFAULT_ROUNDS = 1200  # about four minutes at the default interval
# None is listed several times so that most windows are healthy for each part,
# as in a real VPC where faults come and go rather than pile up.
DNS_FAULTS = (None, None, None, None, "timeout", "servfail", "nxdomain", "refused", "truncate")
STS_FAULTS = (
    *(None,) * 6,
    "hang",
    "hang_accept",
    "reset_handshake",
    "reset_response",
    "slow_drip",
    "malformed",
    "plain_http",
    "http_503",
    "error:Throttling",
    "error:ExpiredToken",
)
IMDS_FAULTS = (None, None, None, "timeout", "unauthorized", "token_forbidden", "garbage_cidrs")
_SCRAPE_TIMEOUT = 5.0
_HISTORY_WAIT_ROUNDS = 120  # the daemon's window; the wait is a generous multiple of it
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Log = Callable[[str], None]


@dataclass(frozen=True)
class Sample:
    """One look at the daemon: its own resources, then its round counters."""

    at: float  # monotonic seconds
    rss_bytes: int
    fds: int
    threads: int
    rounds: int
    skipped: int
    history_rounds: int | None  # rounds the history window holds (start and end only)


@dataclass
class SoakResult:
    start: Sample
    end: Sample
    trace: list[Sample]  # periodic samples taken while faults were flapping
    interval: float
    flap_every: float
    flips: Counter[str] = field(default_factory=Counter)
    exit_code: int | None = None
    log_tail: str = ""

    @property
    def rounds(self) -> int:
        return self.end.rounds - self.start.rounds

    @property
    def seconds(self) -> float:
        return self.end.at - self.start.at

    def stalled_windows(self) -> list[tuple[float, float]]:
        """Trace windows (relative seconds) in which not one round completed."""
        out = []
        for a, b in zip(self.trace, self.trace[1:], strict=False):
            if b.rounds <= a.rounds:
                out.append((a.at - self.start.at, b.at - self.start.at))
        return out


class Daemon:
    """`sts-agent serve` as a subprocess pointed at the simulated VPC."""

    def __init__(self, vpc: SimulatedVpc, workdir: Path, interval: float) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "soak.toml"
        self.log_path = workdir / "soak-agent.log"
        self.config.write_text(_config_toml(vpc, self.port, interval))
        self.env = _ec2_like_environment(vpc)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "agent", "serve", "--config", str(self.config)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def get(self, path: str) -> tuple[int, str]:
        try:
            with _NO_PROXY.open(self.base + path, timeout=_SCRAPE_TIMEOUT) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def counters(self) -> tuple[int, int]:
        """(rounds completed, rounds skipped), as a scrape reports them."""
        status, text = self.get("/metrics")
        if status != 200:
            raise OSError(f"/metrics answered {status}")
        values = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name in ("sts_agent_rounds_total", "sts_agent_rounds_skipped_total")
        }
        return int(values["sts_agent_rounds_total"]), int(values["sts_agent_rounds_skipped_total"])

    def sample(self, *, with_history: bool = False) -> Sample:
        # /proc first: the scrape's own connection must not be counted as the daemon's.
        proc = psutil.Process(self.pid)
        with proc.oneshot():
            rss, fds, threads = proc.memory_info().rss, proc.num_fds(), proc.num_threads()
        rounds, skipped = self.counters()
        # /api/history only at start and end: like a status page, it is not polled.
        held = self.history()[0] if with_history else None
        return Sample(time.monotonic(), rss, fds, threads, rounds, skipped, held)

    def history(self) -> tuple[int, int]:
        """(rounds held, rounds the window holds at most), from /api/history."""
        status, text = self.get("/api/history")
        if status != 200:
            raise OSError(f"/api/history answered {status}")
        window = json.loads(text)["window"]
        return int(window["rounds"]), int(window["max_rounds"])

    def history_full(self) -> bool:
        held, most = self.history()
        return held >= most

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"agent exited while waiting for {what}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, KeyError):
                if predicate():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


class Flapper:
    """Flips random faults on the simulated VPC every `every` seconds, on its own thread."""

    def __init__(self, vpc: SimulatedVpc, rng: random.Random, every: float) -> None:
        self.vpc = vpc
        self.rng = rng
        self.every = every
        self.flips: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> None:
        rng, vpc = self.rng, self.vpc
        vpc.dns.fault = self._count("dns", rng.choice(DNS_FAULTS))
        for server in vpc.sts.values():
            server.fault = self._count("sts", rng.choice(STS_FAULTS))
        vpc.imds.fault = self._count("imds", rng.choice(IMDS_FAULTS))
        private = rng.random() < 0.7
        vpc.private_dns(private)
        self._count("private-dns", "on" if private else "off")

    def _count(self, part: str, fault: str | None) -> str | None:
        self.flips[f"{part} {fault or 'healthy'}"] += 1
        return fault

    def clear(self) -> None:
        self.vpc.dns.fault = None
        self.vpc.imds.fault = None
        for server in self.vpc.sts.values():
            server.fault = None
        self.vpc.private_dns(True)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="flapper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.every)


def run_soak(
    *,
    rounds: int | None = DEFAULT_ROUNDS,
    seconds: float | None = None,
    interval: float = DEFAULT_INTERVAL,
    flap_every: float = 2.0,
    warmup: float = 15.0,
    sample_every: float = 5.0,
    settle_rounds: int = 5,
    seed: int | None = None,
    workdir: Path | None = None,
    log: Log | None = None,
) -> SoakResult:
    """Soak until `rounds` more rounds completed or `seconds` passed, whichever is first."""
    if rounds is None and seconds is None:
        raise ValueError("run_soak: give rounds, seconds or both")
    say: Log = log or (lambda _msg: None)
    _raise_fd_limit()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        vpc = stack.enter_context(simulated_vpc(workdir / "vpc"))
        daemon = Daemon(vpc, workdir, interval)
        stack.callback(daemon.stop)
        flapper = Flapper(vpc, random.Random(seed), flap_every)
        stack.callback(flapper.stop)

        daemon.start()
        daemon.wait("/-/ready", lambda: daemon.get("/-/ready")[0] == 200, 60)
        say(f"agent pid {daemon.pid} ready on {daemon.base}; warming up for {warmup:.0f} s")
        flapper.start()
        time.sleep(warmup)
        # Memory is compared with the history window full, as it is on a host after an hour.
        daemon.wait(
            "a full history window",
            daemon.history_full,
            _HISTORY_WAIT_ROUNDS * interval * 4 + 60,
        )
        flapper.stop()
        start = _settled_sample(daemon, settle_rounds, interval)
        say(f"start: {_brief(start)}")

        cap = seconds if seconds is not None else 4 * (rounds or 0) * interval + 60
        trace = [start]
        flapper.start()
        while True:
            time.sleep(min(sample_every, max(0.1, cap - (time.monotonic() - start.at))))
            if not daemon.alive():
                break
            now = daemon.sample()
            trace.append(now)
            say(f"{now.at - start.at:6.0f} s: {_brief(now)}")
            if rounds is not None and now.rounds - start.rounds >= rounds:
                break
            if now.at - start.at >= cap:
                break
        flapper.stop()
        if not daemon.alive():
            tail = daemon.log_tail()
            raise RuntimeError(f"agent died during the soak:\n{tail}")
        end = _settled_sample(daemon, settle_rounds, interval)
        say(f"end:   {_brief(end)}")
        code = daemon.stop()
        return SoakResult(
            start, end, trace, interval, flap_every, flapper.flips, code, daemon.log_tail()
        )


def _settled_sample(daemon: Daemon, settle_rounds: int, interval: float) -> Sample:
    """With faults cleared, let a few clean rounds run so hung probes have timed out."""
    first = daemon.counters()[0]
    daemon.wait(
        f"{settle_rounds} clean rounds",
        lambda: daemon.counters()[0] >= first + settle_rounds,
        settle_rounds * interval * 10 + 30,
    )
    return daemon.sample(with_history=True)


def _brief(s: Sample) -> str:
    return (
        f"rss {s.rss_bytes / 2**20:.1f} MiB, fds {s.fds}, threads {s.threads}, "
        f"rounds {s.rounds}, skipped {s.skipped}"
    )


def _raise_fd_limit() -> None:
    # The simulated STS keeps a thread and socket per hung request until it stops;
    # a long soak must not run this process out of descriptors before the agent.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config_toml(vpc: SimulatedVpc, port: int, interval: float) -> str:
    timeout = round(min(2.0, interval * 0.75), 3)
    return "\n".join(
        [
            f"interval = {interval}",
            f"timeout = {timeout}",
            f"port = {vpc.sts_port}",
            f'ca_bundle = "{vpc.ca_path}"',
            f'resolvers = ["{vpc.dns.address}:{vpc.dns.port}"]',
            "discovery_interval = 5",  # rediscover (IMDS, resolvers) many times per soak
            "[expect]",
            'regional = "vpce"',
            'global = "public"',
            "[imds]",
            f'address = "127.0.0.1:{vpc.imds.port}"',
            "timeout = 1.0",
            "[web]",
            f'listen_address = "127.0.0.1:{port}"',
            "[log]",
            'level = "error"',  # overrun warnings every round would only fill the disk
            "",
        ]
    )


def _ec2_like_environment(vpc: SimulatedVpc) -> dict[str, str]:
    """Credentials only from the simulated instance profile; none of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STS_AGENT_"))}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_DEFAULT_REGION="us-east-2",
        AWS_EC2_METADATA_SERVICE_ENDPOINT=vpc.imds.url,
    )
    return env


# --- report --------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": f"{len(os.sched_getaffinity(0))} usable (nproc), {os.cpu_count()} online",
        "cpu model": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": f"{platform.system()} {platform.release()}",
    }


def format_report(result: SoakResult, host: dict[str, str] | None = None) -> str:
    s, e = result.start, result.end
    mib = 2**20
    rows = [
        (
            "RSS (MiB)",
            f"{s.rss_bytes / mib:.1f}",
            f"{e.rss_bytes / mib:.1f}",
            f"{(e.rss_bytes - s.rss_bytes) / mib:+.1f}",
        ),
        ("open file descriptors", str(s.fds), str(e.fds), f"{e.fds - s.fds:+d}"),
        ("threads", str(s.threads), str(e.threads), f"{e.threads - s.threads:+d}"),
        ("rounds completed", str(s.rounds), str(e.rounds), f"{e.rounds - s.rounds:+d}"),
        ("rounds skipped", str(s.skipped), str(e.skipped), f"{e.skipped - s.skipped:+d}"),
        (
            "history rounds held",
            str(s.history_rounds),
            str(e.history_rounds),
            f"{(e.history_rounds or 0) - (s.history_rounds or 0):+d}",
        ),
    ]
    lines = [f"{k}: {v}" for k, v in (host or machine()).items()]
    peak = max(t.rss_bytes for t in result.trace) / mib
    lines += [
        f"soak: {result.rounds} rounds in {result.seconds:.0f} s at interval {result.interval} s, "
        f"faults flipped every {result.flap_every} s; peak RSS while flapping {peak:.1f} MiB",
        "",
        f"{'':24}{'start':>10}{'end':>10}{'change':>10}",
    ]
    lines += [f"{name:24}{a:>10}{b:>10}{d:>10}" for name, a, b, d in rows]
    stalls = result.stalled_windows()
    lines += [
        "",
        f"windows without a completed round: {len(stalls)} of {len(result.trace) - 1}",
        f"daemon exit code after SIGTERM: {result.exit_code}",
        "faults applied (part fault: windows): "
        + ", ".join(f"{k}: {v}" for k, v in sorted(result.flips.items())),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--rounds", type=int, help=f"stop after this many rounds (default {DEFAULT_ROUNDS})"
    )
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help="probe interval, s")
    p.add_argument("--flap-every", type=float, default=2.0, help="seconds between fault flips")
    p.add_argument("--warmup", type=float, default=15.0, help="seconds of flapping before start")
    p.add_argument("--seed", type=int, help="random seed for the fault sequence")
    args = p.parse_args(argv)
    rounds = args.rounds if args.rounds is not None or args.seconds is not None else DEFAULT_ROUNDS
    result = run_soak(
        rounds=rounds,
        seconds=args.seconds,
        interval=args.interval,
        flap_every=args.flap_every,
        warmup=args.warmup,
        seed=args.seed,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(format_report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
