"""Probes: plain functions that take a target and return an immutable result.

They never touch metrics or print; surfaces turn their results into output.
"""
