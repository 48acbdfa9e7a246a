"""Headless Chromium as the tests' browser: the DOM it built, or a screenshot of a page.

A real browser parses the status page the way an engineer's will, so the tests read
what Chromium made of the markup rather than the markup itself.  Each call gets a
fresh profile and every background service is off, so nothing leaves loopback.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from testbed.require import require_binary

_QUIET = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def _run(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    chromium = require_binary("chromium", "chromium-browser")
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    return subprocess.run(
        [chromium, *_QUIET, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def dump_dom(url: str, tmp: Path) -> str:
    """The DOM Chromium built from `url`, serialised."""
    out = _run(url, tmp, "--dump-dom")
    assert out.returncode == 0 and out.stdout, out.stderr[-2000:]
    return out.stdout


def screenshot(url: str, path: Path, tmp: Path, size: tuple[int, int] = (1400, 1600)) -> Path:
    """A PNG of `url` as Chromium draws it at `size` (width, height)."""
    out = _run(url, tmp, f"--window-size={size[0]},{size[1]}", f"--screenshot={path}")
    assert out.returncode == 0 and path.exists() and path.stat().st_size, out.stderr[-2000:]
    return path
