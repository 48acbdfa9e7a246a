"""Helpers the tests and the benchmarks share: the agent as a process, free ports, a real
Prometheus, synthetic reports. Not shipped: it drives the agent from outside."""

from pathlib import Path

#: The checkout: the agent runs from here so `python -m agent` finds this tree.
ROOT = Path(__file__).resolve().parent.parent
