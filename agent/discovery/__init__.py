"""Discovery: what the host looks like (regions, identity, resolvers, SDK view, pins, ENI AZs).

`discover()` is the head; each module below answers one of its questions. The head
loads on first use, so the SDK-view child (`python -m agent.discovery.sdk_view`)
does not import DNS and IMDS code it never runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.discovery.facts import Discovery
    from agent.discovery.snapshot import discover

__all__ = ["Discovery", "discover"]


def __getattr__(name: str) -> object:
    if name == "Discovery":
        from agent.discovery.facts import Discovery

        return Discovery
    if name == "discover":
        from agent.discovery.snapshot import discover

        return discover
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
