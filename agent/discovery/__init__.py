"""Discovery: what the host looks like (regions, identity, resolvers, SDK view, pins, ENI AZs).

`discover()` is the head; each module below answers one of its questions.
"""

from agent.discovery.facts import Discovery
from agent.discovery.snapshot import discover

__all__ = ["Discovery", "discover"]
