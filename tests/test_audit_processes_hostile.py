"""Process audit against targets that try to make it read or render what it must not.

Runs as root (the audit's privileged case): a `nobody` process naming a
root-only file, chrooted processes whose config path leaves the chroot by an
absolute or a relative symlink, and a process whose name is not valid text.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.audit.processes import ProcessSdk, audit_processes
from agent.audit.target_files import TargetIds, Unreadable, read_as
from testbed.require import require_root
from tests.support.faults import live_agent

LEAK = "[default]\nregion = eu-west-3\nendpoint_url = https://leaked.example\n"
INSIDE = "[default]\nregion = ap-south-1\nendpoint_url = https://inside.example\n"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (tmp_path's parents are closed to nobody)."""
    path = Path(tempfile.mkdtemp(prefix="sts-agent-audit-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def audited(pid: int) -> ProcessSdk:
    matches = [p for p in audit_processes().processes if p.pid == pid]
    assert matches, f"pid {pid} not audited"
    return matches[0]


def chrooted(root: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A python process that chroots into `root` and sleeps there (no exec needed inside)."""
    code = (
        f"import os, time; os.chroot({str(root)!r}); os.chdir('/'); "
        "print(1, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"1"
    return proc


def test_a_nobody_process_cannot_make_root_read_its_config(
    shared_dir: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    require_root()
    secret = shared_dir / "root-only.conf"
    secret.write_text(LEAK)
    secret.chmod(0o600)
    proc = subprocess.Popen(
        ["sleep", "60"],
        user="nobody",
        env={"AWS_CONFIG_FILE": str(secret), "AWS_DEFAULT_REGION": "us-east-2"},
    )
    children.append(proc)
    p = audited(proc.pid)
    assert p.endpoint_url != "https://leaked.example" and p.region == "us-east-2", p
    assert "config_file_unreadable" in p.reasons
    # The same file made readable to everyone is read: the refusal was about the user.
    secret.chmod(0o644)
    assert audited(proc.pid).endpoint_url == "https://leaked.example"


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_a_symlink_inside_a_chroot_does_not_lead_out_of_it(
    shared_dir: Path, children: list[subprocess.Popen[bytes]], link: str
) -> None:
    require_root()
    host_secret = shared_dir / "host.conf"
    host_secret.write_text(LEAK)
    root = shared_dir / "jail"
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "real.conf").write_text(INSIDE)
    target = str(host_secret) if link == "absolute" else "../" * 12 + str(host_secret).lstrip("/")
    (root / "etc" / "aws.conf").symlink_to(target)
    (root / "etc" / "good.conf").symlink_to("/etc/real.conf")
    escaping = chrooted(
        root, {"AWS_CONFIG_FILE": "/etc/aws.conf", "AWS_DEFAULT_REGION": "us-east-2"}
    )
    children.append(escaping)
    inside = chrooted(root, {"AWS_CONFIG_FILE": "/etc/good.conf"})
    children.append(inside)
    p = audited(escaping.pid)
    assert p.endpoint_url != "https://leaked.example" and p.region == "us-east-2", p
    assert "config_file_missing" in p.reasons  # inside the jail the target does not exist
    # An absolute symlink that stays inside the root resolves as the process sees it.
    good = audited(inside.pid)
    assert (good.region, good.endpoint_url) == ("ap-south-1", "https://inside.example"), good


def test_read_as_refuses_a_directory_the_user_cannot_search(shared_dir: Path) -> None:
    require_root()
    closed = shared_dir / "closed"
    closed.mkdir(mode=0o700)
    (closed / "config").write_text(INSIDE)
    (closed / "config").chmod(0o644)
    nobody = pwd.getpwnam("nobody")
    ids = TargetIds(nobody.pw_uid, frozenset({nobody.pw_gid}))
    with pytest.raises(Unreadable, match="directory"):
        read_as(os.getpid(), str(closed / "config"), ids)
    assert (
        read_as(os.getpid(), str(closed / "config"), TargetIds(0, frozenset()))[0]
        == INSIDE.encode()
    )


def _badly_named(children: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    # PR_SET_NAME: comm becomes b"\xff<b>python", which is not UTF-8.
    code = (
        "import ctypes, time; ctypes.CDLL(None).prctl(15, b'\\xff<b>python', 0, 0, 0); "
        "print(1, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env={b"AWS_DEFAULT_REGION": b"us-east-2\xff"},
        stdout=subprocess.PIPE,
    )
    children.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"1"
    return proc


def test_names_and_values_that_are_not_text_are_replaced(
    children: list[subprocess.Popen[bytes]],
) -> None:
    proc = _badly_named(children)
    p = audited(proc.pid)
    assert p.name == "\ufffd<b>python"
    # No surrogates left anywhere (the region value had a byte that is not UTF-8).
    repr(p).encode("utf-8")
    assert p.region is None or "\ufffd" in p.region or p.error is not None, p


def test_status_page_answers_with_a_badly_named_process_running(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    _badly_named(children)
    with live_agent(tmp_path, audit__processes=True) as live:
        live.wait_rounds(1)
        status, body = live.agent.get("/", timeout=10)
    assert status == 200, body[:300]  # before: 500, UnicodeEncodeError
    assert "python" in body


assert ctypes  # prctl is called through ctypes in the child
