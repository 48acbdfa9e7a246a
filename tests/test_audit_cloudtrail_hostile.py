"""Hostile CloudTrail files: each is an error for that file alone, memory stays flat, the
other files are still read and the exit code keeps its meaning."""

from __future__ import annotations

import json
from pathlib import Path

from agent.audit.cloudtrail_identity import MAX_KEY_CHARS
from agent.audit.cloudtrail_read import SourceError, _local_opener
from testbed import hostile_cloudtrail as hostile
from tests.support.cloudtrail import event, run_cli, run_json, write_doc

# Generous: the bound is about 1 MiB of text per value plus the decoder's copy of it;
# before these limits the same files grew the process by hundreds of MB to GBs.
FLAT_MIB = 48


def _regional(tmp: Path) -> Path:
    return write_doc(tmp / "z-regional.json", [event(host="sts.eu-west-1.amazonaws.com")])


def test_object_without_records_is_not_kept_whole(tmp_path: Path) -> None:
    bad = hostile.write_no_records(tmp_path / "a-no-records.json.gz")
    assert bad.stat().st_size < 1 << 20  # about 270 MB once decompressed
    result = hostile.audit_in_child(bad, _regional(tmp_path))
    assert result["files"] == 1 and result["events"] == 1
    (err,) = result["errors"]
    assert "no Records array and is not an event (and is over 1 MiB)" in err["error"]
    assert result["growth_kib"] / 1024 < FLAT_MIB, result


def test_long_values_are_cut_in_counters(tmp_path: Path) -> None:
    bad = hostile.write_long_values(tmp_path / "long.json.gz")
    result = hostile.audit_in_child(bad)
    assert result["errors"] == [] and result["events"] == 300
    assert result["key_chars"] == MAX_KEY_CHARS
    assert result["growth_kib"] / 1024 < FLAT_MIB, result
    code, doc, _ = run_json(str(bad))
    assert code == 3
    (caller,) = doc["global_callers"]
    assert all(len(ip) == MAX_KEY_CHARS and ip.endswith("…(cut)") for ip in caller["source_ips"])


def test_deep_nesting_is_a_file_error_not_a_crash(tmp_path: Path) -> None:
    hostile.write_deep(tmp_path / "a-deep.json")
    (tmp_path / "b-deep-event.json").write_bytes(b'{"eventSource": ' + b"[" * 50_000)
    _regional(tmp_path)
    code, doc, stderr = run_json(str(tmp_path))
    assert code == 0, stderr  # the regional file decides: no global caller
    assert doc["files_read"] == 1 and doc["sts_events"] == 1
    errors = {Path(e["source"]).name: e["error"] for e in doc["errors"]}
    assert errors == {
        "a-deep.json": "JSON nested too deeply at character 13",
        "b-deep-event.json": "JSON nested too deeply at character 16",
    }
    assert "RecursionError" not in stderr and "Traceback" not in stderr
    result = hostile.audit_in_child(tmp_path / "a-deep.json")
    assert result["growth_kib"] / 1024 < FLAT_MIB, result


def test_fifo_is_skipped_not_waited_on(tmp_path: Path) -> None:
    fifo = hostile.write_fifo(tmp_path / "a-pipe.json")
    _regional(tmp_path)
    code, doc, _ = run_json(str(tmp_path))  # no writer ever opens the FIFO: a read would hang
    assert code == 0 and doc["files_read"] == 1
    assert doc["errors"] == [
        {
            "source": str(fifo),
            "error": "not a regular file (a FIFO); skipped",
            "records_counted": 0,
        }
    ]
    code, doc, _ = run_json(str(fifo))
    assert code == 2 and doc["errors"][0]["error"] == "not a regular file (a FIFO); skipped"
    # A name that passed the listing and was swapped for a FIFO is refused at open.
    try:
        _local_opener(str(fifo))()
    except SourceError as e:
        assert str(e) == "not a regular file (a FIFO); skipped"
    else:
        raise AssertionError("a FIFO was opened as a log file")
    result = hostile.audit_in_child(fifo, timeout=60)
    assert result["growth_kib"] / 1024 < FLAT_MIB, result


def test_control_characters_are_escaped_in_text(tmp_path: Path) -> None:
    f = hostile.write_control(tmp_path / "ctl.json")
    odd = tmp_path / "x\x1b[2Jy.json"
    odd.write_text("not json")
    proc = run_cli(str(f), str(odd))
    assert proc.returncode == 3
    for stream in (proc.stdout, proc.stderr):
        assert "\x1b" not in stream and "\x07" not in stream and "\u202e" not in stream
    assert "user/\\x1b]0;pwned\\x07\\x1b[2J" in proc.stdout
    assert "10.0.0.1\\x1b[31m\\u202e" in proc.stdout
    assert "x\\x1b[2Jy.json" in proc.stderr
    # --json keeps the exact value (JSON escapes it).
    doc = json.loads(run_cli(str(f), "--json").stdout)
    assert doc["global_callers"][0]["caller"].endswith("\x1b]0;pwned\x07\x1b[2J")
    result = hostile.audit_in_child(f)
    assert result["growth_kib"] / 1024 < FLAT_MIB, result
