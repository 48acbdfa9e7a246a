"""Benchmarks of sts-agent side by side with blackbox_exporter (scripts, not tests)."""
