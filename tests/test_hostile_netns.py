"""`/probe` from another host, for real: the agent listens in a network namespace of its own.

A peer on the namespace's link (not loopback) is refused unless the operator
opts in; a client on the instance's own loopback is served.  The namespaces
are the tests' own and are joined to nothing else.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testbed.agent_proc import wait_for, write_config
from testbed.procs import stop_process
from testbed.require import require_root
from tests.support.netns import INSTANCE_IP, agent_binary, fetch_in, instance_env, topology

pytestmark = [pytest.mark.root]
PORT = 9472


@pytest.mark.parametrize("remote_allowed", [False, True], ids=["default", "probe_remote"])
def test_probe_from_another_host_is_refused_unless_enabled(
    tmp_path: Path, remote_allowed: bool
) -> None:
    require_root()
    config = write_config(
        tmp_path / "agent.toml",
        {
            "regions": ["eu-west-1"],
            "credentials": "none",
            "resolvers": ["127.0.0.1:9"],  # nothing answers: no probe leaves the namespace
            "vpc_cidrs": ["10.120.0.0/16"],
        },
        {
            "imds": {"enabled": False},
            "web": {"listen_address": f":{PORT}", "probe_remote": remote_allowed},
        },
    )
    with topology() as topo:
        argv = topo.exec_argv(
            topo.instance, [str(agent_binary()), "serve", "--config", str(config)]
        )
        with open(tmp_path / "agent.log", "w") as log:
            proc = subprocess.Popen(argv, env=instance_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            local = f"http://127.0.0.1:{PORT}"
            wait_for(
                lambda: fetch_in(topo, topo.instance, local + "/-/healthy")[0] == 200, 30, "agent"
            )
            remote = f"http://{INSTANCE_IP}:{PORT}/probe?endpoint=not-watched.example"
            status, body = fetch_in(topo, topo.vpc, remote)
            # Not watched: a 400 shows the request got past the remote check.
            assert status == (400 if remote_allowed else 403), body
            status, _ = fetch_in(topo, topo.vpc, f"http://{INSTANCE_IP}:{PORT}/metrics")
            assert status == 200  # only /probe is closed to other hosts
            status, body = fetch_in(topo, topo.instance, local + "/probe?endpoint=nope.example")
            assert status == 400, body
        finally:
            stop_process(proc)
