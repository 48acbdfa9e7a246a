"""Timing accuracy: each tool's phase timings against delays injected server-side.

The simulated DNS holds every answer 20 ms, the simulated STS holds the TLS
handshake 30 ms after accepting and the answer 100 ms after reading the
request; connect gets nothing injected (loopback).  An injected delay is a
lower bound for the phase, so the error is measured - injected: what a tool
adds on top (its own scheduling and parsing, plus the real work of the
handshake and of the simulated servers, which both tools share).  The floor,
each phase measured with nothing injected, shows how much of that is real
work.

The main comparison probes one name with one address, so every probe of
either tool runs alone.  The agent is measured warm (its blackbox-style
/probe, one observation per phase in a fresh registry) and cold (`check
--json`, a new process each time, read from dns[].queries[].duration and
probes[].phases); blackbox_exporter through its /probe with the http prober
(dialling the address, with the STS name as Host and TLS server name) and
the dns prober (against the simulated DNS).  They are interleaved so drift
on the machine hits all of them alike.  A second pass probes three
addresses of one name at once with each tool, as a scheduled round does.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.blackbox import modules_for, running_blackbox
from bench.capture import Capture, loopback
from bench.procs import REPO, free_port, running_agent
from bench.promtext import Samples, parse, value, values
from bench.report import Goal, Result, main_for, method
from bench.stats import median, median_diff_ci, ms, percentile, ratio, table
from bench.targets import DEFAULT_LAYOUT, GLOBAL, REGIONAL, Targets, simulated_targets
from testbed.agent_proc import agent_env, vpc_config

INJECTED = {"dns": 0.020, "connect": 0.0, "tls": 0.030, "ttfb": 0.100}
NOTHING = dict.fromkeys(INJECTED, 0.0)
PHASES = tuple(INJECTED)
LAYOUT = {GLOBAL: ("127.20.0.10",), REGIONAL: DEFAULT_LAYOUT[REGIONAL]}
AGENT, CHECK, BOX = "agent /probe", "agent check", "blackbox"
AGENT_3, BOX_3 = "agent /probe, 3 at once", "blackbox, 3 at once"
GOAL_MS = 1.0

Errors = dict[str, list[float]]
Windows = dict[str, list[tuple[float, float]]]  # per tool: when each of its probes ran
Phases = dict[str, float]


def _agent_probe(base: str, endpoint: str) -> dict[str, list[float]]:
    """Phases of one blackbox-style /probe round: one observation per address and phase."""
    with urllib.request.urlopen(f"{base}/probe?endpoint={endpoint}", timeout=10) as r:
        s = parse(r.read().decode())
    out: dict[str, list[float]] = {}
    total = value(s, "sts_agent_dns_lookup_duration_seconds_sum", endpoint=endpoint)
    count = value(s, "sts_agent_dns_lookup_duration_seconds_count", endpoint=endpoint)
    if total is not None and count:
        out["dns"] = [total / count]  # A and AAAA, each delayed alike
    for phase in ("connect", "tls", "ttfb"):
        found = values(s, "sts_agent_request_phase_seconds", endpoint=endpoint, phase=phase)
        out[phase] = [v for _, v in found]
    return out


def _agent_check(config: Path, env: dict[str, str]) -> dict[str, list[float]]:
    """Every DNS question and probe phase of one `check --json` (one name, one address)."""
    res = subprocess.run(
        [sys.executable, "-m", "agent", "check", "--json", "--config", str(config)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if res.returncode == 2:
        raise SystemExit(f"bench: check failed: {res.stderr.strip()}")
    doc = json.loads(res.stdout)
    out: dict[str, list[float]] = {p: [] for p in PHASES}
    for ep in doc["endpoints"]:
        for lk in ep["dns"]:
            out["dns"] += [q["duration"] for q in lk["queries"] if q.get("duration") is not None]
        for pr in ep["probes"]:
            for phase in ("connect", "tls", "ttfb"):
                if pr["phases"].get(phase) is not None:
                    out[phase].append(pr["phases"][phase])
    return out


def _blackbox(https: list[Samples], dns: Samples) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"dns": [], "connect": [], "tls": [], "ttfb": []}
    v = value(dns, "probe_dns_duration_seconds", phase="request")
    if v is not None:
        out["dns"].append(v)
    for samples in https:
        for phase, theirs in (("connect", "connect"), ("tls", "tls"), ("ttfb", "processing")):
            v = value(samples, "probe_http_duration_seconds", phase=theirs)
            if v is not None:
                out[phase].append(v)
    return out


def _add(into: Errors, measured: dict[str, list[float]], injected: Phases) -> None:
    for phase, vals in measured.items():
        into.setdefault(phase, []).extend(v - injected[phase] for v in vals)


def measure(
    t: Targets, tmp: Path, *, floor: int, warm: int, cold: int, parallel: int
) -> tuple[dict[str, Errors], dict[str, Errors], Capture, Windows]:
    """(floor errors with nothing injected, errors with the delays injected), per tool; the
    loopback capture of the injected warm probes, and when each tool's probes ran in it."""
    port = free_port()
    # Back-to-back /probe rounds are the measurement here, so the flood limit is lifted.
    unlimited = {"web__probe_rate": 1000.0}
    config = vpc_config(t.vpc, tmp / "agent.toml", port, interval=3600, timeout=5, **unlimited)
    single = vpc_config(
        t.vpc,
        tmp / "single.toml",
        port,
        interval=3600,
        timeout=5,
        endpoints__regional=False,
        **unlimited,
    )
    env = agent_env(t.vpc)
    floors: dict[str, Errors] = {AGENT: {}, BOX: {}}
    errors: dict[str, Errors] = {k: {} for k in (AGENT, CHECK, BOX, AGENT_3, BOX_3)}
    with (
        running_agent(config, env, port, tmp=tmp) as agent,
        running_blackbox(tmp / "bb", modules_for(t)) as box,
        ThreadPoolExecutor(max_workers=len(LAYOUT[REGIONAL])) as pool,
    ):
        agent.wait_ready()

        def both(
            name: str,
            into: dict[str, Errors],
            keys: tuple[str, str],
            inj: Phases,
            windows: Windows | None = None,
        ) -> None:
            start = time.time()
            _add(into[keys[0]], _agent_probe(agent.base, name), inj)
            if windows is not None:
                windows[AGENT].append((start, time.time()))
            time.sleep(0.02)
            https = [f"https://{a}:{t.port}/" for a in LAYOUT[name]]
            start = time.time()
            answers = list(pool.map(lambda url: box.probe(f"sts:{name}", url)[1], https))
            if windows is not None:
                windows[BOX].append((start, time.time()))
            _, dns = box.probe(f"dns:{name}", t.resolver)
            _add(into[keys[1]], _blackbox(answers, dns), inj)
            time.sleep(0.02)

        both(GLOBAL, {AGENT: {}, BOX: {}}, (AGENT, BOX), NOTHING)  # first use, not counted
        t.set_delays()
        for _ in range(floor):
            both(GLOBAL, floors, (AGENT, BOX), NOTHING)
        t.set_delays(dns=INJECTED["dns"], handshake=INJECTED["tls"], processing=INJECTED["ttfb"])
        every = max(1, warm // cold) if cold else warm + 1
        cold_runs = 0
        windows: Windows = {AGENT: [], BOX: []}
        with loopback(t.port) as cap:
            for i in range(warm):
                both(GLOBAL, errors, (AGENT, BOX), INJECTED, windows)
                if i % every == 0 and cold_runs < cold:
                    _add(errors[CHECK], _agent_check(single, env), INJECTED)
                    cold_runs += 1
        for _ in range(parallel):
            both(REGIONAL, errors, (AGENT_3, BOX_3), INJECTED)
    return floors, errors, cap, windows


def _summary(
    floors: dict[str, Errors], errors: dict[str, Errors]
) -> tuple[list[list[object]], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    rows: list[list[object]] = []
    med: dict[str, dict[str, float]] = {}
    excess: dict[str, dict[str, float]] = {}
    groups = ((AGENT, CHECK, BOX), (AGENT_3, BOX_3))
    for phase in PHASES:
        for group in groups:
            for tool in group:
                errs = errors[tool].get(phase, [])
                e = [abs(x) for x in errs]
                m, p95 = median(e), percentile(e, 95)
                med.setdefault(tool, {})[phase] = m
                fl = median(floors.get(tool, {}).get(phase, []))
                excess.setdefault(tool, {})[phase] = m - fl
                rows.append(
                    [
                        phase,
                        f"{INJECTED[phase] * 1000:.0f}",
                        tool,
                        len(e),
                        ms(m, 3),
                        ms(p95, 3),
                        ms(fl, 3),
                        ms(m - fl, 3),
                        sum(1 for x in errs if x < 0),
                    ]
                )
            a, b = med[group[0]][phase], med[group[-1]][phase]
            label = "*agent ÷ blackbox*" + (", 3 at once" if group[0] == AGENT_3 else "")
            rows.append([phase, "", label, "", ratio(a, b), "", "", "", ""])
    return rows, med, excess


def _wire_note(cap: Capture, windows: Windows) -> str:
    """What the loopback capture says about each tool's handshake, independent of its clock."""
    if not cap.available:
        return "Wire capture: not run (it needs root for a packet socket on lo)."
    parts = []
    for tool, spans in windows.items():
        shakes = [h for start, end in spans for h in cap.handshakes(start, end)]
        server = median([s - INJECTED["tls"] for s, _ in shakes])
        client = median([c for _, c in shakes])
        parts.append(
            f"{tool}: {len(shakes)} handshakes, the client's Finished left {ms(client, 3)} ms "
            f"after the server's flight (the server's first handshake bytes left "
            f"{ms(server, 3)} ms after accepting, less its hold)"
        )
    lost = ""
    if cap.dropped or cap.over_limit:
        lost = f" The capture lost {cap.dropped + cap.over_limit} segments; some pairs are missing."
    return (
        "Wire capture (kernel stamps on lo, the warm one-address probes with the delays "
        "injected): " + "; ".join(parts) + ". The client's figure is its own handshake work "
        "after the server's last handshake bytes (wake-up, key schedule, certificate "
        "checks, its Finished), measured by neither tool's clock. It includes the "
        "client's wake-up, which the agent's TLS phase leaves out (kernel receive stamps) "
        "and blackbox's keeps, so the phases differ by less than the wire does." + lost
    )


def run(quick: bool) -> Result:
    floor, warm, cold, parallel = (10, 15, 5, 8) if quick else (40, 100, 20, 40)
    with tempfile.TemporaryDirectory(prefix="sts-bench-") as d:
        tmp = Path(d)
        with simulated_targets(tmp / "sim", LAYOUT) as t:
            floors, errors, cap, windows = measure(
                t, tmp, floor=floor, warm=warm, cold=cold, parallel=parallel
            )
    rows, med, excess = _summary(floors, errors)
    result = Result(
        "accuracy",
        "Timing accuracy",
        method(__doc__),
    )
    result.tables.append(
        table(
            (
                "Phase",
                "Injected ms",
                "Tool",
                "Samples",
                "Median |measured − injected| ms",
                "p95 ms",
                "Floor ms (nothing injected)",
                "Median − floor ms",
                "Below injected",
            ),
            rows,
        )
    )
    agent, box = med[AGENT], med[BOX]
    worst_phase = max(PHASES, key=lambda p: agent[p])
    worst = agent[worst_phase]
    over = [p for p in PHASES if agent[p] > GOAL_MS / 1000]
    if not over:
        why = "every phase's median error is within 1 ms"
    else:
        why = "; ".join(
            f"{p}: {ms(agent[p] - excess[AGENT][p], 2)} ms of it is the floor "
            f"(the phase with nothing injected; blackbox's floor is "
            f"{ms(box[p] - excess[BOX][p], 2)} ms), leaving "
            f"{ms(excess[AGENT][p], 2)} ms from the injected wait itself"
            for p in over
        )
    result.goals.append(
        Goal(
            "median error ≤ 1 ms per phase (agent, warm)",
            not over and not math.isnan(worst),
            f"worst median {ms(worst, 3)} ms ({worst_phase})",
            why,
        )
    )
    ci = {
        p: median_diff_ci(
            [abs(x) for x in errors[AGENT].get(p, [])], [abs(x) for x in errors[BOX].get(p, [])]
        )
        for p in PHASES
    }
    worse = [p for p in PHASES if ci[p][0] > 0]
    noise = [p for p in PHASES if agent[p] > box[p] and p not in worse]
    why = (
        "the agent's median error is at or below blackbox's, or within noise, in every phase"
        if not worse
        else "worse beyond noise in "
        + ", ".join(
            f"{p} by {ms(agent[p] - box[p], 2)} ms (95% CI {ms(ci[p][0], 2)}…{ms(ci[p][1], 2)})"
            for p in worse
        )
        + "; the agent ends each phase at the kernel's receive stamp plus its own work on "
        "the bytes, so what remains is work, not its clock: in TLS, OpenSSL's handshake CPU "
        "in the agent against Go's in blackbox (see the wire capture below)"
    )
    if noise:
        why += "; higher but within noise in " + ", ".join(
            f"{p} (95% CI {ms(ci[p][0], 2)}…{ms(ci[p][1], 2)} ms)" for p in noise
        )
    result.goals.append(
        Goal(
            "no worse than blackbox_exporter (median error, per phase)",
            not worse,
            ", ".join(f"{p} {ms(agent[p], 3)} vs {ms(box[p], 3)} ms" for p in PHASES),
            why,
        )
    )
    result.notes.append(_wire_note(cap, windows))
    result.notes.append(
        "The floor is the same phase measured by the same tool with nothing injected: the real "
        "work inside the phase on this machine (the TLS handshake's crypto on both ends, the "
        "simulated servers' own Python code, thread wake-ups). Both tools pay it, so "
        "measured − injected is an upper bound on a tool's own timing error, and "
        "median − floor is what the injected wait itself added."
    )
    result.notes.append(
        "Agent DNS on /probe is the mean of its A and AAAA questions (the histogram's "
        "sum/count for one round); `check --json` lists every question. blackbox's dns prober "
        "asks A only; its figure is the `request` phase. TTFB is blackbox's `processing` phase."
    )
    par = ", ".join(f"{p} {ms(med[AGENT_3][p], 2)} vs {ms(med[BOX_3][p], 2)} ms" for p in PHASES)
    result.notes.append(
        "Three addresses of one name probed at once (the agent's /probe for the regional name, "
        f"three concurrent blackbox /probe calls): median error {par}. Concurrent probes in "
        "one Python process take turns on the interpreter, which shows in the phases."
    )
    result.notes.append(
        "`agent check` is a fresh process per sample: its first probe pays one-off costs "
        "(first TLS handshake, lazy imports) that a running daemon does not."
    )
    return result


def main() -> None:
    main_for("accuracy", __doc__, run)


if __name__ == "__main__":
    main()
