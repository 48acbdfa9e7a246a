"""sts-agent: watches which network path AWS STS traffic takes from this host."""

__version__ = "0.1.0"
