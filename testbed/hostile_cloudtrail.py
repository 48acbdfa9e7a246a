"""Hostile CloudTrail inputs, and a child process that audits them and reports its peak.

Shared by the tests (which check each is a per-file error with flat memory) and
`bench.cloudtrail_hostile` (which prints the peaks). Every file is small on disk and
written in a stream, so building one costs little memory itself.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from testbed import ROOT

STS_EVENT: dict[str, Any] = {
    "eventVersion": "1.09",
    "eventSource": "sts.amazonaws.com",
    "eventName": "GetCallerIdentity",
    "eventTime": "2025-06-01T00:00:00Z",
    "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/u"},
    "tlsDetails": {"clientProvidedHostHeader": "sts.amazonaws.com"},
    "additionalEventData": {
        "RequestDetails": {"endpointType": "global", "awsServingRegion": "us-east-1"}
    },
}


def write_no_records(path: Path, keys: int = 300, value_chars: int = 900_000) -> Path:
    """A top-level object without `Records`, hundreds of MB once decoded (gzip)."""
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b"{")
        for i in range(keys):
            f.write(b"," if i else b"")
            f.write(b'"k%d": "' % i + b"x" * value_chars + b'"')
        f.write(b"}")
    return path


def write_long_values(path: Path, records: int = 300, chars: int = 1_000_000) -> Path:
    """Records whose sourceIPAddress is a unique ~1 MB string each (gzip)."""
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b'{"Records": [')
        for i in range(records):
            ev = dict(STS_EVENT, sourceIPAddress=f"{i:06d}" + "1" * chars)
            f.write((b"," if i else b"") + json.dumps(ev).encode())
        f.write(b"]}")
    return path


def write_deep(path: Path, depth: int = 200_000) -> Path:
    """A record that is `depth` nested arrays (about depth bytes)."""
    path.write_bytes(b'{"Records": [' + b"[" * depth)
    return path


def write_control(path: Path) -> Path:
    """A global call whose caller and IP carry terminal escape sequences."""
    ev = json.loads(json.dumps(STS_EVENT))
    ev["userIdentity"]["arn"] = "arn:aws:iam::123456789012:user/\x1b]0;pwned\x07\x1b[2J"
    ev["sourceIPAddress"] = "10.0.0.1\x1b[31m\u202e"
    ev["eventTime"] = "2025-06-01T00:00:00Z\x1b[5m"
    ev["userIdentity"]["type"] = "IAMUser\x07"
    path.write_text(json.dumps({"Records": [ev]}))
    return path


def write_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def write_plain(path: Path, records: int = 300) -> Path:
    """An ordinary file of the same record count, the baseline for the peaks."""
    path.write_text(json.dumps({"Records": [STS_EVENT] * records}))
    return path


_CHILD = """
import json, sys
def kib(field):
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'):
            return int(line.split()[1])
from agent.audit.cloudtrail import summarise
import botocore.exceptions, gzip, zlib
before = kib('VmRSS')
s = summarise(sys.argv[1:])
print(json.dumps({'growth_kib': kib('VmHWM') - before, 'peak_kib': kib('VmHWM'),
                  'events': s.events, 'files': s.files_read, 'errors': s.errors,
                  'key_chars': max([len(k) for k in s.by_source_ip.counts] or [0])}))
"""


def audit_in_child(*paths: Path, timeout: float = 120) -> dict[str, Any]:
    """Audit `paths` in a fresh interpreter; VmHWM is that child's own peak RSS.

    (ru_maxrss would carry the parent's peak over fork+exec, so /proc is read instead.)
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, paths)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"audit child failed: {proc.stderr.strip()[-500:]}")
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc
