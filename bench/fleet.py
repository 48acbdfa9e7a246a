"""Fleet: what N agents cost one real Prometheus while public DNS rotates.

N agents (20 by default) run their default configuration against one
simulated VPC: the regional name on three endpoint ENIs, the global name
answered by a resolver that hands out the next address of a 40-address
public pool on every answer (TTL 5 s), so each round sees a new public
address.  One Debian Prometheus scrapes them all with the shipped rules
(per-host and fleet) loaded.  After a warm-up in which every agent has been
scraped twice, the window starts: head series per host, series created per
host per hour (Prometheus' own prometheus_tsdb_head_series_created_total over
the window), distinct series over the window against series at one moment,
samples, bytes (plain and gzip, as Prometheus asks) and duration per scrape.
blackbox_exporter's cost for the same probes per host (one http probe per
ENI, one of the global name, one dns probe per name) is counted from its own
/probe answers plus the five series Prometheus adds per scrape target.
Figures for 10,000 hosts are the per-host figures times 10,000.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from bench.blackbox import binary as blackbox_binary
from bench.blackbox import modules_for, running_blackbox
from bench.machine import describe
from bench.procs import REPO, free_port, running_agent
from bench.promtext import parse, value
from bench.report import Goal, Result, cli, emit, method
from bench.stats import median, table
from bench.targets import GLOBAL, REGIONAL, Targets, simulated_targets
from testbed.agent_proc import AgentProcess, agent_env, vpc_config, wait_for
from testbed.prometheus import Prometheus, prometheus_scraping

ENIS = ("127.10.138.148", "127.10.139.20", "127.10.140.7")
POOL = tuple(f"127.20.1.{i}" for i in range(1, 41))
LAYOUT = {REGIONAL: ENIS, GLOBAL: POOL}
TTL = 5
FLEET = 10_000
SYNTHETIC_PER_TARGET = 5  # up, scrape_duration_seconds, scrape_samples_*, scrape_series_added
RULES = [
    REPO / "deploy" / "prometheus" / "rules" / "sts-agent.rules.yml",
    REPO / "deploy" / "prometheus" / "rules" / "sts-agent-fleet.rules.yml",
]
SERIES_GOAL = 160 + SYNTHETIC_PER_TARGET  # the agent's budget plus Prometheus' own per target
CHURN_GOAL = 1.2  # distinct series over the window ÷ series at one moment


def _own_metric(prom: Prometheus, name: str) -> float:
    """A value from Prometheus' own /metrics (it does not scrape itself here)."""
    with urllib.request.urlopen(f"{prom.base}/metrics", timeout=10) as r:
        v = value(parse(r.read().decode()), name)
    return float("nan") if v is None else v


def _scalar(prom: Prometheus, expr: str) -> float:
    res = prom.query(expr)
    return float(res[0]["value"][1]) if res else float("nan")


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        body: bytes = r.read()
    return body


def _series(prom: Prometheus, start: float, end: float) -> set[tuple[tuple[str, str], ...]]:
    """Every sts-agent job series with a sample between start and end (the series API)."""
    query = urllib.parse.urlencode(
        {"match[]": '{job="sts-agent"}', "start": f"{start:.3f}", "end": f"{end:.3f}"}
    )
    doc = json.loads(_fetch(f"{prom.base}/api/v1/series?{query}"))
    return {tuple(sorted(labels.items())) for labels in doc["data"]}


def _body_bytes(url: str) -> tuple[int, int]:
    """(plain, gzip) size of one /metrics answer."""
    plain = _fetch(url)
    return len(plain), len(gzip.compress(plain))


def _blackbox_cost(t: Targets, tmp: Path) -> dict[str, float] | None:
    """Series and bytes per host if blackbox_exporter did the same probes; None without it."""
    try:
        blackbox_binary()
    except SystemExit:
        return None
    jobs = [(f"sts:{REGIONAL}", f"https://{a}:{t.port}/") for a in ENIS]
    jobs.append((f"sts:{GLOBAL}", f"https://{POOL[0]}:{t.port}/"))  # one target for the name
    jobs += [(f"dns:{name}", t.resolver) for name in LAYOUT]
    series = nbytes = 0
    with running_blackbox(tmp / "bb", modules_for(t)) as box:
        for module, target in jobs:
            query = urllib.parse.urlencode({"module": module, "target": target})
            body = _fetch(f"{box.base}/probe?{query}")
            series += len(parse(body.decode()))
            nbytes += len(body)
    return {
        "targets": float(len(jobs)),
        "series": float(series + SYNTHETIC_PER_TARGET * len(jobs)),
        "bytes": float(nbytes),
    }


def measure(
    n: int, duration: float, interval: float, scrape: float, tmp: Path
) -> tuple[dict[str, float], list[str]]:
    with simulated_targets(tmp / "sim", LAYOUT, ttl=TTL) as t, contextlib.ExitStack() as stack:
        t.dns.rotate(GLOBAL, POOL, per_answer=1)
        agents: list[AgentProcess] = []
        for i in range(n):
            port = free_port()
            timeout = min(5.0, interval / 2)
            cfg = vpc_config(
                t.vpc, tmp / f"agent-{i}.toml", port, interval=interval, timeout=timeout
            )
            agents.append(stack.enter_context(running_agent(cfg, agent_env(t.vpc), port, tmp=tmp)))
        for a in agents:
            a.wait_ready(120)
        prom = stack.enter_context(
            prometheus_scraping(
                [f"127.0.0.1:{a.port}" for a in agents],
                tmp,
                interval=f"{scrape:g}s",
                rules=RULES,
            )
        )
        # Warm-up: every agent scraped at least twice with a finished round.
        wait_for(
            lambda: (
                _scalar(prom, 'count(count_over_time(up{job="sts-agent"}[10m]) >= 2)') >= n
                and _scalar(prom, "count(count by (instance) (sts_agent_probe_success))") >= n
            ),
            max(120.0, 4 * max(interval, scrape)),
            "every agent scraped twice",
        )
        created0, t0 = _own_metric(prom, "prometheus_tsdb_head_series_created_total"), time.time()
        time.sleep(duration)
        created1, t1 = _own_metric(prom, "prometheus_tsdb_head_series_created_total"), time.time()
        # The agents' own new series, apart from what the rules record (ALERTS included).
        before, during = _series(prom, t0 - scrape, t0), _series(prom, t0, t1)
        new = during - before
        new_names = sorted({dict(labels)["__name__"] for labels in new})
        window = f"{int(t1 - t0)}s"
        job = '{job="sts-agent"}'
        sizes = [_body_bytes(f"{a.base}/metrics") for a in agents]
        m = {
            "agents": float(n),
            "window_s": t1 - t0,
            "head_series": _own_metric(prom, "prometheus_tsdb_head_series"),
            "per_host": _scalar(prom, f"quantile(0.5, count by (instance) ({job}))"),
            "per_host_max": _scalar(prom, f"max(count by (instance) ({job}))"),
            # _over_time drops the name, so copy it into a label over a subquery first.
            "distinct": _scalar(
                prom,
                f'count(last_over_time(label_replace({job}, "name", "$1", "__name__", "(.+)")'
                f"[{window}:{scrape:g}s]))",
            ),
            "moment": _scalar(prom, f"count({job})"),
            "created": created1 - created0,
            "agent_created": float(len(new)),
            "samples": _scalar(prom, 'quantile(0.5, scrape_samples_scraped{job="sts-agent"})'),
            "scrape_s": _scalar(
                prom, f"quantile(0.5, avg_over_time(scrape_duration_seconds{job}[{window}]))"
            ),
            "scrape_max_s": _scalar(
                prom, f"max(max_over_time(scrape_duration_seconds{job}[{window}]))"
            ),
            "bytes": median([float(p) for p, _ in sizes]),
            "gzip_bytes": median([float(g) for _, g in sizes]),
            "public_answers": float(len(POOL)),
            # Proof that DNS really rotated: the hash of each host's public set changed.
            "rotations": _scalar(
                prom,
                f'sum(changes(sts_agent_endpoint_public_address_hash{{endpoint="{GLOBAL}"}}'
                f"[{window}]))",
            ),
            "prom_rss_mib": _own_metric(prom, "process_resident_memory_bytes") / (1 << 20),
        }
        bb = _blackbox_cost(t, tmp)
    if bb is not None:
        m.update({f"bb_{k}": v for k, v in bb.items()})
    return m, new_names


def result_of(m: dict[str, float], new_names: list[str], interval: float, scrape: float) -> Result:
    n = m["agents"]
    hours = m["window_s"] / 3600
    churn_per_host_hour = m["created"] / n / hours if hours > 0 else float("nan")
    agent_churn = m["agent_created"] / n / hours if hours > 0 else float("nan")
    distinct_ratio = m["distinct"] / m["moment"] if m["moment"] else float("nan")
    per_host = m["per_host"]
    ingest = m["gzip_bytes"] * FLEET / scrape
    r = Result(
        "fleet",
        "Fleet: one Prometheus, many agents, rotating public DNS",
        method(__doc__),
    )
    r.tables.append(
        table(
            ("Per host", "Measured", f"× {FLEET:,} hosts"),
            [
                [
                    "head series (agent + Prometheus' 5 per target)",
                    f"{per_host:.0f} (max {m['per_host_max']:.0f})",
                    f"{per_host * FLEET:,.0f}",
                ],
                [
                    "series created per hour, all (head_series_created_total)",
                    f"{churn_per_host_hour:.1f}",
                    f"{churn_per_host_hour * FLEET:,.0f}",
                ],
                [
                    "… of them the agent's own (series API)",
                    f"{agent_churn:.1f}",
                    f"{agent_churn * FLEET:,.0f}",
                ],
                ["distinct series over the window ÷ at one moment", f"{distinct_ratio:.3f}", ""],
                [
                    "samples per scrape",
                    f"{m['samples']:.0f}",
                    f"{m['samples'] * FLEET / scrape:,.0f} samples/s",
                ],
                [
                    "bytes per scrape (plain / gzip)",
                    f"{m['bytes']:.0f} / {m['gzip_bytes']:.0f}",
                    f"{ingest / 1e6:.1f} MB/s gzip",
                ],
                [
                    "scrape duration (median / max)",
                    f"{m['scrape_s'] * 1000:.1f} ms / {m['scrape_max_s'] * 1000:.1f} ms",
                    "",
                ],
            ],
        )
    )
    if "bb_series" in m:
        r.tables.append(
            table(
                ("Same probes per host", "sts-agent", "blackbox_exporter", f"blackbox × {FLEET:,}"),
                [
                    [
                        "scrape targets",
                        "1",
                        f"{m['bb_targets']:.0f}",
                        f"{m['bb_targets'] * FLEET:,.0f}",
                    ],
                    [
                        "head series",
                        f"{per_host:.0f}",
                        f"{m['bb_series']:.0f}",
                        f"{m['bb_series'] * FLEET:,.0f}",
                    ],
                    [
                        "bytes per host per scrape interval (plain)",
                        f"{m['bytes']:.0f}",
                        f"{m['bb_bytes']:.0f}",
                        "",
                    ],
                ],
            )
        )
    else:
        r.notes.append("blackbox_exporter was not installed: its column is missing from this run.")
    r.notes.append(
        f"{n:.0f} agents at a {interval:g} s interval, scraped every {scrape:g} s; window "
        f"{m['window_s']:.0f} s; the global name rotated through {m['public_answers']:.0f} public "
        f"addresses, and the agents' public address set changed {m['rotations']:.0f} times in "
        f"the window ({m['rotations'] / n:.1f} per host); Prometheus head "
        f"{m['head_series']:.0f} series (rules included), RSS {m['prom_rss_mib']:.0f} MiB."
    )
    r.notes.append(
        "Series the agents started in the window: "
        + (", ".join(f"`{name}`" for name in new_names) or "none")
        + "; the rest of the head's new series are the rules' (recorded series and ALERTS)."
    )
    r.goals.append(
        Goal(
            f"head series per host ≤ {SERIES_GOAL}",
            per_host <= SERIES_GOAL,
            f"{per_host:.0f}",
            "the agent's budget of 160 plus Prometheus' five per target",
        )
    )
    r.goals.append(
        Goal(
            f"distinct ÷ momentary series ≤ {CHURN_GOAL}",
            distinct_ratio <= CHURN_GOAL,
            f"{distinct_ratio:.3f}",
            "public addresses must not make series of their own",
        )
    )
    return r


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", type=int, default=20, help="agents to run (default 20)")
    p.add_argument("--duration", type=float, default=240.0, help="window in seconds (default 240)")
    p.add_argument("--interval", type=float, default=30.0, help="agent interval, s (default 30)")
    p.add_argument("--scrape-interval", type=float, default=15.0, help="s (default 15)")


def main() -> None:
    args = cli("fleet", __doc__, _options)
    if args.quick:
        args.agents, args.duration = min(args.agents, 5), min(args.duration, 60.0)
    started = time.monotonic()
    machine = describe()
    with tempfile.TemporaryDirectory(prefix="sts-bench-fleet-") as d:
        m, new_names = measure(
            args.agents, args.duration, args.interval, args.scrape_interval, Path(d)
        )
    result = result_of(m, new_names, args.interval, args.scrape_interval)
    result.machine = machine
    emit(result, args, started)


if __name__ == "__main__":
    main()
